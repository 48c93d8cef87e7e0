"""Cross-lingual figures as pure functions over embedding matrices: bitext retrieval accuracy
(sentence-transformers' ``TranslationEvaluator``, MTEB's Tatoeba task) and teacher-student MSE
(``MSEEvaluator``).

Row i of the source matrix translates row i of the target matrix. Retrieval ranks by cosine
similarity; ties go to the lowest index, as ``numpy.argmax`` breaks them. A retrieved row is right
when it is the gold row (MTEB) or, given the texts, when its text equals the gold row's text
(``TranslationEvaluator``, which forgives picking a duplicate of the right sentence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distilmarco.errors import InputError


@dataclass(frozen=True)
class BitextScores:
    """Top-1 retrieval accuracy both ways, and MTEB's weighted precision / recall / F1 of the
    source -> target direction (MTEB's Tatoeba queries with the non-English side)."""

    pairs: int
    src2trg: float  # for each source row, is its nearest target row its translation?
    trg2src: float
    precision: float
    recall: float
    f1: float

    @property
    def mean(self) -> float:
        """The mean of both directions: ``TranslationEvaluator``'s main score."""
        return (self.src2trg + self.trg2src) / 2


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise InputError(f"{what}: embeddings must be 2-D matrices, got {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise InputError(f"{what}: the two sides differ in shape, {a.shape} vs {b.shape}")
    if a.shape[0] == 0:
        raise InputError(f"{what}: no pairs to evaluate")


def nearest(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) -> (N,) index of each query's most cosine-similar corpus row."""
    return np.argmax(_unit(queries) @ _unit(corpus).T, axis=1)


def _correct(found: np.ndarray, texts: Sequence[str] | None) -> np.ndarray:
    gold = np.arange(len(found))
    hit = found == gold
    if texts is not None:
        if len(texts) != len(found):
            raise InputError(f"{len(texts)} texts for {len(found)} embeddings")
        hit |= np.fromiter((texts[j] == texts[i] for i, j in enumerate(found)), bool, len(found))
    return hit


def bitext_scores(
    source: np.ndarray,
    target: np.ndarray,
    source_texts: Sequence[str] | None = None,
    target_texts: Sequence[str] | None = None,
) -> BitextScores:
    """Bitext retrieval of ``source`` (N, D) against ``target`` (N, D), row i aligned with row i.
    With the texts, a retrieved duplicate of the gold sentence counts as right (accuracy only)."""
    _check_pair(source, target, "bitext retrieval")
    n = source.shape[0]
    sims = _unit(source) @ _unit(target).T  # (N, N)
    forward = np.argmax(sims, axis=1)
    backward = np.argmax(sims, axis=0)
    gold = np.arange(n)
    precision, recall, f1 = _weighted_prf(gold, forward)
    return BitextScores(
        pairs=n,
        src2trg=float(np.mean(_correct(forward, target_texts))),
        trg2src=float(np.mean(_correct(backward, source_texts))),
        precision=precision,
        recall=recall,
        f1=f1,
    )


def _weighted_prf(gold: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 per gold class, averaged with the classes' support as weights
    (scikit-learn's ``average='weighted'``, which MTEB's bitext mining reports). Every gold
    label occurs once here, so each class weighs 1/N."""
    n = len(gold)
    hit = predicted == gold
    times_predicted = np.bincount(predicted, minlength=n)[gold]  # how often class c was chosen
    precision = np.where(hit, 1.0 / np.maximum(times_predicted, 1), 0.0)
    recall = hit.astype(np.float64)
    f1 = np.where(hit, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def mse_x100(teacher: np.ndarray, student: np.ndarray) -> float:
    """Mean squared difference of every coordinate, times 100 (``MSEEvaluator``'s figure;
    it reports the negative as its score so that higher is better)."""
    _check_pair(teacher, student, "teacher-student MSE")
    diff = np.asarray(teacher, dtype=np.float64) - np.asarray(student, dtype=np.float64)
    return float(np.mean(diff * diff) * 100)
