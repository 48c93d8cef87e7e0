"""Zero-shot classification: each text gets the label whose description it is most similar to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distilmarco.apps.similarity import as_matrix, check_same_dim
from distilmarco.errors import InputError
from distilmarco.vectors import normalize_rows


@dataclass(frozen=True, eq=False)
class ZeroShot:
    """Zero-shot predictions: ``labels[i]`` is the best label for row i; ``scores`` holds the
    cosine similarity of each row to each label description, shape (N, len(label_names))."""

    labels: tuple[str, ...]
    scores: np.ndarray
    label_names: tuple[str, ...]

    def probabilities(self, temperature: float = 0.05) -> np.ndarray:
        """Softmax over labels of cosine / temperature."""
        if temperature <= 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        z = self.scores / temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def zero_shot(
    vectors: np.ndarray,
    label_vectors: np.ndarray,
    label_names: Sequence[str],
    *,
    threshold: float | None = None,
    none_label: str = "none",
) -> ZeroShot:
    """Assign each vector the label whose description embedding is most similar (cosine); with a
    ``threshold``, a row whose best similarity is below it gets ``none_label`` ("none of these")."""
    x = as_matrix(vectors)
    lv = as_matrix(label_vectors, "label_vectors")
    names = tuple(label_names)
    if len(names) != lv.shape[0]:
        raise InputError(f"{len(names)} label names for {lv.shape[0]} label vectors")
    if len(names) < 2:
        raise InputError("zero-shot classification needs at least two labels")
    if len(set(names)) != len(names):
        raise InputError(
            f"label names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    check_same_dim(x, lv, ("vectors", "label_vectors"))
    if threshold is not None and none_label in names:
        raise InputError(f"{none_label!r} is a label name; choose another name for none of these")
    scores = normalize_rows(x) @ normalize_rows(lv).T
    best = scores.argmax(axis=1)
    chosen = [
        names[i] if threshold is None or scores[row, i] >= threshold else none_label
        for row, i in enumerate(best.tolist())
    ]
    return ZeroShot(labels=tuple(chosen), scores=scores, label_names=names)
