"""``Index``: documents in, passages out. Composes the store (truth), the chunker, the encoder and
the search caches; every piece lives in its own module.

Write path: validate -> chunk -> embed (no lock held) -> one short write transaction.
Read path: dense (exact matrix or HNSW + full-precision rescoring), BM25 (FTS5), or hybrid (RRF).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from distilmarco.errors import InputError, NotFoundError
from distilmarco.index.ann import AnnConfig, AnnFileStats
from distilmarco.index.caches import Caches
from distilmarco.index.chunking import ChunkConfig, chunk_spans
from distilmarco.index.filters import compile_where
from distilmarco.index.queries import Passage
from distilmarco.index.rescore import MARGIN, rescore
from distilmarco.index.search import (
    MATRIX_DTYPES,
    best_per_document,
    fts_query,
    prepare,
    reciprocal_rank_fusion,
)
from distilmarco.index.store import ChunkRow, DocumentRow, Store, StoredDocument
from distilmarco.index.validate import (
    Engine,
    check_ids,
    check_same_model,
    content_hash,
    load_recorded_encoder,
    model_meta,
    validate_documents,
)

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

log = logging.getLogger(__name__)

Mode = Literal["dense", "bm25", "hybrid"]
EmbedFn = Callable[[list[str]], np.ndarray]  # texts -> raw (N, D) vectors, in place of the encoder
MODES = ("dense", "bm25", "hybrid")
DEFAULT_PATH = "distilmarco.db"
ANN_THRESHOLD = 50_000  # live chunks above which dense search uses HNSW by default
HYBRID_DEPTH = 100  # documents each ranking contributes to the fusion

Document = StoredDocument


@dataclass(frozen=True)
class Hit:
    """One search result: a document and its best passage (``text[start:end]`` of the document).

    ``score`` is the model's similarity for dense search (cosine for msmarco-distilbert-base-v4),
    the BM25 score for ``bm25`` and the reciprocal-rank-fusion score for ``hybrid``.
    """

    id: str
    score: float
    passage: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)


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
    """A persistent semantic search index in one SQLite file.

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
        ann: Literal["auto", "always", "never"] = "auto",
        matrix_dtype: Literal["float32", "float16", "int8"] = "float32",
        busy_timeout: float = 30.0,
        create: bool = True,
        engine: Engine | None = None,
        ann_config: AnnConfig | None = None,
    ) -> None:
        if ann not in ("auto", "always", "never"):
            raise InputError(f"ann {ann!r} is not one of 'auto', 'always', 'never'")
        if matrix_dtype not in MATRIX_DTYPES:
            raise InputError(
                f"matrix_dtype {matrix_dtype!r} is not one of {', '.join(MATRIX_DTYPES)}"
            )
        self.matrix_dtype = matrix_dtype
        self.path = Path(path)
        self.ann_policy = ann
        self.ann_config = ann_config or AnnConfig()  # how the HNSW cache builds and searches
        self.store = Store(self.path, busy_timeout=busy_timeout, create=create)
        self._encoder: Encoder | None = None
        self._chunk_request = (chunk_tokens, chunk_overlap)
        self._caches: Caches | None = None
        self._chunking: ChunkConfig | None = None
        if (
            engine is not None
            and encoder is not None
            and not isinstance(encoder, str | os.PathLike)
        ):
            raise InputError("give an Encoder or an engine to build one, not both")
        self._engine = engine or Engine()
        if encoder is not None:
            self._set_encoder(self._as_encoder(encoder))

    # --- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Save a caught-up ANN cache if one is in memory (after any compaction of it that is
        running), then close the file."""
        if self._caches is not None:
            self._caches.close()
        self.store.close()

    # --- the model ------------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The encoder; loads the model the index records if none was given."""
        if self._encoder is None:
            self._set_encoder(load_recorded_encoder(self.store.meta(), self._engine))
        assert self._encoder is not None
        return self._encoder

    def _as_encoder(self, encoder: Encoder | str | os.PathLike[str]) -> Encoder:
        """An Encoder as given, or one for a model name on this index's engine (the recorded
        one, else ``auto`` at exact fp32)."""
        if isinstance(encoder, str | os.PathLike):
            return self._engine.encoder(encoder, recorded=self.store.meta())
        return encoder

    def _set_encoder(self, encoder: Encoder) -> None:
        # An index from before fingerprints gets one recorded with its next write.
        check_same_model(self.store.meta(), model_meta(encoder))
        self._encoder = encoder
        meta = self.store.meta()
        window, overlap = self._chunk_request
        if "chunk_window" in meta and window is None and overlap is None:
            window, overlap = int(meta["chunk_window"]), int(meta["chunk_overlap"])
        self._chunking = ChunkConfig.for_model(encoder.max_seq_length, window, overlap)

    @property
    def chunking(self) -> ChunkConfig:
        """How documents are cut into passages (needs the encoder's tokenizer and limit)."""
        if self._chunking is None:
            _ = self.encoder  # loading the recorded model sets the chunking
        assert self._chunking is not None
        return self._chunking

    def _model_meta(self) -> dict[str, str]:
        return {
            **model_meta(self.encoder),
            "chunk_window": str(self.chunking.window),
            "chunk_overlap": str(self.chunking.overlap),
        }

    @property
    def caches(self) -> Caches:
        if self._caches is None:
            meta = self.store.meta()
            if "dimension" in meta:
                dim, sim = int(meta["dimension"]), meta["similarity"]
            else:
                dim, sim = self.encoder.dimension, self.encoder.similarity
            ann_path = self.path.with_name(self.path.name + ".ann")
            self._caches = Caches(
                self.store, dim, sim, ann_path, self.matrix_dtype, self.ann_config
            )
        return self._caches

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
        checked = validate_documents(ids, texts, metadata)
        if embed is None:
            return self._embed_documents(*checked)
        return self._embed_documents(*checked, embed=embed)

    def write(self, rows: Sequence[DocumentRow], *, replace: bool) -> int:
        """Store prepared rows in one short transaction (the fast half of a write)."""
        if not rows:
            return 0
        return self.store.put(
            rows, replace=replace, meta=self._model_meta(), check=check_same_model
        )

    def _embed_documents(
        self, ids: list[str], texts: list[str], metas: list[str], embed: EmbedFn | None = None
    ) -> list[DocumentRow]:
        """Chunk and embed (no lock held): the slow part of every write happens here."""
        spans = [self._spans(text) for text in texts]
        passages = [text[s:e] for text, doc in zip(texts, spans, strict=True) for s, e in doc]
        if not passages:
            return []
        if embed is not None:
            vectors = embed(passages)
        else:
            vectors, stats = self.encoder.encode_with_stats(passages, truncation="count")
            if stats.truncated:
                log.warning("%d passage(s) were re-tokenised past the model limit", stats.truncated)
        vectors = prepare(vectors, self.encoder.similarity)
        rows, at = [], 0
        for id_, text, meta, doc in zip(ids, texts, metas, spans, strict=True):
            chunks = tuple(ChunkRow(s, e, vectors[at + i]) for i, (s, e) in enumerate(doc))
            at += len(doc)
            rows.append(DocumentRow(id_, text, meta, content_hash(text), chunks))
        return rows

    def _spans(self, text: str) -> list[tuple[int, int]]:
        if len(text) <= self.chunking.window // 2:  # a token covers >= 1 character: one chunk
            return [(0, len(text))]
        offsets = self.encoder.tokenizer.offsets(text)
        return chunk_spans(offsets, len(text), self.chunking)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many of them existed."""
        return self.store.delete(check_ids(ids, allow_duplicates=True))

    def reindex(self, encoder: Encoder | str | os.PathLike[str]) -> int:
        """Re-embed every document with ``encoder`` (another model or chunking) in one transaction."""
        new = self._as_encoder(encoder)
        self._encoder, self._caches = new, None
        window, overlap = self._chunk_request
        self._chunking = ChunkConfig.for_model(new.max_seq_length, window, overlap)
        expect_seq, _ = self.store.seq()
        docs = list(self.store.iter_documents())
        rows = self._embed_documents(
            [d.id for d in docs], [d.text for d in docs], ["{}"] * len(docs)
        )
        doc_rows = self.store.doc_rows([d.id for d in docs])
        rows_by_doc = {doc_rows[r.id]: r.chunks for r in rows if r.id in doc_rows}
        self.store.replace_all(rows_by_doc, self._model_meta(), expect_seq)
        self._caches = None  # rebuilt for the new dimension and similarity on next use
        return len(docs)

    # --- reading ------------------------------------------------------------------------------

    def get(self, id: str) -> Document:
        doc = self.store.get(id)
        if doc is None:
            raise NotFoundError(f"no document with id {id!r} in {self.path}")
        return doc

    def count(self) -> int:
        return self.store.document_count()

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self.store.get(id) is not None

    def documents(self) -> Iterator[Document]:
        """Every document (id, text, metadata, ...) in insertion order."""
        return self.store.iter_documents()

    def ids(self) -> list[str]:
        return [d.id for d in self.store.iter_documents()]

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> SHA-256 of the stored text, for the ids that exist (incremental indexing)."""
        return self.store.content_hashes(list(ids))

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Document vectors (N, D), row i for ids[i]: the mean of the document's chunk vectors,
        re-normalised for cosine models (for a one-chunk document, its chunk's vector)."""
        found = self.store.doc_vectors(list(ids), self.caches.dimension)
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"{len(missing)} id(s) not in the index, e.g. {missing[0]!r}")
        out = (
            np.stack([found[i].mean(axis=0) for i in ids])
            if ids
            else np.zeros((0, self.caches.dimension), np.float32)
        )
        return prepare(out, self.caches.similarity)

    def all_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every document's vector at once (same definition as ``vectors``), with the ids in
        insertion order: one pass over the in-memory matrix, for clustering or duplicate mining."""
        m = self.caches.matrix()
        docs, matrix = m.docs[m.alive], m.rows()[m.alive]
        order = np.argsort(docs, kind="stable")
        docs, matrix = docs[order], matrix[order]
        rows, first, counts = np.unique(docs, return_index=True, return_counts=True)
        if not len(rows):
            return [], np.zeros((0, self.caches.dimension), np.float32)
        means = np.add.reduceat(matrix, first, axis=0) / counts[:, None]
        names = self.store.doc_ids(rows)  # a document deleted since the scan is left out
        keep = np.asarray([int(r) in names for r in rows], dtype=bool)
        ids = [names[int(r)] for r in rows[keep]]
        return ids, prepare(means[keep], self.caches.similarity)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        mode: Mode = "dense",
        exact: bool | None = None,
        embed: EmbedFn | None = None,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, each with its best passage.

        ``where`` keeps documents whose metadata equals every given value (a list: any of them).
        ``exact`` forces exact (True) or HNSW (False) dense search; None chooses by size.
        ``embed`` embeds the query in place of the encoder (a server's shared queue).
        """
        if mode not in MODES:
            raise InputError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(query, str) or not query.strip():
            raise InputError("query must be a non-empty string")
        k = _check_k(k)
        if mode == "bm25":
            return self._bm25(query, k, where)
        vector = self._embed_query(query) if embed is None else embed([query])[0]
        if mode == "dense":
            return self.search_vector(vector, k, where=where, exact=exact)
        depth = max(k, HYBRID_DEPTH)
        dense = self.search_vector(vector, depth, where=where, exact=exact)
        lexical = self._bm25(query, depth, where)
        by_id = {h.id: h for h in lexical} | {h.id: h for h in dense}
        fused = reciprocal_rank_fusion([[h.id for h in dense], [h.id for h in lexical]])
        return [_rescored(by_id[i], score) for i, score in fused[:k]]

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
        dim, similarity = self.caches.dimension, self.caches.similarity
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape != (dim,) or not np.isfinite(query).all():
            raise InputError(f"query vector must be {dim} finite numbers, got shape {query.shape}")
        query = prepare(query, similarity)
        if where is None and not exclude_ids and self._use_ann(exact):
            return self._ann_search(query, k)
        m = self.caches.matrix()
        mask = None
        if where:
            sql, params = compile_where(where, self.store.metadata_keys())
            mask = np.isin(m.docs, self.store.docs_matching(sql, params))
        if exclude_ids:
            excluded = np.fromiter(self.store.doc_rows(list(exclude_ids)).values(), dtype=np.int64)
            keep = ~np.isin(m.docs, excluded)
            mask = keep if mask is None else mask & keep
        scores = m.scores(query, similarity, mask)
        if m.exact:
            pos, best = best_per_document(scores, m.docs, k)
            live = np.isfinite(best)
            return self._hits(m.keys[pos[live]], best[live])
        # A float16 or int8 matrix only nominates: rescore the best candidates at full precision.
        pos, best = best_per_document(scores, m.docs, max(4 * k, 40))
        return self._rescored_hits(m.keys[pos[np.isfinite(best)]], query, k)

    def _use_ann(self, exact: bool | None) -> bool:
        if exact is not None:
            return not exact
        if self.ann_policy != "auto":
            return self.ann_policy == "always"
        return (
            self.caches.similarity != "manhattan" and self.caches.chunk_count()[1] >= ANN_THRESHOLD
        )

    def _ann_search(self, query: np.ndarray, k: int) -> list[Hit]:
        """HNSW candidates, rescored with the store's full-precision vectors, best chunk per doc."""
        ann = self.caches.ann()
        # twice k documents' worth of chunks: HNSW scores are float32-exact (see ``rescore``), and
        # a Panorama part prunes the harder the fewer results it keeps (200k clustered vectors,
        # ef 160, median of four passes: 1.37 / 1.46 / 1.59 ms for 10 / 20 / 40 results)
        want = math.ceil(2 * k * max(1.0, self.caches.chunks_per_document(ann)))
        while True:  # widen until the candidates span k documents (or hold everything)
            chunks, approx = ann.search_scored(query, want)
            hits = self._rescored_hits(chunks, query, k, approx, ann.score_margin)
            if len(hits) >= k or want >= len(ann):
                return hits
            want *= 4

    def _rescored_hits(
        self,
        chunks: np.ndarray,
        query: np.ndarray,
        k: int,
        approx: np.ndarray | None = None,
        margin: float = MARGIN,
    ) -> list[Hit]:
        """Score candidate chunks with the store's float32 vectors; best chunk per document."""
        passages: dict[int, Passage] = {}

        def fetch(some: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            keys, docs, vectors, found = self.store.candidates(some, self.caches.dimension)
            passages.update(found)
            return keys, docs, vectors

        keys, scores = rescore(fetch, chunks, approx, query, self.caches.similarity, k, margin)
        return self._hits(keys, scores, passages)

    def _bm25(self, query: str, k: int, where: Mapping[str, Any] | None) -> list[Hit]:
        match = fts_query(query)
        if match is None:
            return []
        sql, params = compile_where(where, self.store.metadata_keys()) if where else (None, [])
        rows = self.store.bm25(match, k, sql, params)
        return self._hits(
            np.asarray([c for c, _ in rows], np.int64), np.asarray([s for _, s in rows])
        )

    def _hits(
        self, chunks: np.ndarray, scores: np.ndarray, passages: dict[int, Passage] | None = None
    ) -> list[Hit]:
        """Hits for chunk ids, with their passages (read now unless already at hand)."""
        info = self.store.passages(chunks) if passages is None else passages
        hits = []
        for chunk, score in zip(chunks.tolist(), scores.tolist(), strict=True):
            if chunk in info:  # a concurrent delete may have removed it since the scan
                id_, start, end, passage, meta = info[chunk]
                metadata = {} if meta == "{}" else json.loads(meta)  # the common case, cheaply
                hits.append(Hit(id_, float(score), passage, start, end, metadata))
        return hits

    # --- maintenance ----------------------------------------------------------------------------

    def optimize(self) -> None:
        """Bring the ANN file up to date with the store and save it (e.g. after a bulk add), then
        forget the tombstones it covers (caches in other processes older than that rebuild)."""
        if self.store.counts().chunks:
            self.caches.ann(persist=False)
            if self.caches.save_ann():
                self.store.prune_tombstones(self.caches.saved_seq)

    def optimize_if_large(self) -> None:
        """``optimize`` when dense search would use HNSW (above ``ANN_THRESHOLD`` chunks)."""
        if self._use_ann(None) and self.caches.similarity != "manhattan":
            self.optimize()

    def stats(self) -> IndexStats:
        counts = self.store.counts()
        meta = self.store.meta()
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

        def num(key: str) -> int | None:
            return int(meta[key]) if key in meta else None

        return IndexStats(
            path=str(self.path),
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
            file_bytes=size,
            ann=self.caches.ann_file_stamp() if "dimension" in meta else AnnFileStats(),
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


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(hit.id, score, hit.passage, hit.start, hit.end, hit.metadata)
