"""Classification evaluation: embed labelled texts, then run the MTEB protocol of
:func:`distilmarco.apps.classify.mteb_protocol` (10 experiments, 8 training rows per label,
``LogisticRegression(max_iter=100)``, mean test accuracy) or fit on the whole train set once.

Data: a folder with ``train.csv`` and ``test.csv`` (e.g. Banking77), or two files; CSV/TSV with a
header, or JSONL. The text column is ``text``; the label column is the first of ``label``,
``category``, ``intent``, ``class`` present, unless named.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distilmarco.errors import FormatError, InputError
from distilmarco.evaluation.ir import Throughput, embed
from distilmarco.textio import jsonl_objects

if TYPE_CHECKING:
    from distilmarco.apps.classify import ProtocolReport
    from distilmarco.encoder import Encoder

LABEL_COLUMNS = ("label", "category", "intent", "class")


@dataclass(frozen=True)
class Labelled:
    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class ClassifyResult:
    report: ProtocolReport
    throughput: Throughput

    @property
    def metrics(self) -> dict[str, float]:
        return {"accuracy": self.report.accuracy, "f1_macro": self.report.f1_macro}


def read_labelled(path: Path, *, text: str = "text", label: str | None = None) -> Labelled:
    """Texts and their labels from CSV/TSV (header) or JSONL; errors name the file and line."""
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    if path.suffix.lower() == ".jsonl":
        return _read_jsonl(path, text, label)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    texts: list[str] = []
    labels: list[str] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = list(reader.fieldnames or [])
        label_col = _label_column(columns, label, path)
        if text not in columns:
            raise InputError(f"{path} has no column {text!r}; columns: {columns}")
        for row in reader:
            t, y = row.get(text), row.get(label_col)
            if t is None or y is None or not y.strip():
                raise FormatError(f"{path}:{reader.line_num}: missing text or label")
            texts.append(t)
            labels.append(y.strip())
    return Labelled(texts, labels)


def _read_jsonl(path: Path, text: str, label: str | None) -> Labelled:
    texts: list[str] = []
    labels: list[str] = []
    for n, row in jsonl_objects(path):
        key = _label_column(list(row), label, path, n)
        if not isinstance(row.get(text), str) or row.get(key) is None:
            raise FormatError(f"{path}:{n}: needs a string {text!r} and a {key!r}")
        texts.append(row[text])
        labels.append(str(row[key]))
    return Labelled(texts, labels)


def _label_column(columns: list[str], label: str | None, path: Path, n: int | None = None) -> str:
    where = f"{path}:{n}" if n else str(path)
    if label is not None:
        if label not in columns:
            raise InputError(f"{where} has no label column {label!r}; columns: {columns}")
        return label
    for name in LABEL_COLUMNS:
        if name in columns:
            return name
    raise InputError(
        f"{where} has none of the label columns {', '.join(LABEL_COLUMNS)}; columns: {columns} "
        "(use --label-column)"
    )


def train_test_paths(data: Path, train: Path | None, test: Path | None) -> tuple[Path, Path]:
    """``data/train.csv`` and ``data/test.csv`` (or .tsv/.jsonl), unless given explicitly."""
    if train is not None and test is not None:
        return train, test
    for suffix in (".csv", ".tsv", ".jsonl"):
        a, b = data / f"train{suffix}", data / f"test{suffix}"
        if a.is_file() and b.is_file():
            return train or a, test or b
    raise InputError(f"{data} holds no train/test pair (train.csv + test.csv, .tsv or .jsonl)")


def evaluate_classification(
    encoder: Encoder,
    train: Labelled,
    test: Labelled,
    *,
    experiments: int = 10,
    samples_per_label: int | None = 8,
    max_iter: int = 100,
    seed: int = 42,
    batch_tokens: int | None = None,
) -> ClassifyResult:
    """Embed train and test texts once and run the MTEB protocol on the vectors."""
    from distilmarco.apps.classify import mteb_protocol

    if not train.texts or not test.texts:
        raise InputError("the train and the test set must both hold rows")
    unique = list(dict.fromkeys(train.texts + test.texts))
    vectors, spent = embed(encoder, unique, batch_tokens=batch_tokens)
    row = {t: i for i, t in enumerate(unique)}
    report = mteb_protocol(
        vectors[[row[t] for t in train.texts]],
        train.labels,
        vectors[[row[t] for t in test.texts]],
        test.labels,
        n_experiments=experiments,
        samples_per_label=samples_per_label,
        seed=seed,
        max_iter=max_iter,
    )
    return ClassifyResult(report, spent)
