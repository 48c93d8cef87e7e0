"""Vector maths shared by every layer: unit rows, and scores where higher always means closer.

``euclidean`` and ``manhattan`` are negated distances (as sentence-transformers reports them), so
one descending sort ranks results for every similarity.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from distilmarco.errors import InputError

Similarity = Literal["cosine", "dot", "euclidean", "manhattan"]
SIMILARITIES: tuple[Similarity, ...] = get_args(Similarity)


def check_similarity(name: str, allowed: tuple[str, ...] = SIMILARITIES) -> Similarity:
    """``name`` as a ``Similarity``; anything else is refused naming the valid choices."""
    if name not in allowed:
        raise InputError(f"unknown similarity {name!r}; choose one of {', '.join(allowed)}")
    return name  # type: ignore[return-value]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length rows as float32; all-zero rows stay zero (never NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def prepare(x: np.ndarray, similarity: str) -> np.ndarray:
    """Rows as they are stored and compared: unit length for cosine, unchanged float32 otherwise."""
    return normalize_rows(x) if similarity == "cosine" else np.asarray(x, dtype=np.float32)


def scores(rows: np.ndarray, query: np.ndarray, similarity: str) -> np.ndarray:
    """Score of every prepared row against one prepared query vector: shape ``(len(rows),)``."""
    if similarity in ("cosine", "dot"):
        return rows @ query
    diff = rows - query
    if similarity == "euclidean":
        return -np.sqrt(np.einsum("ij,ij->i", diff, diff))
    if similarity == "manhattan":
        return -np.abs(diff).sum(axis=1)
    raise InputError(f"unknown similarity {similarity!r}; choose one of {', '.join(SIMILARITIES)}")


def pair_scores(a: np.ndarray, b: np.ndarray, similarity: str) -> np.ndarray:
    """Score of prepared row i of ``a`` with prepared row i of ``b``: float64, shape ``(N,)``."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if similarity in ("cosine", "dot"):
        return np.einsum("ij,ij->i", a64, b64)
    if similarity == "euclidean":
        return -np.linalg.norm(a64 - b64, axis=1)
    if similarity == "manhattan":
        return -np.abs(a64 - b64).sum(axis=1)
    raise InputError(f"unknown similarity {similarity!r}; choose one of {', '.join(SIMILARITIES)}")


def score_matrix(a: np.ndarray, b: np.ndarray, similarity: str) -> np.ndarray:
    """Scores of prepared rows ``a`` against prepared rows ``b``: shape ``(len(a), len(b))``."""
    if similarity in ("cosine", "dot"):
        return (a @ b.T).astype(np.float32, copy=False)
    if similarity == "euclidean":
        # |a-b|^2 = |a|^2 + |b|^2 - 2ab cancels badly in float32 for near-identical rows: use float64.
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        a_sq = np.einsum("ij,ij->i", a64, a64)[:, None]
        b_sq = np.einsum("ij,ij->i", b64, b64)[None, :]
        dist = np.sqrt(np.maximum(a_sq + b_sq - 2.0 * (a64 @ b64.T), 0.0))
        return (-dist).astype(np.float32)
    if similarity == "manhattan":
        return (-np.abs(a[:, None, :] - b[None, :, :]).sum(axis=2)).astype(np.float32)
    raise InputError(f"unknown similarity {similarity!r}; choose one of {', '.join(SIMILARITIES)}")
