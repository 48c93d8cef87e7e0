"""The exact-search matrix in reduced precision (float16, int8): candidates are rescored with the
stored float32 vectors, so results equal float32 exact search; the truth here is numpy brute force."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from distilmarco.errors import InputError
from distilmarco.index import Index
from distilmarco.index.matrix import VectorMatrix, quantize_int8
from distilmarco.index.reader import Candidates, Changes
from distilmarco.index.scoring import best_per_document, rescore
from distilmarco.index.storage import ChunkRow, DocumentRow
from distilmarco.index.store import Store

DIM = 768


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 centres in a shared 32-d subspace (near ties, as in real corpora)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((50, DIM)).astype(np.float32)
    basis = np.random.default_rng(1).standard_normal((32, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, 32)) @ basis
    x += 0.2 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    vectors = clustered(3000, seed=2)
    db = tmp_path_factory.mktemp("matrix") / "s.db"
    store = Store(db)
    store.set_meta({"model_id": "synthetic", "revision": "", "dimension": str(DIM)})
    store.set_meta({"similarity": "cosine", "chunk_window": "510", "chunk_overlap": "32"})
    rows = [
        DocumentRow(f"d{i}", f"doc {i}", "{}", hashlib.sha256(b"%d" % i).hexdigest(), (c,))
        for i, c in enumerate(ChunkRow(0, 5, v) for v in vectors)
    ]
    store.put(rows, replace=False)
    store.close()
    return db, vectors


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_reduced_matrix_top10_equals_float32_brute_force(synthetic, dtype: str) -> None:  # type: ignore[no-untyped-def]
    db, vectors = synthetic
    queries = clustered(40, seed=3)
    with Index(db, matrix_dtype=dtype) as reduced:  # type: ignore[arg-type]
        for q in queries:
            truth = np.argsort(-(vectors @ q), kind="stable")[:10]
            hits = reduced.search_vector(q, 10, exact=True)
            assert [h.id for h in hits] == [f"d{i}" for i in truth]
            np.testing.assert_allclose(
                [h.score for h in hits], (vectors @ q)[truth], rtol=1e-5, atol=1e-6
            )
        assert reduced.store.caches.matrix().matrix.dtype == np.dtype(dtype)


def test_int8_matrix_is_a_quarter_and_document_vectors_dequantised(synthetic) -> None:  # type: ignore[no-untyped-def]
    db, vectors = synthetic
    with Index(db, matrix_dtype="int8") as small, Index(db) as full:
        m = small.store.caches.matrix()
        assert m.matrix.nbytes == full.store.caches.matrix().matrix.nbytes // 4
        ids, means = small.all_vectors()
        assert ids[:3] == ["d0", "d1", "d2"]
        cos = np.einsum("ij,ij->i", means, vectors)  # one chunk per document: its own vector
        assert cos.min() > 0.999


def test_int8_quantisation_bounds() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100, 64)).astype(np.float32)
    x[7] = 0.0
    codes, scales = quantize_int8(x)
    assert codes.dtype == np.int8 and np.abs(codes.astype(int)).max() == 127
    assert scales[7] == 1.0 and not codes[7].any()
    error = np.abs(codes * scales[:, None] - x)
    assert (error <= scales[:, None] / 2 + 1e-7).all()
    np.testing.assert_allclose(scales[:7], np.abs(x[:7]).max(axis=1) / 127, rtol=1e-6)


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean", "manhattan"])
def test_int8_scores_track_float32(similarity: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 48)).astype(np.float32)
    q = rng.standard_normal(48).astype(np.float32)
    changes = Changes(1, np.arange(1, 301), np.arange(1, 301), x, np.zeros(0, np.int64))
    exact, small = VectorMatrix.empty(48), VectorMatrix.empty(48, "int8")
    exact.apply(changes)
    small.apply(changes)
    full, approx = exact.scores(q, similarity, None), small.scores(q, similarity, None)
    assert small.scales is not None
    half_step = small.scales / 2  # the largest rounding error of any element of a row
    bound = {  # how far that rounding can move each score
        "cosine": np.abs(q).sum() * half_step,
        "dot": np.abs(q).sum() * half_step,
        "euclidean": np.sqrt(48) * half_step,
        "manhattan": 48 * half_step,
    }[similarity]
    assert (np.abs(approx - full) <= bound * 1.001 + 1e-5).all()
    assert np.corrcoef(approx, full)[0, 1] > 0.999
    small.apply(Changes(2, np.zeros(0, np.int64), np.zeros(0, np.int64), x[:0], np.arange(1, 250)))
    assert small.live == 51 and len(small.scales) == len(small.matrix) == 51  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["int4", "float64", "INT8", 8, None])
def test_bad_matrix_dtype(synthetic, bad: object) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="is not one of float32, float16, int8"):
        Index(synthetic[0], matrix_dtype=bad)  # type: ignore[arg-type]


def test_rescore_reads_only_what_can_matter_and_equals_rescoring_all() -> None:
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((200, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = np.arange(200) // 2  # two chunks per document
    query = vectors[0] * 0.7 + vectors[1] * 0.3
    query /= np.linalg.norm(query)
    chunks = np.argsort(-(vectors @ query))[:80]
    read: list[int] = []

    def fetch(ids: np.ndarray) -> Candidates:
        read.extend(ids.tolist())
        return Candidates(ids, docs[ids], vectors[ids], {})

    truth = rescore(fetch, chunks, None, query, "cosine", 10)
    assert len(read) == 80
    exact_scores = vectors @ query
    order = np.argsort(-exact_scores, kind="stable")
    first_per_doc = order[np.sort(np.unique(docs[order], return_index=True)[1])][:10]
    assert truth.chunks.tolist() == first_per_doc.tolist()  # independent: numpy over everything

    read.clear()  # accurate approximations (f16 rounding): far fewer rows read, same answer
    approx = vectors.astype(np.float16).astype(np.float32)[chunks] @ query
    got = rescore(fetch, chunks, approx, query, "cosine", 10)
    assert got.chunks.tolist() == truth.chunks.tolist()
    np.testing.assert_array_equal(got.scores, truth.scores)
    assert len(read) <= 20  # 10 documents of 2 chunks each; nothing else came near

    def fetch_single(ids: np.ndarray) -> Candidates:
        read.extend(ids.tolist())
        return Candidates(
            ids, ids, vectors[ids], {}
        )  # one chunk per document (the document is the chunk)

    read.clear()  # the k winners are read, and only what comes within the margin of them
    got = rescore(fetch_single, chunks, approx, query, "cosine", 10)
    assert (
        got.chunks.tolist()
        == chunks[np.argsort(-exact_scores[chunks], kind="stable")][:10].tolist()
    )
    assert 10 <= len(read) < 15

    read.clear()  # approximations that all look alike: everything has to be read
    got = rescore(fetch, chunks, np.ones(len(chunks), np.float32), query, "cosine", 10)
    assert got.chunks.tolist() == truth.chunks.tolist() and sorted(read) == sorted(chunks.tolist())

    read.clear()  # euclidean: approximate distances give no bound, all candidates are read
    rescore(fetch, chunks, approx, query, "euclidean", 10)
    assert len(read) == 80


@pytest.mark.parametrize("n", [1, 9, 40, 300])
def test_best_per_document_picks_each_documents_best_chunk(n: int) -> None:
    """Against a plain loop: best chunk per document, documents by score, ties to the earlier
    chunk; both with one chunk per document (the shortcut) and with shared documents."""
    rng = np.random.default_rng(n)
    scores = rng.integers(0, 6, n).astype(np.float32)  # many ties
    for docs in (rng.permutation(n) * 3, rng.integers(0, max(1, n // 3), n)):
        best: dict[int, int] = {}
        for i, d in enumerate(docs.tolist()):
            if d not in best or scores[i] > scores[best[d]]:
                best[d] = i
        expected = sorted(best.values(), key=lambda i: (-scores[i], i))[:5]
        pos, top = best_per_document(scores, docs, 5)
        assert pos.tolist() == expected
        assert top.tolist() == scores[expected].tolist()


@pytest.mark.parametrize("n", [9, 40, 300])
def test_best_per_document_never_reports_filtered_rows_before_allowed_ones(n: int) -> None:
    """Rows a filter ruled out score -inf (``VectorMatrix.scores``): every allowed document comes
    first, as a plain loop over the allowed rows orders them, and -inf rows only after."""
    rng = np.random.default_rng(n + 1)
    scores = rng.integers(0, 4, n).astype(np.float32)
    scores[rng.random(n) < 0.7] = -np.inf
    docs = rng.integers(0, max(1, n // 2), n)
    best: dict[int, int] = {}
    for i, d in enumerate(docs.tolist()):
        if np.isfinite(scores[i]) and (d not in best or scores[i] > scores[best[d]]):
            best[d] = i
    allowed = sorted(best.values(), key=lambda i: (-scores[i], i))
    for k in (1, 3, len(allowed), len(allowed) + 5):
        pos, top = best_per_document(scores, docs, k)
        finite = np.isfinite(top)
        assert pos[finite].tolist() == allowed[:k]
        assert (finite[:-1] >= finite[1:]).all()  # no allowed row after a filtered one
