"""Classification on embeddings: few-shot (logistic regression, k-NN) and the MTEB classification
protocol; zero-shot from label descriptions is in ``zero_shot.py`` (also importable from here).

A fitted :class:`Classifier` is a frozen bundle of arrays. It predicts with numpy alone and is saved
as JSON (labels, settings) plus safetensors (coefficients or reference vectors): no pickle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from distilmarco.apps._extras import need
from distilmarco.apps.similarity import as_matrix, check_same_dim, top_k
from distilmarco.apps.zero_shot import ZeroShot as ZeroShot
from distilmarco.apps.zero_shot import zero_shot as zero_shot
from distilmarco.errors import InputError, ModelFormatError
from distilmarco.vectors import normalize_rows

log = logging.getLogger(__name__)

Method = Literal["logreg", "knn"]
METHODS: tuple[str, ...] = get_args(Method)
Label = str | int
FORMAT = "distilmarco-classifier"
FORMAT_VERSION = 1
CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "weights.safetensors"


def _labels(labels: Sequence[Label], n: int, name: str = "labels") -> list[Label]:
    out = list(labels)
    if len(out) != n:
        raise InputError(f"{name} has {len(out)} entries but there are {n} vectors")
    for i, lab in enumerate(out):
        if isinstance(lab, bool) or not isinstance(lab, str | int | np.integer | np.str_):
            raise InputError(f"{name}[{i}] = {lab!r}: labels must be strings or integers")
    return [lab.item() if isinstance(lab, np.generic) else lab for lab in out]


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class Classifier:
    """A fitted embedding classifier. Build one with :func:`fit_classifier` or :meth:`load`."""

    method: Method
    classes: tuple[Label, ...]
    dimension: int
    # logreg: coef (C, D) and intercept (C,) as sklearn fits them (C = 1 for two classes).
    # knn: reference vectors (N, D), unit length, and their class indices (N,).
    arrays: dict[str, np.ndarray] = field(repr=False)
    k: int = 5
    metadata: dict[str, str] = field(default_factory=dict)

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (N, len(classes)), columns in ``classes`` order."""
        x = as_matrix(vectors)
        if x.shape[1] != self.dimension:
            raise InputError(
                f"dimension mismatch: the classifier was fitted on {self.dimension}-d vectors, "
                f"got {x.shape[1]}-d"
            )
        if self.method == "logreg":
            logits = x.astype(np.float64) @ self.arrays["coef"].T + self.arrays["intercept"]
            if logits.shape[1] == 1:  # binary: sklearn keeps one row for the second class
                p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
                return np.stack([1.0 - p1, p1], axis=1)
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            return e / e.sum(axis=1, keepdims=True)
        ref, ref_y = self.arrays["vectors"], self.arrays["labels"]
        hits = top_k(x, ref, self.k, "cosine")
        votes = np.zeros((x.shape[0], len(self.classes)))
        rows = np.repeat(np.arange(x.shape[0]), hits.indices.shape[1])
        valid = hits.indices.reshape(-1) >= 0
        np.add.at(votes, (rows[valid], ref_y[hits.indices.reshape(-1)[valid]]), 1.0)
        return votes / votes.sum(axis=1, keepdims=True)

    def predict(self, vectors: np.ndarray) -> list[Label]:
        """The most probable class per row (ties go to the class listed first)."""
        return [self.classes[i] for i in self.predict_proba(vectors).argmax(axis=1)]

    def save(self, folder: Path) -> None:
        """Write ``classifier.json`` and ``weights.safetensors`` into ``folder``."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": self.method,
            "classes": list(self.classes),
            "dimension": self.dimension,
            "k": self.k,
            "metadata": self.metadata,
        }
        save_file(
            {n: np.ascontiguousarray(a) for n, a in self.arrays.items()}, folder / WEIGHTS_FILE
        )
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Classifier:
        """Read a classifier written by :meth:`save`; refuses anything else."""
        from safetensors.numpy import load_file

        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise ModelFormatError(
                f"{folder} is not a saved classifier: expected {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{cfg_path} is not valid JSON: {exc.msg}") from exc
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            raise ModelFormatError(f"{cfg_path} is not a {FORMAT} file")
        if cfg.get("version") != FORMAT_VERSION:
            raise ModelFormatError(
                f"{cfg_path} has version {cfg.get('version')!r}; this release reads {FORMAT_VERSION}"
            )
        method = cfg.get("method")
        if method not in METHODS:
            raise ModelFormatError(f"{cfg_path}: unknown method {method!r}")
        arrays = load_file(w_path)
        need = ("coef", "intercept") if method == "logreg" else ("vectors", "labels")
        missing = [n for n in need if n not in arrays]
        if missing:
            raise ModelFormatError(f"{w_path} lacks the arrays {missing}")
        return cls(
            method=method,
            classes=tuple(cfg["classes"]),
            dimension=int(cfg["dimension"]),
            arrays=arrays,
            k=int(cfg.get("k", 5)),
            metadata=dict(cfg.get("metadata", {})),
        )


def fit_classifier(
    vectors: np.ndarray,
    labels: Sequence[Label],
    *,
    method: str = "logreg",
    k: int = 5,
    max_iter: int = 1000,
    c: float = 1.0,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
) -> Classifier:
    """Fit a classifier on labelled vectors (at least two classes)."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    x = as_matrix(vectors)
    y = _labels(labels, x.shape[0])
    classes = _sorted_classes(y)
    if len(classes) < 2:
        raise InputError(f"need at least two classes to classify, got only {classes!r}")
    index = {c_: i for i, c_ in enumerate(classes)}
    y_idx = np.array([index[v] for v in y], dtype=np.int64)
    if method == "knn":
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        arrays = {"vectors": normalize_rows(x), "labels": y_idx}
    else:
        need("sklearn", "apps", "logistic-regression classifiers")
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=max_iter, C=c, random_state=seed)
        clf.fit(x, y_idx)
        arrays = {
            "coef": clf.coef_.astype(np.float64),
            "intercept": clf.intercept_.astype(np.float64),
        }
    return Classifier(
        method=method,  # type: ignore[arg-type]
        classes=tuple(classes),
        dimension=x.shape[1],
        arrays=arrays,
        k=k,
        metadata=dict(metadata or {}),
    )


