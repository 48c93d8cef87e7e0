"""Scoring that search shares, as pure functions over arrays: the best passage per document,
full-precision rescoring of approximate candidates, reciprocal rank fusion and the FTS5 query.

Rescoring: every reported dense score comes from the stored float32 vectors, never from a cache.
With approximate scores at hand only the candidates that can still matter are read: the best ``k``
first, then every candidate whose approximate score comes within ``margin`` of the k-th
document's full-precision score. Euclidean and manhattan candidates are all read (their errors
have no bound relative to the scores). See ``benchmarks/results/index-notes.md`` for the margins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distilmarco import vectors as vec

if TYPE_CHECKING:
    from distilmarco.index.reader import Candidates

RRF_K = 60  # the constant of Cormack et al. (2009)
MARGIN = 2e-3  # times max(1, |k-th score|, |q| * the largest |x| read): float16 copies
FEW_ROWS = 256  # candidates scored without BLAS (see ``_scores``)
_FEW = 256  # candidates up to which ``best_per_document`` checks for one chunk per document
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Ranked:
    """Chunk ids and their scores, best first (the best chunk of each document)."""

    chunks: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) higher is better


# chunk ids -> the live ones among them, with their document row ids and float32 vectors
Fetch = Callable[[np.ndarray], "Candidates"]


def best_per_document(
    chunk_scores: np.ndarray, docs: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the best-scoring chunk of each of the top ``k`` documents, and their scores.

    Ties between documents are broken by the lower position (the older chunk), deterministically.
    """
    if k <= 0 or len(chunk_scores) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if len(docs) <= _FEW and len(set(docs.tolist())) == len(docs):
        # every chunk its own document (a search's rescored candidates, usually): skip the grouping
        keep = np.argsort(-chunk_scores, kind="stable")[:k]
        return keep, chunk_scores[keep]
    want = min(len(chunk_scores), k)
    while True:
        # The top `want` chunks hold the top k documents once they span k distinct documents;
        # with every chunk tied with the want-th, so that ties go to the earlier chunk.
        if want < len(chunk_scores):
            cand = np.argpartition(-chunk_scores, want - 1)[:want]
            cut = chunk_scores[cand].min()
            if np.isfinite(cut):  # (-inf marks a filtered-out row: never reported)
                cand = np.flatnonzero(chunk_scores >= cut)
        else:
            cand = np.arange(len(chunk_scores))
        cand = cand[np.lexsort((cand, -chunk_scores[cand]))]
        _, first = np.unique(docs[cand], return_index=True)
        if len(first) >= k or want == len(chunk_scores):
            keep = cand[np.sort(first)][:k]
            return keep, chunk_scores[keep]
        want = min(len(chunk_scores), want * 4)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], k: int = RRF_K
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (k + rank), rank from 1."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            scores[id_] = scores.get(id_, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression: every distinct word of ``text``, quoted, joined by OR."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def rescore(
    fetch: Fetch,
    chunks: np.ndarray,
    approx: np.ndarray | None,
    query: np.ndarray,
    similarity: str,
    k: int,
    margin: float = MARGIN,
) -> Ranked:
    """The best chunk of each of the top ``k`` documents among ``chunks`` with its float32 score,
    best first. ``approx`` (higher is better), if given, limits what is read:
    ``margin`` is twice the most it can be off, relative to the scale below."""
    if approx is None or similarity not in ("cosine", "dot"):
        approx, end = None, len(chunks)  # no bound on how far off an approximate distance is
    else:
        order = np.argsort(-approx, kind="stable")
        chunks, approx = chunks[order], approx[order]
        end = min(len(chunks), k)
    first = fetch(chunks[:end])
    keys, docs, vectors = first.chunks, first.docs, first.vectors
    while True:
        scores = _scores(vectors, query, similarity)
        pos, best = best_per_document(scores, docs, k)
        if end == len(chunks) or approx is None:
            return Ranked(keys[pos], best)
        if len(best) >= k:
            kth = float(best[-1])
            scale = max(1.0, abs(kth), _norm(query) * _max_norm(vectors))
            # approx is sorted best first: the candidates still within the margin end here
            reach = int(np.searchsorted(-approx, -(kth - margin * scale), side="right"))
            if reach <= end:
                return Ranked(keys[pos], best)
            grow = min(len(chunks), reach)
        else:  # fewer than k documents in hand: no k-th score to bound by yet
            grow = min(len(chunks), 2 * end)
        more = fetch(chunks[end:grow])
        end = grow
        keys = np.concatenate([keys, more.chunks])
        docs = np.concatenate([docs, more.docs])
        vectors = np.concatenate([vectors, more.vectors])


def _scores(vectors: np.ndarray, query: np.ndarray, similarity: str) -> np.ndarray:
    """``vectors.scores`` without BLAS for the few rows a rescoring reads: BLAS would wake a second
    thread and leave it spinning on the core where another ANN graph part is being searched."""
    if similarity in ("cosine", "dot") and len(vectors) <= FEW_ROWS:
        return np.einsum("ij,j->i", vectors, query)
    return vec.scores(vectors, query, similarity)


def _norm(x: np.ndarray) -> float:
    return float(np.sqrt(x @ x))


def _max_norm(vectors: np.ndarray) -> float:
    return float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors).max())) if len(vectors) else 0.0
