"""Dense, BM25 and hybrid search on a Milvus collection, one hit per document (its best passage):
Milvus groups the passages by ``doc_id``, fuses hybrid rankings with its RRF ranker and filters
with the expressions ``filters.py`` compiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from distilmarco.errors import InputError
from distilmarco.index.milvus.client import Collection, rpc
from distilmarco.index.milvus.filters import MilvusFilter, compile_where, quote
from distilmarco.index.scoring import RRF_K, fts_query
from distilmarco.index.searcher import HYBRID_DEPTH
from distilmarco.index.storage import Hit

HIT_FIELDS = ["doc_id", "text", "start", "end", "metadata"]


class MilvusSearch:
    """Implements ``Search`` for ``MilvusStorage``. The server chooses how its vector index runs:
    ``exact=False`` (approximate allowed) and None are accepted, ``exact=True`` is refused."""

    def __init__(self, col: Collection) -> None:
        self.col = col

    def _filter(self, where: Mapping[str, Any] | None, exclude: Sequence[str] = ()) -> MilvusFilter:
        return compile_where(where, self._known, exclude_docs=tuple(exclude))

    def _known(self, key: str) -> bool:
        """Whether some row has ``key`` in its metadata: a misspelt key is an error, as in the
        SQLite index, not zero hits."""
        exists = f"exists metadata[{quote(key)}]"
        found = self.col.query(
            MilvusFilter(exists, {}, exists),
            ["id"],
            limit=1,
        )
        return bool(found)

    def dense(
        self,
        vector: np.ndarray,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        exclude_ids: Sequence[str] = (),
        exact: bool | None = None,
    ) -> list[Hit]:
        _no_exact(exact)
        filt = self._filter(where, exclude_ids)
        return self._search([vector.tolist()], "vector", "IP", k, filt)

    def bm25(self, text: str, k: int, *, where: Mapping[str, Any] | None = None) -> list[Hit]:
        if fts_query(text) is None:  # no words: nothing can match
            return []
        filt = self._filter(where)
        return self._search([text], "sparse", "BM25", k, filt)

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        exact: bool | None = None,
    ) -> list[Hit]:
        from pymilvus import AnnSearchRequest, RRFRanker

        _no_exact(exact)
        depth = max(k, HYBRID_DEPTH)
        filt = self._filter(where)
        if fts_query(text) is None:  # one ranking fused alone: its order, with RRF scores
            dense = self._search([vector.tolist()], "vector", "IP", k, filt)
            return [_scored(h, 1.0 / (RRF_K + r)) for r, h in enumerate(dense, start=1)]
        expr, params = filt.expr(self.col.templates())
        requests = [
            AnnSearchRequest(
                data=[data],
                anns_field=field,
                param={"metric_type": metric},
                limit=depth,
                expr=expr or None,
                expr_params=params or None,
            )
            for data, field, metric in ((vector.tolist(), "vector", "IP"), (text, "sparse", "BM25"))
        ]
        with rpc(self.col.address, "a hybrid search"):
            found = self.col.client.hybrid_search(
                self.col.name,
                requests,
                RRFRanker(RRF_K),
                limit=k,
                output_fields=HIT_FIELDS,
                group_by_field="doc_id",
            )
        return _hits(found[0], "RRF")

    def _search(
        self, data: list[Any], field: str, metric: str, k: int, filt: MilvusFilter
    ) -> list[Hit]:
        with rpc(self.col.address, "a search"):
            found = self.col.client.search(
                self.col.name,
                data=data,
                anns_field=field,
                limit=k,
                output_fields=HIT_FIELDS,
                group_by_field="doc_id",
                search_params={"metric_type": metric},
                **filt.search_args(self.col.templates()),
            )
        return _hits(found[0], metric)


def _hits(found: Sequence[Mapping[str, Any]], metric: str) -> list[Hit]:
    hits = []
    for hit in found:
        e = hit["entity"]
        # BM25 scores are never negative; Milvus Lite reports them negated (smaller = closer).
        score = abs(float(hit["distance"])) if metric == "BM25" else float(hit["distance"])
        meta = e.get("metadata")
        hits.append(
            Hit(
                str(e["doc_id"]),
                score,
                str(e["text"]),
                int(e["start"]),
                int(e["end"]),
                dict(meta) if isinstance(meta, Mapping) else {},
            )
        )
    return hits


def _scored(hit: Hit, score: float) -> Hit:
    return Hit(hit.id, score, hit.passage, hit.start, hit.end, hit.metadata)


def _no_exact(exact: bool | None) -> None:
    if exact:
        raise InputError(
            "exact search is not available on a Milvus collection: its server runs its own vector "
            "index (leave exact unset, or use --ann)"
        )
