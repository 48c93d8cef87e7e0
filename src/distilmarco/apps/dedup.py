"""Duplicate and paraphrase mining: the pairs of rows whose similarity reaches a threshold, and
the duplicate sets they form.

Memory stays bounded whatever N is: the exact path keeps only each row's ``top_k`` neighbours
while it scans the score matrix block by block (see :func:`similarity.top_k`); the ANN path builds
an HNSW graph (``usearch``, the ``ann`` extra) and asks it for the same neighbours. Each row
contributes at most ``top_k`` pairs, so a row with more than ``top_k`` near-duplicates is still
grouped with all of them through the duplicate sets (connected components).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from distilmarco.apps.similarity import (
    DEFAULT_BLOCK_ELEMENTS,
    as_matrix,
    check_metric,
    top_k,
)
from distilmarco.errors import InputError, MissingExtraError

log = logging.getLogger(__name__)

Method = Literal["auto", "exact", "ann"]
METHODS = ("auto", "exact", "ann")
# Above this many rows ``method="auto"`` uses the ANN graph when usearch is installed: exact time
# grows as N^2, and below this building the graph costs more (benchmarks/results/engine-notes.md).
ANN_THRESHOLD = 100_000


@dataclass(frozen=True, order=True)
class Pair:
    """Rows ``i < j`` with similarity ``score``."""

    i: int
    j: int
    score: float


def mine_pairs(
    vectors: np.ndarray,
    *,
    threshold: float | None = None,
    top_k_per_item: int = 100,
    metric: str = "cosine",
    method: str = "auto",
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    seed: int = 0,
) -> list[Pair]:
    """Pairs of distinct rows, best first, among each row's ``top_k_per_item`` nearest rows.

    ``threshold`` keeps only pairs scoring at least that much (None keeps every candidate, which
    is how one asks for "the top pairs"). Order: score descending, then ``(i, j)`` ascending.
    """
    m = check_metric(metric)
    check_method(method)
    if top_k_per_item < 1:
        raise InputError(f"top_k_per_item must be at least 1, got {top_k_per_item}")
    x = as_matrix(vectors)
    n = x.shape[0]
    if n < 2:
        raise InputError(f"duplicate mining needs at least two items, got {n}")
    k = min(top_k_per_item, n - 1)
    use_ann = method == "ann" or (method == "auto" and n > ANN_THRESHOLD and _has_usearch())
    if use_ann:
        idx, scores = _ann_neighbours(x, k, m, seed)
    else:
        hits = top_k(x, x, k, m, block_elements=block_elements, exclude_self=True)
        idx, scores = hits.indices, hits.scores
    return _pairs_from_neighbours(idx, scores, threshold)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _pairs_from_neighbours(
    idx: np.ndarray, scores: np.ndarray, threshold: float | None
) -> list[Pair]:
    n, k = idx.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols, s = idx.reshape(-1), scores.reshape(-1)
    keep = (cols >= 0) & (cols != rows) & np.isfinite(s)
    if threshold is not None:
        keep &= s >= threshold
    lo, hi, s = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep], s[keep]
    # Each pair can be found from both ends: keep one copy (the higher score if they differ).
    order = np.lexsort((-s, hi, lo))
    lo, hi, s = lo[order], hi[order], s[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    lo, hi, s = lo[first], hi[first], s[first]
    final = np.lexsort((hi, lo, -s))
    return [Pair(int(lo[t]), int(hi[t]), float(s[t])) for t in final]


def _has_usearch() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def _ann_neighbours(x: np.ndarray, k: int, metric: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` approximate nearest other rows, as (indices, scores) like ``top_k``."""
    try:
        from usearch.index import Index as HnswIndex
    except ImportError as exc:
        raise MissingExtraError("usearch", "ann", "approximate duplicate mining") from exc
    kind = {"cosine": "cos", "dot": "ip", "euclidean": "l2sq"}[metric]
    graph = HnswIndex(
        ndim=x.shape[1],
        metric=kind,
        dtype="f32",
        expansion_add=128,
        expansion_search=max(64, 2 * k),
    )
    graph.add(np.arange(x.shape[0], dtype=np.uint64), x, log=False)
    found = graph.search(x, k + 1, log=False)
    keys = found.keys.astype(np.int64)
    dist = found.distances.astype(np.float32)
    # usearch's "cos" and "ip" distances are 1 - similarity; "l2sq" is the squared distance.
    scores = 1.0 - dist if metric in ("cosine", "dot") else -np.sqrt(np.maximum(dist, 0.0))
    counts = np.asarray(found.counts, dtype=np.int64)  # type: ignore[union-attr]
    invalid = np.arange(keys.shape[1])[None, :] >= counts[:, None]
    keys[invalid] = -1
    scores[invalid] = -np.inf
    log.info("ANN neighbours: %d rows, k=%d (seed %d)", x.shape[0], k, seed)
    return keys, scores.astype(np.float32)


def duplicate_groups(pairs: list[Pair], n: int) -> list[list[int]]:
    """Connected components of the pair graph, as sorted lists of at least two rows; groups are
    ordered by their first row."""
    if n < 0:
        raise InputError(f"n must be non-negative, got {n}")
    parent = np.arange(n)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = int(parent[root])
        while parent[a] != root:  # path compression
            parent[a], a = root, int(parent[a])
        return root

    for p in pairs:
        if not (0 <= p.i < n and 0 <= p.j < n):
            raise InputError(f"pair ({p.i}, {p.j}) is out of range for {n} items")
        ri, rj = find(p.i), find(p.j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = {}
    for a in range(n):
        members.setdefault(find(a), []).append(a)
    return sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])


def keep_mask(groups: list[list[int]], n: int) -> np.ndarray:
    """Boolean (n,) mask keeping every row except the later members of each duplicate group."""
    mask = np.ones(n, dtype=bool)
    for g in groups:
        mask[g[1:]] = False
    return mask
