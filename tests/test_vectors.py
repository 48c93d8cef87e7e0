"""The shared vector maths against plain numpy / scipy formulas written out independently."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from distilmarco.errors import InputError
from distilmarco.vectors import check_similarity, normalize_rows, prepare, score_matrix, scores

RNG = np.random.default_rng(7)
A = RNG.normal(size=(5, 8)).astype(np.float32)
B = RNG.normal(size=(4, 8)).astype(np.float32)


def test_normalize_rows_gives_unit_rows_and_keeps_zero_rows_zero() -> None:
    x = np.vstack([A, np.zeros((1, 8), np.float32)])
    out = normalize_rows(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:5], axis=1), 1.0, atol=1e-6)
    assert not np.isnan(out).any() and (out[5] == 0).all()


@pytest.mark.parametrize(
    ("similarity", "expected"),
    [
        ("cosine", lambda a, b: 1 - cdist(a, b, "cosine")),
        ("dot", lambda a, b: a.astype(np.float64) @ b.T.astype(np.float64)),
        ("euclidean", lambda a, b: -cdist(a, b, "euclidean")),
        ("manhattan", lambda a, b: -cdist(a, b, "cityblock")),
    ],
)
def test_scores_match_scipy(similarity: str, expected) -> None:  # type: ignore[no-untyped-def]
    want = expected(A.astype(np.float64), B.astype(np.float64))
    a, b = prepare(A, similarity), prepare(B, similarity)
    np.testing.assert_allclose(score_matrix(a, b, similarity), want, atol=1e-5)
    np.testing.assert_allclose(scores(a, b[2], similarity), want[:, 2], atol=1e-5)


def test_unknown_similarity_is_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"'hamming'.*cosine, dot, euclidean, manhattan"):
        check_similarity("hamming")
    with pytest.raises(InputError, match="'hamming'"):
        scores(A, A[0], "hamming")
    assert check_similarity("dot") == "dot"
