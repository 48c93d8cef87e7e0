""" "More like this": rank a corpus by similarity to liked items and away from disliked ones.

The query is the Rocchio combination of unit vectors, ``mean(like) - negative_weight *
mean(unlike)``, and corpus rows are ranked by cosine to it. The inputs themselves (and any
``exclude`` rows) are never recommended. ``recommend_in_index`` does the same over an index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distilmarco.apps.similarity import as_matrix, check_same_dim, top_k
from distilmarco.errors import InputError
from distilmarco.vectors import normalize_rows

if TYPE_CHECKING:
    from distilmarco.index import Hit, Index


@dataclass(frozen=True)
class Recommendation:
    row: int
    score: float  # cosine to the recommendation query


def recommendation_query(
    like: np.ndarray, unlike: np.ndarray | None = None, *, negative_weight: float = 0.5
) -> np.ndarray:
    """The unit query vector (D,) for positive examples ``like`` and negative ``unlike``."""
    pos = as_matrix(like, "like")
    if negative_weight < 0:
        raise InputError(f"negative_weight must be non-negative, got {negative_weight}")
    q = normalize_rows(pos).mean(axis=0)
    if unlike is not None and len(unlike):
        neg = as_matrix(unlike, "unlike")
        check_same_dim(pos, neg, ("like", "unlike"))
        q = q - negative_weight * normalize_rows(neg).mean(axis=0)
    if not np.linalg.norm(q) > 1e-9:
        raise InputError("the liked and disliked examples cancel out: no direction to recommend")
    return normalize_rows(q[None, :])[0]


def _rows(rows: Sequence[int], n: int, name: str) -> list[int]:
    out = [int(r) for r in rows]
    bad = [r for r in out if not 0 <= r < n]
    if bad:
        raise InputError(f"{name} row {bad[0]} is out of range for a corpus of {n} items")
    return out


def recommend(
    corpus: np.ndarray,
    *,
    like: Sequence[int] = (),
    unlike: Sequence[int] = (),
    like_vectors: np.ndarray | None = None,
    unlike_vectors: np.ndarray | None = None,
    k: int = 10,
    negative_weight: float = 0.5,
    exclude: Sequence[int] = (),
) -> list[Recommendation]:
    """The ``k`` corpus rows most like the positives (rows ``like`` and/or ``like_vectors``) and
    least like the negatives, best first, excluding the example rows and ``exclude``."""
    c = as_matrix(corpus, "corpus")
    n = c.shape[0]
    like_r, unlike_r, excl = (
        _rows(like, n, "like"),
        _rows(unlike, n, "unlike"),
        _rows(exclude, n, "exclude"),
    )
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    parts = [c[like_r]] if like_r else []
    if like_vectors is not None:
        lv = as_matrix(like_vectors, "like_vectors")
        check_same_dim(c, lv, ("corpus", "like_vectors"))
        parts.append(lv)
    if not parts:
        raise InputError("give at least one liked item (a row or a vector) to recommend from")
    negs = [c[unlike_r]] if unlike_r else []
    if unlike_vectors is not None:
        uv = as_matrix(unlike_vectors, "unlike_vectors")
        check_same_dim(c, uv, ("corpus", "unlike_vectors"))
        negs.append(uv)
    query = recommendation_query(
        np.concatenate(parts),
        np.concatenate(negs) if negs else None,
        negative_weight=negative_weight,
    )
    banned = set(like_r) | set(unlike_r) | set(excl)
    if len(banned) >= n:
        raise InputError("every corpus item is an input or excluded: nothing left to recommend")
    hits = top_k(query[None, :], c, min(n, k + len(banned)), "cosine")
    out = [
        Recommendation(int(i), float(s))
        for i, s in zip(hits.indices[0], hits.scores[0], strict=True)
        if i >= 0 and int(i) not in banned
    ]
    return out[:k]


def recommend_in_index(
    index: Index,
    *,
    like: Sequence[str] = (),
    unlike: Sequence[str] = (),
    like_texts: Sequence[str] = (),
    unlike_texts: Sequence[str] = (),
    k: int = 10,
    negative_weight: float = 0.5,
) -> list[Hit]:
    """The ``k`` documents of ``index`` most like the liked ids and texts and least like the
    disliked ones, best first; the liked and disliked documents themselves are left out."""
    parts = [index.vectors(like)] if like else []
    negs = [index.vectors(unlike)] if unlike else []
    if like_texts:
        parts.append(index.encoder.encode(list(like_texts), truncation="count"))
    if unlike_texts:
        negs.append(index.encoder.encode(list(unlike_texts), truncation="count"))
    if not parts:
        raise InputError("give at least one liked id or liked text")
    query = recommendation_query(
        np.concatenate(parts),
        np.concatenate(negs) if negs else None,
        negative_weight=negative_weight,
    )
    return index.search_vector(query, k, exclude_ids=[*like, *unlike])
