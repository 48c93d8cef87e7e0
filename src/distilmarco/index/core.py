"""``Index``: documents in, passages out. Composes the storage (the truth and its search, behind the
``Storage`` protocol), the chunker and the encoder.

Write path: validate -> chunk -> embed (no lock held) -> one short write (``Storage.put``).
Read path: check and embed the query here, then ``storage.searcher`` (``searcher.py`` for SQLite).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from distilmarco.errors import InputError, NotFoundError
from distilmarco.index.ann import AnnConfig, AnnFileStats
from distilmarco.index.chunking import ChunkConfig
from distilmarco.index.identity import Engine, check_same_model
from distilmarco.index.location import open_storage
from distilmarco.index.model import EmbedFn, IndexModel
from distilmarco.index.searcher import AnnPolicy
from distilmarco.index.storage import DocumentRow, Hit, Storage, StoredDocument
from distilmarco.index.validate import check_ids, validate_documents
from distilmarco.vectors import prepare

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder
    from distilmarco.reranker import Reranker

log = logging.getLogger(__name__)

Mode = Literal["dense", "bm25", "hybrid"]
MODES = ("dense", "bm25", "hybrid")
DEFAULT_PATH = "distilmarco.db"

Document = StoredDocument
__all__ = ["Document", "Hit", "Index", "IndexStats"]


@dataclass(frozen=True)
class IndexStats:
    path: str
    documents: int
    chunks: int
    vectors: int
    fts_rows: int
    seq: int
    model_id: str | None
    revision: str | None
    dimension: int | None
    similarity: str | None
    chunk_window: int | None
    chunk_overlap: int | None
    file_bytes: int
    ann: AnnFileStats
    model_name: str | None = None
    fingerprint: str | None = None
    backend: str | None = None  # the engine that embedded the documents
    precision: str | None = None


class Index:
    """A persistent semantic search index in one SQLite file, or in a Milvus collection when
    ``path`` is ``milvus://HOST:PORT/COLLECTION`` (the ``milvus`` extra).

    >>> with Index("docs.db", encoder) as index:               # doctest: +SKIP
    ...     index.add(["a"], ["Planes fly because their wings make lift."], [{"lang": "en"}])
    ...     index.search("how do aircraft stay up?", k=3)

    ``encoder`` may be an ``Encoder``, a model name/folder, or None: then the model recorded in the
    index is loaded when first needed (the default model for a new index). Opening an index with a
    different model than it was built with raises ``ModelMismatchError``; use ``reindex``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        encoder: Encoder | str | os.PathLike[str] | None = None,
        *,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        ann: AnnPolicy = "auto",
        matrix_dtype: Literal["float32", "float16", "int8"] = "float32",
        busy_timeout: float = 30.0,
        create: bool = True,
        engine: Engine | None = None,
        ann_config: AnnConfig | None = None,
    ) -> None:
        self.path = Path(path)
        self._rerankers: dict[str, Reranker] = {}
        self.store: Storage = open_storage(
            path,
            lambda: self.model.space(),
            ann=ann,
            matrix_dtype=matrix_dtype,
            busy_timeout=busy_timeout,
            create=create,
            ann_config=ann_config,
        )
        if (
            engine is not None
            and encoder is not None
            and not isinstance(encoder, str | os.PathLike)
        ):
            raise InputError("give an Encoder or an engine to build one, not both")
        self.model = IndexModel(self.store.meta, engine or Engine(), chunk_tokens, chunk_overlap)
        if encoder is not None:
            self.model.use(self.model.as_encoder(encoder))

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the storage (it first saves what its caches have caught up)."""
        self.store.close()

    # --- the model ------------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The encoder; loads the model the index records if none was given."""
        return self.model.encoder

    @property
    def chunking(self) -> ChunkConfig:
        """How documents are cut into passages (needs the encoder's tokenizer and limit)."""
        return self.model.chunking

    # --- writing ------------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Add new documents in one transaction; an id that already exists fails the whole call."""
        return self._put(ids, texts, metadata, replace=False)

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Add documents, replacing any with the same id, in one transaction."""
        return self._put(ids, texts, metadata, replace=True)

    def _put(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any] | None] | None,
        *,
        replace: bool,
    ) -> int:
        return self.write(self.prepare(ids, texts, metadata), replace=replace)

    def prepare(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        embed: EmbedFn | None = None,
    ) -> list[DocumentRow]:
        """Validate, chunk and embed documents without touching the file (the slow half of a
        write); ``embed`` replaces the encoder's own batching (a server's shared queue)."""
        docs = validate_documents(ids, texts, metadata)
        if embed is None:
            return self.model.embed_documents(docs.ids, docs.texts, docs.metadata_json)
        return self.model.embed_documents(docs.ids, docs.texts, docs.metadata_json, embed)

    def write(self, rows: Sequence[DocumentRow], *, replace: bool) -> int:
        """Store prepared rows in one short transaction (the fast half of a write)."""
        if not rows:
            return 0
        return self.store.put(rows, replace=replace, meta=self.model.meta(), check=check_same_model)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many of them existed."""
        return self.store.delete(check_ids(ids, allow_duplicates=True))

    def reindex(self, encoder: Encoder | str | os.PathLike[str]) -> int:
        """Re-embed every document with ``encoder`` (another model or chunking) in one transaction."""
        self.model.switch(self.model.as_encoder(encoder))
        expect_seq = self.store.sequence()
        docs = list(self.store.documents())
        rows = self.model.embed_documents(
            [d.id for d in docs], [d.text for d in docs], ["{}"] * len(docs)
        )
        self.store.replace_passages(rows, self.model.meta(), expect_seq)
        self.model.forget_space()  # the storage now records the new model's
        return len(docs)

    # --- reading ------------------------------------------------------------------------------

    def get(self, id: str) -> Document:
        doc = self.store.get(id)
        if doc is None:
            raise NotFoundError(f"no document with id {id!r} in {self.store.location}")
        return doc

    def count(self) -> int:
        return self.store.document_count()

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self.store.get(id) is not None

    def documents(self) -> Iterator[Document]:
        """Every document (id, text, metadata, ...) in insertion order."""
        return self.store.documents()

    def ids(self) -> list[str]:
        return [d.id for d in self.store.documents()]

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> SHA-256 of the stored text, for the ids that exist (incremental indexing)."""
        return self.store.content_hashes(list(ids))

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Document vectors (N, D), row i for ids[i]: the mean of the document's chunk vectors,
        re-normalised for cosine models (for a one-chunk document, its chunk's vector)."""
        space = self.model.space()
        found = self.store.passage_vectors(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"{len(missing)} id(s) not in the index, e.g. {missing[0]!r}")
        out = (
            np.stack([found[i].mean(axis=0) for i in ids])
            if ids
            else np.zeros((0, space.dimension), np.float32)
        )
        return prepare(out, space.similarity)

    def all_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every document's vector at once (same definition as ``vectors``), with the ids in
        insertion order: one pass over the in-memory matrix, for clustering or duplicate mining."""
        ids, means = self.store.document_means()
        return ids, prepare(means, self.model.space().similarity)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        mode: Mode = "dense",
        exact: bool | None = None,
        embed: EmbedFn | None = None,
        rerank: Reranker | str | os.PathLike[str] | None = None,
        rerank_depth: int = 100,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, each with its best passage.

        ``where`` keeps documents whose metadata equals every given value (a list: any of them).
        ``exact`` forces exact (True) or HNSW (False) dense search; None chooses by size.
        ``embed`` embeds the query in place of the encoder (a server's shared queue).
        ``rerank`` (a ``Reranker`` or a cross-encoder's name or folder) re-scores the passages of
        the first ``max(k, rerank_depth)`` hits with the cross-encoder; the hits keep their
        passages and offsets and carry the cross-encoder's score.
        """
        if mode not in MODES:
            raise InputError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(query, str) or not query.strip():
            raise InputError("query must be a non-empty string")
        k = _check_k(k)
        if rerank is None:
            return self._first_stage(query, k, where, mode, exact, embed)
        if not isinstance(rerank_depth, int) or isinstance(rerank_depth, bool) or rerank_depth < 1:
            raise InputError(f"rerank_depth must be a positive integer, got {rerank_depth!r}")
        from distilmarco.reranker import rerank_passages

        reranker = self._reranker(rerank)
        hits = self._first_stage(query, max(k, rerank_depth), where, mode, exact, embed)
        ranked = rerank_passages(reranker, query, [h.passage for h in hits], k)
        return [replace(hits[r.index], score=r.score) for r in ranked]

    def _first_stage(
        self,
        query: str,
        k: int,
        where: Mapping[str, Any] | None,
        mode: Mode,
        exact: bool | None,
        embed: EmbedFn | None,
    ) -> list[Hit]:
        if mode == "bm25":
            return self.store.searcher.bm25(query, k, where=where)
        raw = self._embed_query(query) if embed is None else embed([query])[0]
        vector = self._query_vector(raw)
        if mode == "dense":
            return self.store.searcher.dense(vector, k, where=where, exact=exact)
        return self.store.searcher.hybrid(query, vector, k, where=where, exact=exact)

    def _reranker(self, rerank: Reranker | str | os.PathLike[str]) -> Reranker:
        """``rerank`` as a ``Reranker``; a name or folder is loaded once and kept for reuse."""
        from distilmarco.reranker import Reranker

        if isinstance(rerank, Reranker):
            return rerank
        if not isinstance(rerank, str | os.PathLike):
            raise InputError(f"rerank must be a Reranker or a model name/folder, got {rerank!r}")
        if os.fspath(rerank) not in self._rerankers:
            self._rerankers = {os.fspath(rerank): Reranker(os.fspath(rerank))}
        return self._rerankers[os.fspath(rerank)]

    def _embed_query(self, query: str) -> np.ndarray:
        return self.encoder.encode([query], truncation="count")[0]

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        exclude_ids: Sequence[str] = (),
        exact: bool | None = None,
    ) -> list[Hit]:
        """Documents nearest to ``vector`` (e.g. ``vectors([id])[0]`` for "more like this")."""
        k = _check_k(k)
        query = self._query_vector(vector)
        return self.store.searcher.dense(
            query, k, where=where, exclude_ids=exclude_ids, exact=exact
        )

    def _query_vector(self, vector: np.ndarray) -> np.ndarray:
        """A query vector checked against the stored ones and prepared (unit length for cosine)."""
        space = self.model.space()
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape != (space.dimension,) or not np.isfinite(query).all():
            raise InputError(
                f"query vector must be {space.dimension} finite numbers, got shape {query.shape}"
            )
        return prepare(query, space.similarity)

    # --- maintenance ----------------------------------------------------------------------------

    def optimize(self) -> None:
        """Bring the derived search structures (the ANN file) up to date with the documents and
        save them, e.g. after a bulk add."""
        self.store.optimize()

    def optimize_if_large(self) -> None:
        """``optimize`` when dense search would use them (past ``searcher.ANN_THRESHOLD``)."""
        self.store.optimize(if_large=True)

    def stats(self) -> IndexStats:
        counts = self.store.counts()
        meta = self.store.meta()

        def num(key: str) -> int | None:
            return int(meta[key]) if key in meta else None

        return IndexStats(
            path=self.store.location,
            documents=counts.documents,
            chunks=counts.chunks,
            vectors=counts.vectors,
            fts_rows=counts.fts,
            seq=counts.seq,
            model_id=meta.get("model_id"),
            revision=meta.get("revision") or None,
            dimension=num("dimension"),
            similarity=meta.get("similarity"),
            chunk_window=num("chunk_window"),
            chunk_overlap=num("chunk_overlap"),
            file_bytes=self.store.size_bytes(),
            ann=self.store.cache_stats(),
            model_name=meta.get("model_name"),
            fingerprint=meta.get("fingerprint"),
            backend=meta.get("backend"),
            precision=meta.get("precision"),
        )


# --- pure helpers ---------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)
