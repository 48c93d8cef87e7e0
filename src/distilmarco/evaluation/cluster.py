"""Clustering evaluation: k-means with as many clusters as gold labels, scored by V-measure (the
MTEB clustering metric), averaged over several seeds. Uses :func:`distilmarco.apps.cluster.kmeans`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distilmarco.errors import InputError
from distilmarco.evaluation.classify import Labelled
from distilmarco.evaluation.ir import Throughput, embed

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder


@dataclass(frozen=True)
class ClusterResult:
    v_measure: float  # mean over runs
    v_measure_std: float
    runs: tuple[float, ...]
    clusters: int
    items: int
    throughput: Throughput

    @property
    def metrics(self) -> dict[str, float]:
        return {"v_measure": self.v_measure}


def evaluate_clustering(
    encoder: Encoder,
    data: Labelled,
    *,
    runs: int = 5,
    seed: int = 42,
    batch_tokens: int | None = None,
) -> ClusterResult:
    """Cluster the texts into as many groups as there are labels; V-measure against the labels."""
    from sklearn.metrics import v_measure_score

    from distilmarco.apps.cluster import kmeans

    n_labels = len(set(data.labels))
    if n_labels < 2:
        raise InputError(f"clustering evaluation needs at least two labels, got {n_labels}")
    if runs < 1:
        raise InputError(f"runs must be >= 1, got {runs}")
    vectors, spent = embed(encoder, data.texts, batch_tokens=batch_tokens)
    scores = tuple(
        float(
            v_measure_score(data.labels, kmeans(vectors, n_labels, seed=seed + r, n_init=1).labels)
        )
        for r in range(runs)
    )
    return ClusterResult(
        float(np.mean(scores)), float(np.std(scores)), scores, n_labels, len(data.texts), spent
    )
