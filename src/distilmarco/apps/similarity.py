"""Similarity between vectors: row-wise pairs, full matrices, and chunked top-k.

Scores come from ``distilmarco.vectors``: higher always means more similar (``euclidean`` is
the negated distance). The apps offer ``cosine``, ``dot`` and ``euclidean``.

``iter_blocks`` and ``top_k`` never hold more than ``block_elements`` scores at once, so N x M
comparisons work when the N x M matrix would not fit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from distilmarco.errors import InputError
from distilmarco.vectors import Similarity, pair_scores, prepare, score_matrix

METRICS: tuple[Similarity, ...] = ("cosine", "dot", "euclidean")
# Scores held at once by the chunked functions: 4M float32 = 16 MiB (top_k also holds a
# partition index of the same shape, 32 MiB more).
DEFAULT_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True, eq=False)
class TopK:
    """The ``k`` best corpus rows for each query: ``indices[i, r]`` has score ``scores[i, r]``,
    best first. Rows with fewer than ``k`` candidates are padded with index -1 and score -inf."""

    indices: np.ndarray  # (N, k) int64
    scores: np.ndarray  # (N, k) float32


def check_metric(metric: str) -> Similarity:
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def as_matrix(x: np.ndarray | list[list[float]], name: str = "vectors") -> np.ndarray:
    """``x`` as a 2-D float32 array; a single vector becomes one row. Rejects empty and NaN input."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (rows x dimensions), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty: at least one vector is needed")
    if arr.shape[1] == 0:
        raise InputError(f"{name} has zero dimensions")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def check_same_dim(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("a", "b")) -> None:
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"dimension mismatch: {names[0]} has {a.shape[1]}-d vectors, {names[1]} has {b.shape[1]}-d"
        )


def pairwise(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Score of row i of ``a`` with row i of ``b``: shape (N,)."""
    m = check_metric(metric)
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    check_same_dim(a, b)
    if a.shape[0] != b.shape[0]:
        raise InputError(f"pairwise needs as many rows in a ({a.shape[0]}) as in b ({b.shape[0]})")
    return pair_scores(prepare(a, m), prepare(b, m), m).astype(np.float32)


def matrix(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """The full (N, M) score matrix. Use ``iter_blocks`` or ``top_k`` when N x M is large."""
    m = check_metric(metric)
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    check_same_dim(a, b)
    return score_matrix(prepare(a, m), prepare(b, m), m)


def block_rows(n_cols: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> int:
    """How many query rows fit in one block of scores against ``n_cols`` corpus rows."""
    if block_elements < 1:
        raise InputError(f"block_elements must be positive, got {block_elements}")
    return max(1, block_elements // max(n_cols, 1))


def iter_blocks(
    a: np.ndarray,
    b: np.ndarray,
    metric: str = "cosine",
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_start, scores)`` where ``scores`` is rows ``row_start:`` of the N x M matrix.

    Each block holds at most ``max(block_elements, M)`` scores.
    """
    m = check_metric(metric)
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    check_same_dim(a, b)
    pb = prepare(b, m)
    step = block_rows(b.shape[0], block_elements)
    for start in range(0, a.shape[0], step):
        yield start, score_matrix(prepare(a[start : start + step], m), pb, m)


def top_k(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    metric: str = "cosine",
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    exclude_self: bool = False,
) -> TopK:
    """The ``k`` highest-scoring corpus rows per query, computed block by block over both sides.

    Ties are broken by the lower corpus index. ``exclude_self`` (queries and corpus are the same
    rows) drops each row's match with itself.
    """
    m = check_metric(metric)
    q, c = as_matrix(queries, "queries"), as_matrix(corpus, "corpus")
    check_same_dim(q, c, ("queries", "corpus"))
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if exclude_self and q.shape[0] != c.shape[0]:
        raise InputError("exclude_self needs the queries and the corpus to be the same rows")
    n, total = q.shape[0], c.shape[0]
    k_eff = min(k, total)
    # Split the corpus into column chunks and the queries into row chunks: each block is bounded.
    col_step = max(k_eff, min(total, block_elements // 16))
    row_step = block_rows(min(col_step, total), block_elements)
    pc = prepare(c, m)
    best_i = np.full((n, k_eff), -1, dtype=np.int64)
    best_s = np.full((n, k_eff), -np.inf, dtype=np.float32)
    for r0 in range(0, n, row_step):
        pq = prepare(q[r0 : r0 + row_step], m)
        rows = pq.shape[0]
        run_i, run_s = best_i[r0 : r0 + rows], best_s[r0 : r0 + rows]
        for c0 in range(0, total, col_step):
            s = score_matrix(pq, pc[c0 : c0 + col_step], m)
            if exclude_self:
                lo, hi = max(r0, c0), min(r0 + rows, c0 + s.shape[1])
                if lo < hi:
                    d = np.arange(lo, hi)
                    s[d - r0, d - c0] = -np.inf
            cols = np.arange(c0, c0 + s.shape[1], dtype=np.int64)
            blk_i, blk_s = _best(np.broadcast_to(cols, s.shape), s, k_eff)
            del s
            cand_s = np.concatenate([run_s, blk_s], axis=1)
            cand_i = np.concatenate([run_i, blk_i], axis=1)
            run_i, run_s = _best(cand_i, cand_s, k_eff)
        best_i[r0 : r0 + rows], best_s[r0 : r0 + rows] = run_i, run_s
    best_i[~np.isfinite(best_s)] = -1
    if k_eff < k:
        pad = k - k_eff
        best_i = np.pad(best_i, ((0, 0), (0, pad)), constant_values=-1)
        best_s = np.pad(best_s, ((0, 0), (0, pad)), constant_values=-np.inf)
    return TopK(indices=best_i, scores=best_s)


def _best(idx: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best candidates sorted by score (desc), then index (asc)."""
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition may cut inside a group of ties: widen to every candidate tied with the k-th.
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        if (scores == kth).sum(axis=1).max() > 1:
            keep = scores >= kth
            width = int(keep.sum(axis=1).max())
            part = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        idx = np.take_along_axis(idx, part, axis=1)
        scores = np.take_along_axis(scores, part, axis=1)
    # -inf padding (index -1) sorts last.
    order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -scores), axis=1)
    return (
        np.take_along_axis(idx, order, axis=1)[:, :k],
        np.take_along_axis(scores, order, axis=1)[:, :k],
    )
