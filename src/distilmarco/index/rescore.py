"""Full-precision rescoring of approximate candidates (HNSW on float32 or, in older files, f16
copies, or a float16/int8 exact-search matrix): every reported score comes from the stored
float32 vectors, read from the store, never from a cache.

With approximate scores at hand, only the candidates that can still matter are read from the
store: the best ``k`` first, then every candidate whose approximate score comes within the margin
of the k-th document's full-precision score (twice as many while fewer than ``k`` documents are
in hand). Rounding both vectors to f16 moves an inner product by at most 2 * 2**-11 * |q| |x|
(about 1e-3 for unit vectors; 3e-5 measured on 100k clustered 768-d vectors), half the margin, so
the answer equals rescoring every candidate. Measured there: 10 candidates needed at p50, 13 at
p99, for k = 10. HNSW parts holding float32 copies differ from the store's vectors only in the
order FAISS sums a dot product in, so their margin is ten times narrower (``GraphPart``; twice
that for Panorama parts, whose copies were also rotated in float32): 9.3 rows read a query on
average at 1M (plain float32 parts). Each read is a random row of a big file: at 1M vectors one
costs 25-60 us, and more when the page cache has let it go.
Euclidean candidates are all read (a square root makes small distances' errors unbounded).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from distilmarco.index.search import best_per_document, similarity_scores

FEW_ROWS = 256  # candidates scored without BLAS (see ``_scores``)
MARGIN = 2e-3  # times max(1, |k-th score|, |q| * the largest |x| read): float16 copies

# chunk ids -> (live chunk ids, their document row ids, their float32 vectors)
Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def rescore(
    fetch: Fetch,
    chunks: np.ndarray,
    approx: np.ndarray | None,
    query: np.ndarray,
    similarity: str,
    k: int,
    margin: float = MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, float32 scores) of the best chunk of each of the top ``k`` documents among
    ``chunks``, best first. ``approx`` (higher is better), if given, limits what is read:
    ``margin`` is twice the most it can be off, relative to the scale below."""
    if approx is None or similarity not in ("cosine", "dot"):
        approx, end = None, len(chunks)  # no bound on how far off an approximate distance is
    else:
        order = np.argsort(-approx, kind="stable")
        chunks, approx = chunks[order], approx[order]
        end = min(len(chunks), k)
    keys, docs, vectors = fetch(chunks[:end])
    while True:
        scores = _scores(vectors, query, similarity)
        pos, best = best_per_document(scores, docs, k)
        if end == len(chunks) or approx is None:
            return keys[pos], best
        if len(best) >= k:
            kth = float(best[-1])
            scale = max(1.0, abs(kth), _norm(query) * _max_norm(vectors))
            # approx is sorted best first: the candidates still within the margin end here
            reach = int(np.searchsorted(-approx, -(kth - margin * scale), side="right"))
            if reach <= end:
                return keys[pos], best
            grow = min(len(chunks), reach)
        else:  # fewer than k documents in hand: no k-th score to bound by yet
            grow = min(len(chunks), 2 * end)
        more = fetch(chunks[end:grow])
        end = grow
        keys = np.concatenate([keys, more[0]])
        docs = np.concatenate([docs, more[1]])
        vectors = np.concatenate([vectors, more[2]])


def _scores(vectors: np.ndarray, query: np.ndarray, similarity: str) -> np.ndarray:
    """``similarity_scores`` without BLAS for the few rows a rescoring reads (8 us for 20 x 768):
    numpy's BLAS puts a second thread on a product from 12 rows of 768 on, then leaves it
    spinning for more work on the core where another graph part is being searched."""
    if similarity in ("cosine", "dot") and len(vectors) <= FEW_ROWS:
        return np.einsum("ij,j->i", vectors, query)
    return similarity_scores(vectors, query, similarity)


def _norm(x: np.ndarray) -> float:
    return float(np.sqrt(x @ x))


def _max_norm(vectors: np.ndarray) -> float:
    return float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max())) if len(vectors) else 0.0
