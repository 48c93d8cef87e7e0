"""Search over the SQLite store, planned and run in one place.

dense: the exact matrix (``matrix.py``) or, for large unfiltered searches, the HNSW cache (``ann``),
then every reported score recomputed from the store's float32 vectors and the best passage kept
per document (``scoring``). bm25: FTS5 over the passages, best passage per document in SQL.
hybrid: both rankings fused by reciprocal rank.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from distilmarco.index.caches import Caches
from distilmarco.index.filters import compile_where
from distilmarco.index.reader import Candidates, Passage
from distilmarco.index.scoring import (
    MARGIN,
    Ranked,
    best_per_document,
    fts_query,
    reciprocal_rank_fusion,
    rescore,
)
from distilmarco.index.storage import Hit
from distilmarco.index.store import Store

AnnPolicy = Literal["auto", "always", "never"]
ANN_POLICIES: tuple[AnnPolicy, ...] = ("auto", "always", "never")
ANN_THRESHOLD = 50_000  # live chunks above which dense search uses HNSW by default
HYBRID_DEPTH = 100  # documents each ranking contributes to the fusion
RESCORE_DEPTH = 40  # fewest candidates a float16/int8 matrix nominates for rescoring


class Searcher:
    """Dense, BM25 and hybrid search over one store and its caches (implements ``Search``)."""

    def __init__(self, store: Store, caches: Caches, ann: AnnPolicy = "auto") -> None:
        self.store = store
        self.caches = caches
        self.ann_policy = ann

    def dense(
        self,
        vector: np.ndarray,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        exclude_ids: Sequence[str] = (),
        exact: bool | None = None,
    ) -> list[Hit]:
        """The ``k`` documents nearest a prepared query vector, each with its best passage."""
        if where is None and not exclude_ids and self.use_ann(exact):
            return self._ann(vector, k)
        return self._matrix(vector, k, where, exclude_ids)

    def bm25(self, text: str, k: int, *, where: Mapping[str, Any] | None = None) -> list[Hit]:
        match = fts_query(text)
        if match is None:
            return []
        reader = self.store.reader
        filt = compile_where(where, reader.metadata_keys()) if where else None
        return self._hits(reader.bm25(match, k, filt))

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        exact: bool | None = None,
    ) -> list[Hit]:
        depth = max(k, HYBRID_DEPTH)
        dense = self.dense(vector, depth, where=where, exact=exact)
        lexical = self.bm25(text, depth, where=where)
        by_id = {h.id: h for h in lexical} | {h.id: h for h in dense}
        fused = reciprocal_rank_fusion([[h.id for h in dense], [h.id for h in lexical]])
        return [_with_score(by_id[i], score) for i, score in fused[:k]]

    def use_ann(self, exact: bool | None) -> bool:
        """Whether dense search goes through HNSW: as asked, else by policy, else by size."""
        if exact is not None:
            return not exact
        if self.ann_policy != "auto":
            return self.ann_policy == "always"
        return (
            self.caches.similarity != "manhattan" and self.caches.chunk_count()[1] >= ANN_THRESHOLD
        )

    # --- the two dense paths -------------------------------------------------------------------

    def _matrix(
        self,
        query: np.ndarray,
        k: int,
        where: Mapping[str, Any] | None,
        exclude_ids: Sequence[str],
    ) -> list[Hit]:
        """Every live chunk scored (filtered ones at -inf); best chunk per document."""
        m = self.caches.matrix()
        reader = self.store.reader
        mask = None
        if where:
            filt = compile_where(where, reader.metadata_keys())
            mask = np.isin(m.docs, reader.docs_matching(filt))
        if exclude_ids:
            excluded = np.fromiter(reader.doc_rows(list(exclude_ids)).values(), dtype=np.int64)
            keep = ~np.isin(m.docs, excluded)
            mask = keep if mask is None else mask & keep
        scores = m.scores(query, self.caches.similarity, mask)
        if m.exact:
            pos, best = best_per_document(scores, m.docs, k)
            live = np.isfinite(best)
            return self._hits(Ranked(m.keys[pos[live]], best[live]))
        # A float16 or int8 matrix only nominates: rescore the best candidates at full precision.
        pos, best = best_per_document(scores, m.docs, max(4 * k, RESCORE_DEPTH))
        return self._rescored(m.keys[pos[np.isfinite(best)]], query, k)

    def _ann(self, query: np.ndarray, k: int) -> list[Hit]:
        """HNSW candidates, rescored with the store's full-precision vectors, best chunk per doc."""
        ann = self.caches.ann()
        # Twice k documents' worth of chunks: the graph's scores are close to exact, and a graph
        # part prunes harder the fewer results it keeps (see benchmarks/results/index-notes.md).
        want = math.ceil(2 * k * max(1.0, self.caches.chunks_per_document(ann)))
        while True:  # widen until the candidates span k documents (or hold everything)
            chunks, approx = ann.search_scored(query, want)
            hits = self._rescored(chunks, query, k, approx, ann.score_margin)
            if len(hits) >= k or want >= len(ann):
                return hits
            want *= 4

    def _rescored(
        self,
        chunks: np.ndarray,
        query: np.ndarray,
        k: int,
        approx: np.ndarray | None = None,
        margin: float = MARGIN,
    ) -> list[Hit]:
        """Score candidate chunks with the store's float32 vectors; best chunk per document."""
        passages: dict[int, Passage] = {}

        def fetch(some: np.ndarray) -> Candidates:
            found = self.store.reader.candidates(some, self.caches.dimension)
            passages.update(found.passages)
            return found

        ranked = rescore(fetch, chunks, approx, query, self.caches.similarity, k, margin)
        return self._hits(ranked, passages)

    def _hits(self, ranked: Ranked, passages: dict[int, Passage] | None = None) -> list[Hit]:
        """Hits for ranked chunks, with their passages (read now unless already at hand)."""
        info = self.store.reader.passages(ranked.chunks) if passages is None else passages
        hits = []
        for chunk, score in zip(ranked.chunks.tolist(), ranked.scores.tolist(), strict=True):
            p = info.get(chunk)
            if p is not None:  # a concurrent delete may have removed it since the scan
                meta = {} if p.metadata_json == "{}" else json.loads(p.metadata_json)
                hits.append(Hit(p.doc_id, float(score), p.text, p.start, p.end, meta))
        return hits


def _with_score(hit: Hit, score: float) -> Hit:
    return Hit(hit.id, score, hit.passage, hit.start, hit.end, hit.metadata)
