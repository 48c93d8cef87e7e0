"""``MilvusStorage``: the index's ``Storage`` on a Milvus collection (one row per passage).

Milvus has no multi-row transactions, so writes are ordered to be safe to retry and never to hide
a document: rows are upserted by their key ``doc_id#n`` (a retried batch overwrites itself), and
a replaced document's surplus passages from a longer old version are deleted only after its new
passages are written. The sequence number is a collection property advanced after each write.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from distilmarco.errors import IndexStoreError, InputError
from distilmarco.index.ann import AnnFileStats
from distilmarco.index.milvus.address import MilvusAddress
from distilmarco.index.milvus.client import Collection, connect, docs_filter, rpc
from distilmarco.index.milvus.filters import MilvusFilter
from distilmarco.index.milvus.schema import (
    META_PROPERTY,
    SEQ_PROPERTY,
    PassageRow,
    check_sizes,
    create_collection,
    passage_rows,
)
from distilmarco.index.milvus.search import MilvusSearch
from distilmarco.index.storage import (
    Counts,
    DocumentRow,
    ModelCheck,
    StoredDocument,
    VectorSpace,
)

log = logging.getLogger(__name__)

ALL = MilvusFilter("passage >= 0", {}, "passage >= 0")
FIRST = MilvusFilter("passage == 0", {}, "passage == 0")  # one row per document
BATCH_BYTES = 8 << 20  # per upsert request, well under the gRPC message size Milvus accepts
DOC_FIELDS = ("doc_id", "document", "metadata", "content_hash", "passages", "added")


class MilvusStorage:
    """One collection on a Milvus server. ``space`` gives the vectors' length and similarity for
    a new collection (created on the first write); ``index_type`` is its vector index;
    ``timeout`` bounds each call (writes: ``set_busy_timeout``)."""

    def __init__(
        self,
        location: str,
        space: Callable[[], VectorSpace],
        *,
        create: bool = True,
        index_type: str = "AUTOINDEX",
        timeout: float = 30.0,
        refuse_local_options: bool = False,
    ) -> None:
        if refuse_local_options:  # the SQLite index's search options were given
            raise InputError(
                "ann, matrix_dtype and ann_config set up the SQLite index's own search; a "
                "Milvus collection's server chooses how its vector index runs"
            )
        self.address = MilvusAddress.parse(location)
        self._space = space
        self.index_type = index_type
        self.client = connect(self.address, timeout)
        self.col = Collection(self.client, self.address)
        self._meta: dict[str, str] | None = None
        with rpc(self.address, "opening the collection"):
            self._exists = self.client.has_collection(self.address.collection)
            if self._exists:
                self.client.load_collection(self.address.collection)
        if not self._exists and not create:
            raise IndexStoreError(f"there is no collection {self.address}")
        self._searcher = MilvusSearch(self.col)

    @property
    def location(self) -> str:
        return str(self.address)

    @property
    def searcher(self) -> MilvusSearch:
        return self._searcher

    # --- identity and bookkeeping ---------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        if not self._exists:
            return {}
        with rpc(self.address, "reading the collection's properties"):
            found = self.client.describe_collection(self.address.collection)
        return {str(k): str(v) for k, v in (found.get("properties") or {}).items()}

    def meta(self) -> dict[str, str]:
        if self._meta is None:
            raw = self._properties().get(META_PROPERTY)
            self._meta = {str(k): str(v) for k, v in json.loads(raw).items()} if raw else {}
        return dict(self._meta)

    def sequence(self) -> int:
        return int(self._properties().get(SEQ_PROPERTY, "0"))

    def counts(self) -> Counts:
        if not self._exists:
            return Counts(0, 0, 0, 0, 0)
        chunks = self.col.count(ALL)
        return Counts(self.sequence(), self.col.count(FIRST), chunks, chunks, chunks)

    def document_count(self) -> int:
        return self.col.count(FIRST) if self._exists else 0

    def size_bytes(self) -> int:
        """Not known to a client: the server keeps the data (0)."""
        return 0

    def cache_stats(self) -> AnnFileStats:
        return AnnFileStats()  # the server builds and keeps its own indexes

    # --- writing --------------------------------------------------------------------------------

    def put(
        self,
        rows: Sequence[DocumentRow],
        *,
        replace: bool,
        meta: Mapping[str, str] | None = None,
        check: ModelCheck | None = None,
    ) -> int:
        """Write documents (``replace``: upsert by id; else an existing id fails the batch before
        anything is written). A batch naming an id twice keeps its last row."""
        unique = list({r.id: r for r in rows}.values())
        if not unique:
            return 0
        for r in unique:  # before anything is created or written
            check_sizes(r.id, r.text)
        self._prepare(meta, check)
        existing = self._added([r.id for r in unique])
        if existing and not replace:
            shown = ", ".join(repr(i) for i in sorted(existing)[:5])
            raise InputError(
                f"{len(existing)} id(s) already exist in the index ({shown}); "
                "use upsert to replace them"
            )
        now = time.time_ns()
        passages = [
            p
            for i, r in enumerate(unique)
            for p in passage_rows(r, existing.get(r.id, now + i))  # a replaced one keeps its place
        ]
        self.write_passages(passages, replaced=set(existing))
        return len(unique)

    def _prepare(self, meta: Mapping[str, str] | None, check: ModelCheck | None) -> bool:
        """Refuse another model (``check``), create the collection and record ``meta``; returns
        whether the collection was created now."""
        self._meta = None
        recorded = self.meta()
        if check is not None and meta is not None:
            check(recorded, meta)
        if not self._exists:
            space = self._space()
            with rpc(self.address, "creating the collection"):
                create_collection(
                    self.client,
                    self.address.collection,
                    space.dimension,
                    space.similarity,
                    self.index_type,
                )
            self._exists = created = True
            log.info("created Milvus collection %s (%d-d)", self.address, space.dimension)
        else:
            created = False
        if meta and dict(meta) != {k: recorded.get(k) for k in meta}:
            self._set_properties({META_PROPERTY: json.dumps({**recorded, **meta}, sort_keys=True)})
            self._meta = None
        return created

    def record(self, meta: Mapping[str, str], check: ModelCheck) -> bool:
        """Check and record the model's identity before rows embedded elsewhere are written;
        returns whether the collection was created now (then it holds no older rows)."""
        return self._prepare(meta, check)

    def write_passages(
        self, rows: Sequence[PassageRow], *, replaced: set[str] | None = None
    ) -> None:
        """Upsert passage rows (a row named twice keeps its last), then delete the surplus
        passages that longer previous versions of their documents left (of the documents in
        ``replaced``; None: any of them may have one), then advance the sequence."""
        unique = list({r.id: r for r in rows}.values())
        batch: list[PassageRow] = []
        size = 0
        for row in unique:
            batch.append(row)
            size += row.vector.nbytes + 2 * len(row.text) + 2 * len(row.document) + 256
            if size >= BATCH_BYTES:
                self._upsert(batch)
                batch, size = [], 0
        if batch:
            self._upsert(batch)
        by_count: dict[int, list[str]] = {}
        for row in unique:
            if replaced is None or row.doc_id in replaced:
                by_count.setdefault(row.passages, []).append(row.doc_id)
        for count, docs in by_count.items():
            self._delete_where(sorted(set(docs)), f"passage >= {int(count)}")
        self._bump()

    def _upsert(self, rows: Sequence[PassageRow]) -> None:
        with rpc(self.address, f"writing {len(rows)} passage(s)"):
            self.client.upsert(
                self.address.collection, [r.entity() for r in rows], timeout=self.col.timeout
            )

    def _delete_where(self, doc_ids: Sequence[str], extra: str = "") -> None:
        for at in range(0, len(doc_ids), 1_000):
            filt = docs_filter(doc_ids[at : at + 1_000], extra)
            with rpc(self.address, "deleting passages"):
                self.client.delete(
                    self.address.collection,
                    **filt.search_args(self.col.templates()),
                    timeout=self.col.timeout,
                )

    def _bump(self) -> None:
        self._set_properties({SEQ_PROPERTY: str(self.sequence() + 1)})

    def _set_properties(self, props: Mapping[str, str]) -> None:
        with rpc(self.address, "recording the collection's properties"):
            self.client.alter_collection_properties(
                self.address.collection, properties=dict(props), timeout=self.col.timeout
            )

    def delete(self, ids: Sequence[str]) -> int:
        if not self._exists or not ids:
            return 0
        existing = self._added(list(dict.fromkeys(ids)))
        if existing:
            self._delete_where(sorted(existing))
            self._bump()
        return len(existing)

    def replace_passages(
        self, rows: Sequence[DocumentRow], meta: Mapping[str, str], expect_seq: int
    ) -> None:
        raise IndexStoreError(
            f"{self.address} cannot be re-embedded in place: a Milvus collection's vector field "
            "and its model are fixed when it is created. Embed into a new collection (index add "
            "or index push --to milvus://HOST:PORT/NEW) and switch to it"
        )

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write may take on the server before it fails."""
        self.col.timeout = float(seconds)

    # --- reading --------------------------------------------------------------------------------

    def _added(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> when it was first written, for the given ids that exist."""
        if not self._exists:
            return {}
        rows = self.col.by_docs(ids, ["doc_id", "added"], "passage == 0")
        return {str(r["doc_id"]): int(r["added"]) for r in rows}

    def get(self, id: str) -> StoredDocument | None:
        if not self._exists:
            return None
        rows = self.col.by_docs([id], DOC_FIELDS, "passage == 0")
        return _document(rows[0]) if rows else None

    def documents(self) -> Iterator[StoredDocument]:
        """Every document, in the order they were first written."""
        if not self._exists:
            return iter(())
        rows = sorted(self.col.iterate(FIRST, DOC_FIELDS), key=lambda r: (r["added"], r["doc_id"]))
        return (_document(r) for r in rows)

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        if not self._exists:
            return {}
        rows = self.col.by_docs(list(ids), ["doc_id", "content_hash"], "passage == 0")
        return {str(r["doc_id"]): str(r["content_hash"]) for r in rows}

    def passage_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not self._exists:
            return {}
        rows = self.col.by_docs(list(dict.fromkeys(ids)), ["doc_id", "passage", "vector"])
        return _grouped(rows)

    def document_means(self) -> tuple[list[str], np.ndarray]:
        if not self._exists:
            return [], np.zeros((0, self._space().dimension), np.float32)
        order = {d.id: i for i, d in enumerate(self.documents())}
        groups = _grouped(self.col.iterate(ALL, ["doc_id", "passage", "vector"]))
        ids = sorted((i for i in groups if i in order), key=order.__getitem__)
        if not ids:
            return [], np.zeros((0, self._space().dimension), np.float32)
        return ids, np.stack([groups[i].mean(axis=0) for i in ids]).astype(np.float32)

    # --- maintenance ----------------------------------------------------------------------------

    def optimize(self, *, if_large: bool = False) -> None:
        """Ask the server to seal what it holds in memory (it builds its indexes itself)."""
        if self._exists and not if_large:
            with rpc(self.address, "flushing"):
                self.client.flush(self.address.collection)

    def close(self) -> None:
        self.client.close()


def _document(row: Mapping[str, object]) -> StoredDocument:
    meta = row["metadata"]
    return StoredDocument(
        id=str(row["doc_id"]),
        text=str(row["document"]),
        metadata=dict(meta) if isinstance(meta, Mapping) else {},
        content_hash=str(row["content_hash"]),
        chunks=int(str(row["passages"])),
    )


def _grouped(rows: Iterator[dict[str, object]] | list[dict[str, object]]) -> dict[str, np.ndarray]:
    """doc_id -> (C, D) vectors in passage order."""
    found: dict[str, list[tuple[int, list[float]]]] = {}
    for r in rows:
        found.setdefault(str(r["doc_id"]), []).append((int(str(r["passage"])), r["vector"]))  # type: ignore[arg-type]
    return {
        doc: np.asarray([v for _, v in sorted(parts, key=lambda p: p[0])], dtype=np.float32)
        for doc, parts in found.items()
    }