@dataclass(frozen=True)
class Validation:
    """Accuracy on rows held out of fitting (a stratified share of each label)."""

    accuracy: float
    held_out: int
    fitted: int


def holdout_split(
    labels: Sequence[Label], fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows): ``fraction`` of each label's rows, rounded, held out, but
    never a label's last row (so every label is still fitted)."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    y = list(labels)
    held: list[int] = []
    for label in _sorted_classes(y):
        rows = np.flatnonzero(np.array([v == label for v in y]))
        rng.shuffle(rows)
        held.extend(rows[: min(round(fraction * len(rows)), len(rows) - 1)].tolist())
    held_rows = np.array(sorted(held), dtype=np.int64)
    fit_rows = np.setdiff1d(np.arange(len(y)), held_rows)
    return fit_rows, held_rows


def validate(
    vectors: np.ndarray,
    labels: Sequence[Label],
    *,
    fraction: float = 0.2,
    seed: int = 0,
    method: str = "logreg",
    k: int = 5,
) -> Validation | None:
    """Fit on all but a held-out share and score on it; None when nothing can be held out."""
    x = as_matrix(vectors)
    y = _labels(labels, x.shape[0])
    fit_rows, held_rows = holdout_split(y, fraction, seed)
    if not len(held_rows):
        return None
    clf = fit_classifier(x[fit_rows], [y[i] for i in fit_rows], method=method, k=k, seed=seed)
    predicted = clf.predict(x[held_rows])
    right = sum(p == y[i] for p, i in zip(predicted, held_rows.tolist(), strict=True))
    return Validation(right / len(held_rows), len(held_rows), len(fit_rows))


def _sorted_classes(y: Sequence[Label]) -> list[Label]:
    kinds = {type(v) for v in y}
    if len(kinds) > 1:
        raise InputError("labels mix strings and integers; use one kind")
    return sorted(set(y))


