"""The seam between ``Index`` and where its documents live: the ``Storage`` protocol and the values
that cross it.

``Index`` validates, chunks and embeds; a storage keeps documents (by string id), their passages
(spans of the text), one vector per passage, full-text search over the passages, the model's
identity and a sequence number that every write advances, and answers filtered dense, BM25 and
hybrid queries with one ``Hit`` per document (its best passage). ``SqliteStorage`` (one SQLite
file plus rebuildable matrix and ANN caches) implements it; a distributed vector database can too,
keeping passages as rows keyed ``doc_id#n``, grouping hits by ``doc_id`` and compiling ``where``
to its own filter language.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from distilmarco.index.ann import AnnFileStats

# check(recorded_meta, new_meta), run atomically with a write; raises to refuse it (another model)
ModelCheck = Callable[[Mapping[str, str], Mapping[str, str]], None]


@dataclass(frozen=True)
class Hit:
    """One search result: a document and its best passage (``text[start:end]`` of the document).

    ``score`` is the model's similarity for dense search (cosine for msmarco-distilbert-base-v4),
    the BM25 score for ``bm25`` and the reciprocal-rank-fusion score for ``hybrid``; the
    cross-encoder's score when the search was re-ranked.
    """

    id: str
    score: float
    passage: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored: ``get`` returns these."""

    id: str
    text: str
    metadata: dict[str, Any]
    content_hash: str
    chunks: int


@dataclass(frozen=True)
class ChunkRow:
    """One passage of a document, ready to store: span in the document text and its vector."""

    start: int
    end: int
    vector: np.ndarray  # (D,) float32, prepared for the similarity


@dataclass(frozen=True)
class DocumentRow:
    """One document, validated, chunked and embedded: what a write stores."""

    id: str
    text: str
    metadata_json: str
    content_hash: str
    chunks: tuple[ChunkRow, ...]


@dataclass(frozen=True)
class Counts:
    """Row counts read in one snapshot; a healthy store has chunks == vectors == fts."""

    seq: int
    documents: int
    chunks: int
    vectors: int
    fts: int


@dataclass(frozen=True)
class VectorSpace:
    """The vectors a storage holds: their length and how two of them are compared."""

    dimension: int
    similarity: str


class Search(Protocol):
    """Filtered search over a storage; every method returns at most ``k`` hits, one per document,
    best first. Query vectors come prepared (unit length for cosine) and of the right length;
    ``where`` is the user's filter (metadata key -> value, a list meaning any of), which the
    implementation validates and compiles."""

    def dense(
        self,
        vector: np.ndarray,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        exclude_ids: Sequence[str] = (),
        exact: bool | None = None,
    ) -> list[Hit]:
        """Nearest documents by their best passage; ``exact`` asks for (True) or allows (False)
        an approximate index, None lets the storage choose."""
        ...

    def bm25(self, text: str, k: int, *, where: Mapping[str, Any] | None = None) -> list[Hit]:
        """Documents by the BM25 score of their best passage for the words of ``text``."""
        ...

    def hybrid(
        self,
        text: str,
        vector: np.ndarray,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        exact: bool | None = None,
    ) -> list[Hit]:
        """Dense and BM25 rankings fused by reciprocal rank."""
        ...


class Storage(Protocol):
    """Where an index's documents, passages and vectors live (see the module docstring)."""

    @property
    def location(self) -> str:
        """The file or address, for messages."""
        ...

    @property
    def searcher(self) -> Search: ...

    # --- model identity and bookkeeping
    def meta(self) -> dict[str, str]:
        """What the storage records about the model (``model_meta``) and its chunking."""
        ...

    def sequence(self) -> int:
        """The number every write advances (a reindex checks nothing changed meanwhile)."""
        ...

    def counts(self) -> Counts: ...

    def document_count(self) -> int: ...

    def size_bytes(self) -> int: ...

    def cache_stats(self) -> AnnFileStats:
        """What the derived search structures (e.g. an ANN file) say about themselves."""
        ...

    # --- writing: each call is atomic
    def put(
        self,
        rows: Sequence[DocumentRow],
        *,
        replace: bool,
        meta: Mapping[str, str] | None = None,
        check: ModelCheck | None = None,
    ) -> int:
        """Insert documents (``replace``: upsert by id; else an existing id fails the batch)."""
        ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many existed."""
        ...

    def replace_passages(
        self, rows: Sequence[DocumentRow], meta: Mapping[str, str], expect_seq: int
    ) -> None:
        """Swap the passages and vectors of the documents named in ``rows`` (their texts stay),
        unless anything was written since ``expect_seq``."""
        ...

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another writer before ``IndexBusyError``."""
        ...

    # --- reading documents and vectors
    def get(self, id: str) -> StoredDocument | None: ...

    def documents(self) -> Iterator[StoredDocument]:
        """Every document, in insertion order."""
        ...

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]: ...

    def passage_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """id -> (C, D) passage vectors of each existing document, in passage order."""
        ...

    def document_means(self) -> tuple[list[str], np.ndarray]:
        """Every document's id (insertion order) and the mean of its passage vectors."""
        ...

    # --- maintenance
    def optimize(self, *, if_large: bool = False) -> None:
        """Bring derived search structures up to date (``if_large``: only where they are used)."""
        ...

    def close(self) -> None: ...