# --- the MTEB protocol -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolReport:
    """Result of :func:`mteb_protocol`: mean and per-experiment test scores."""

    method: str
    accuracy: float  # mean over experiments
    accuracy_std: float
    f1_macro: float  # mean over experiments
    accuracies: tuple[float, ...]
    f1s: tuple[float, ...]
    n_experiments: int
    samples_per_label: int | None  # None: the whole train set
    train_size: int  # rows fitted per experiment (the last one)
    test_size: int
    n_labels: int
    seed: int


def undersample(labels: Sequence[Label], samples_per_label: int, order: np.ndarray) -> np.ndarray:
    """Indices of the first ``samples_per_label`` rows of each label, walking rows in ``order``."""
    counts: dict[Label, int] = {}
    keep = []
    for i in order:
        lab = labels[i]
        c_ = counts.get(lab, 0)
        if c_ < samples_per_label:
            keep.append(i)
            counts[lab] = c_ + 1
    return np.asarray(keep, dtype=np.int64)


def mteb_protocol(
    train_x: np.ndarray,
    train_y: Sequence[Label],
    test_x: np.ndarray,
    test_y: Sequence[Label],
    *,
    n_experiments: int = 10,
    samples_per_label: int | None = 8,
    seed: int = 42,
    max_iter: int = 100,
    method: str = "logreg",
    k: int = 3,
) -> ProtocolReport:
    """MTEB's classification protocol on precomputed embeddings.

    Each of ``n_experiments`` runs reshuffles one index permutation (numpy's Mersenne Twister
    seeded with ``seed``, carried over from run to run, as MTEB does), keeps the first
    ``samples_per_label`` training rows of each label in that order, fits
    ``LogisticRegression(max_iter=max_iter, random_state=seed)`` (or k-NN with cosine, ``k``
    neighbours) and scores accuracy and macro-F1 on the whole test set; the report holds the mean.
    ``samples_per_label=None`` fits on the whole train set once instead.
    """
    need("sklearn", "apps", "the MTEB classification protocol")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.neighbors import KNeighborsClassifier

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    xtr, xte = as_matrix(train_x, "train_x"), as_matrix(test_x, "test_x")
    check_same_dim(xtr, xte, ("train_x", "test_x"))
    ytr, yte = _labels(train_y, xtr.shape[0], "train_y"), _labels(test_y, xte.shape[0], "test_y")
    classes = _sorted_classes(ytr)
    if len(classes) < 2:
        raise InputError(f"need at least two classes in train_y, got {classes!r}")
    unknown = sorted(set(yte) - set(classes), key=str)
    if unknown:
        raise InputError(f"test_y has labels absent from train_y: {unknown[:10]}")
    if n_experiments < 1:
        raise InputError(f"n_experiments must be at least 1, got {n_experiments}")
    if samples_per_label is not None and samples_per_label < 1:
        raise InputError(f"samples_per_label must be at least 1 (or None), got {samples_per_label}")
    ytr_a, yte_a = np.asarray(ytr), np.asarray(yte)

    rng = np.random.RandomState(seed)
    order = np.arange(xtr.shape[0])
    accs: list[float] = []
    f1s: list[float] = []
    runs = 1 if samples_per_label is None else n_experiments
    rows = order
    for run in range(runs):
        if samples_per_label is not None:
            rng.shuffle(order)
            rows = undersample(ytr, samples_per_label, order)
        clf = (
            LogisticRegression(max_iter=max_iter, random_state=seed)
            if method == "logreg"
            else KNeighborsClassifier(n_neighbors=k, metric="cosine")
        )
        clf.fit(xtr[rows], ytr_a[rows])
        pred = clf.predict(xte)
        accs.append(float(accuracy_score(yte_a, pred)))
        f1s.append(float(f1_score(yte_a, pred, average="macro")))
        log.info("experiment %d/%d: accuracy %.4f", run + 1, runs, accs[-1])
    return ProtocolReport(
        method=method,
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        f1_macro=float(np.mean(f1s)),
        accuracies=tuple(accs),
        f1s=tuple(f1s),
        n_experiments=runs,
        samples_per_label=samples_per_label,
        train_size=len(rows),
        test_size=xte.shape[0],
        n_labels=len(classes),
        seed=seed,
    )
