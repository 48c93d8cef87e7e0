"""The SQLite store: the source of truth of an index.

One file in WAL mode. Tables: ``documents`` (external id, text, JSON metadata, content hash),
``chunks`` (character span of each passage), ``vectors`` (one float32 blob per chunk),
``chunks_fts`` (FTS5 over the passages, for BM25), ``tombstones`` (chunks removed, with the
sequence that removed them, so caches can catch up) and ``state`` (the sequence number, bumped in
every write transaction). Row ids come from AUTOINCREMENT and are never reused, so a cache keyed by
chunk id can replay ``changes_since(seq)`` without ambiguity.

The store knows nothing about models or embeddings: callers hand it finished rows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import IndexStoreError, InputError

log = logging.getLogger(__name__)

APPLICATION_ID = 0x444D4958  # "DMIX": marks the file as a distilmarco index
_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL,
                    pruned INTEGER NOT NULL);
INSERT INTO state VALUES (1, 0, 0);
CREATE TABLE documents (
    doc INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE chunks (
    chunk INTEGER PRIMARY KEY AUTOINCREMENT,
    doc INTEGER NOT NULL REFERENCES documents(doc),
    ord INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX chunks_doc ON chunks(doc);
CREATE INDEX chunks_seq ON chunks(seq);
CREATE TABLE vectors (chunk INTEGER PRIMARY KEY REFERENCES chunks(chunk), vector BLOB NOT NULL);
CREATE TABLE tombstones (chunk INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX tombstones_seq ON tombstones(seq);
CREATE TABLE metadata_keys (key TEXT PRIMARY KEY);
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, tokenize = 'porter unicode61 remove_diacritics 2');
"""
# Numbered migrations: entry i takes the schema from version i to i + 1. Append only.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1,)


@dataclass(frozen=True)
class ChunkRow:
    """One passage of a document, ready to store: span in the document text and its vector."""

    start: int
    end: int
    vector: np.ndarray  # (D,) float32


@dataclass(frozen=True)
class DocumentRow:
    id: str
    text: str
    metadata_json: str
    content_hash: str
    chunks: tuple[ChunkRow, ...]


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored: ``get`` returns these."""

    id: str
    text: str
    metadata: dict[str, Any]
    content_hash: str
    chunks: int


@dataclass(frozen=True)
class Changes:
    """What happened after a sequence number: chunks added (with doc and vector) and removed."""

    seq: int
    added: np.ndarray  # (A,) int64 chunk ids, ascending
    added_docs: np.ndarray  # (A,) int64 document row ids
    vectors: np.ndarray  # (A, D) float32
    removed: np.ndarray  # (R,) int64 chunk ids


@dataclass(frozen=True)
class Counts:
    """Row counts read in one snapshot; a healthy store has chunks == vectors == fts."""

    seq: int
    documents: int
    chunks: int
    vectors: int
    fts: int


class Store:
    """A connection to one index file. Thread-safe (one lock); many processes may share the file."""

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 30.0, create: bool = True
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        if not create and not self.path.exists():
            raise InputError(f"index {self.path} does not exist")
        if self.path.is_dir():
            raise InputError(f"index path {self.path} is a folder, expected a file")
        if not self.path.parent.is_dir():
            raise InputError(f"folder {self.path.parent} of index {self.path.name} does not exist")
        self._lock = threading.RLock()  # the writing connection
        self._rlock = threading.RLock()  # the reading one: reads never wait behind a writer
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._check_ours()
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._reader = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._reader.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise IndexStoreError(f"{self.path} is not a usable distilmarco index: {exc}") from exc
        except Exception:
            self._close_quietly()
            raise

    # --- opening -----------------------------------------------------------------------------

    def _check_ours(self) -> None:
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise IndexStoreError(
                f"{self.path} is an SQLite file but not a distilmarco index "
                f"(application_id {app_id:#x}, {tables} schema objects); refusing to touch it"
            )

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise IndexStoreError(
                f"{self.path} has schema version {version}, newer than this distilmarco "
                f"understands ({len(MIGRATIONS)}); upgrade distilmarco"
            )
        if version == len(MIGRATIONS):
            return
        with self.write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
            for number in range(version, len(MIGRATIONS)):
                log.info("migrating %s to schema version %d", self.path, number + 1)
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                if number == 0:
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    db.execute("INSERT INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
                db.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        with self._lock, self._rlock:
            self._db.close()
            if hasattr(self, "_reader"):
                self._reader.close()

    def _close_quietly(self) -> None:
        with suppress(sqlite3.Error, AttributeError):
            self._db.close()

    # --- transactions ------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: waits up to the busy timeout for the lock)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise IndexStoreError(
                    f"could not lock {self.path} for writing ({exc}); another process is writing "
                    "to it — try again or raise the busy timeout"
                ) from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same snapshot."""
        with self._rlock:
            self._reader.execute("BEGIN")
            try:
                yield self._reader
            finally:
                self._reader.execute("COMMIT")

    @staticmethod
    def bump(db: sqlite3.Connection) -> int:
        """Advance the sequence number inside a write transaction and return the new value."""
        db.execute("UPDATE state SET seq = seq + 1 WHERE id = 1")
        return int(db.execute("SELECT seq FROM state WHERE id = 1").fetchone()[0])

    # --- meta --------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with self._rlock:
            return dict(self._reader.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.write() as db:
            self._set_meta(db, values)
            self.bump(db)

    @staticmethod
    def _set_meta(db: sqlite3.Connection, values: Mapping[str, str]) -> None:
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def seq(self) -> tuple[int, int]:
        """(sequence number, highest sequence whose tombstones were pruned)."""
        with self._rlock:
            seq, pruned = self._reader.execute("SELECT seq, pruned FROM state").fetchone()
        return int(seq), int(pruned)

    # --- writing -----------------------------------------------------------------------------

    def put(
        self,
        rows: Sequence[DocumentRow],
        *,
        replace: bool,
        meta: Mapping[str, str] | None = None,
        check: Callable[[Mapping[str, str], Mapping[str, str]], None] | None = None,
    ) -> int:
        """Insert documents in one transaction; with ``replace`` existing ids are overwritten.

        Without ``replace``, an id that already exists fails the whole batch (nothing written).
        ``check(recorded_meta, meta)`` runs under the write lock and may refuse the batch.
        """
        with self.write() as db:
            if check is not None and meta is not None:
                check(dict(db.execute("SELECT key, value FROM meta").fetchall()), meta)
            if meta:
                self._set_meta(db, meta)
            existing = self._existing(db, [r.id for r in rows])
            if existing and not replace:
                shown = ", ".join(repr(i) for i in sorted(existing)[:5])
                raise InputError(
                    f"{len(existing)} id(s) already exist in the index ({shown}); "
                    "use upsert to replace them"
                )
            seq = self.bump(db)
            self._delete_docs(db, list(existing.values()), seq)
            for row in rows:
                self._insert(db, row, seq)
        return len(rows)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id in one transaction; returns how many existed."""
        with self.write() as db:
            existing = self._existing(db, ids)
            if not existing:
                return 0
            seq = self.bump(db)
            self._delete_docs(db, list(existing.values()), seq)
        return len(existing)

    def replace_all(
        self,
        rows_by_doc: Mapping[int, Sequence[ChunkRow]],
        meta: Mapping[str, str],
        expect_seq: int,
    ) -> None:
        """Swap every document's chunks and vectors (``reindex``) in one transaction, provided
        nothing was written since ``expect_seq`` (the snapshot the new vectors were made from)."""
        with self.write() as db:
            now = int(db.execute("SELECT seq FROM state").fetchone()[0])
            if now != expect_seq:
                raise IndexStoreError(
                    f"{self.path} changed while it was being re-embedded (sequence {expect_seq} "
                    f"-> {now}); nothing was replaced, run reindex again"
                )
            seq = self.bump(db)
            for doc, chunks in rows_by_doc.items():
                self._delete_chunks(db, [doc], seq)
                text = db.execute("SELECT text FROM documents WHERE doc = ?", (doc,)).fetchone()[0]
                self._insert_chunks(db, doc, text, chunks, seq)
            self._set_meta(db, meta)

    @staticmethod
    def _existing(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for lo in range(0, len(ids), 500):
            part = list(ids[lo : lo + 500])
            marks = ",".join("?" * len(part))
            found.update(
                db.execute(f"SELECT id, doc FROM documents WHERE id IN ({marks})", part).fetchall()
            )
        return found

    def _insert(self, db: sqlite3.Connection, row: DocumentRow, seq: int) -> None:
        cur = db.execute(
            "INSERT INTO documents (id, text, metadata, content_hash, seq) VALUES (?, ?, ?, ?, ?)",
            (row.id, row.text, row.metadata_json, row.content_hash, seq),
        )
        doc = int(cur.lastrowid or 0)
        self._insert_chunks(db, doc, row.text, row.chunks, seq)
        keys = json.loads(row.metadata_json).keys()
        db.executemany("INSERT OR IGNORE INTO metadata_keys VALUES (?)", [(k,) for k in keys])

    @staticmethod
    def _insert_chunks(
        db: sqlite3.Connection, doc: int, text: str, chunks: Sequence[ChunkRow], seq: int
    ) -> None:
        for ord_, chunk in enumerate(chunks):
            cur = db.execute(
                "INSERT INTO chunks (doc, ord, start, end, seq) VALUES (?, ?, ?, ?, ?)",
                (doc, ord_, chunk.start, chunk.end, seq),
            )
            key = cur.lastrowid
            blob = np.ascontiguousarray(chunk.vector, dtype="<f4").tobytes()
            db.execute("INSERT INTO vectors VALUES (?, ?)", (key, blob))
            db.execute(
                "INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)",
                (key, text[chunk.start : chunk.end]),
            )

    def _delete_docs(self, db: sqlite3.Connection, docs: list[int], seq: int) -> None:
        self._delete_chunks(db, docs, seq)
        db.executemany("DELETE FROM documents WHERE doc = ?", [(d,) for d in docs])

    @staticmethod
    def _delete_chunks(db: sqlite3.Connection, docs: list[int], seq: int) -> None:
        for doc in docs:
            keys = [r[0] for r in db.execute("SELECT chunk FROM chunks WHERE doc = ?", (doc,))]
            pairs = [(k,) for k in keys]
            db.executemany("DELETE FROM chunks_fts WHERE rowid = ?", pairs)
            db.executemany("DELETE FROM vectors WHERE chunk = ?", pairs)
            db.executemany("DELETE FROM chunks WHERE chunk = ?", pairs)
            db.executemany("INSERT INTO tombstones VALUES (?, ?)", [(k, seq) for k in keys])

    def prune_tombstones(self, upto: int) -> None:
        """Forget removals up to ``upto`` (once a saved cache covers them); caches older rebuild."""
        with self.write() as db:
            db.execute("DELETE FROM tombstones WHERE seq <= ?", (upto,))
            db.execute("UPDATE state SET pruned = max(pruned, ?) WHERE id = 1", (upto,))

    # --- reading -----------------------------------------------------------------------------

    def get(self, id: str) -> StoredDocument | None:
        with self.read() as db:
            row = db.execute(
                "SELECT doc, id, text, metadata, content_hash FROM documents WHERE id = ?", (id,)
            ).fetchone()
            if row is None:
                return None
            n = db.execute("SELECT count(*) FROM chunks WHERE doc = ?", (row[0],)).fetchone()[0]
        return StoredDocument(row[1], row[2], json.loads(row[3]), row[4], int(n))

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        with self._rlock:
            found: dict[str, str] = {}
            for lo in range(0, len(ids), 500):
                part = list(ids[lo : lo + 500])
                marks = ",".join("?" * len(part))
                found.update(
                    self._reader.execute(
                        f"SELECT id, content_hash FROM documents WHERE id IN ({marks})", part
                    ).fetchall()
                )
            return found

    def iter_documents(self, batch: int = 1000) -> Iterator[StoredDocument]:
        """Every document in insertion order, read in pages (each page one snapshot)."""
        last = 0
        while True:
            with self.read() as db:
                rows = db.execute(
                    "SELECT d.doc, d.id, d.text, d.metadata, d.content_hash, "
                    "(SELECT count(*) FROM chunks c WHERE c.doc = d.doc) "
                    "FROM documents d WHERE d.doc > ? ORDER BY d.doc LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            for _doc, id_, text, meta, digest, n in rows:
                yield StoredDocument(id_, text, json.loads(meta), digest, int(n))
            last = rows[-1][0]

    def doc_rows(self, ids: Sequence[str]) -> dict[str, int]:
        with self._rlock:
            return self._existing(self._reader, ids)

    def counts(self) -> Counts:
        with self.read() as db:
            seq = db.execute("SELECT seq FROM state").fetchone()[0]
            n = [
                db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("documents", "chunks", "vectors", "chunks_fts")
            ]
        return Counts(int(seq), *map(int, n))

    def document_count(self) -> int:
        with self._rlock:
            return int(self._reader.execute("SELECT count(*) FROM documents").fetchone()[0])

    def chunk_count(self) -> tuple[int, int]:
        """(sequence, number of chunks) in one snapshot; cheaper than ``counts``."""
        with self.read() as db:
            seq = db.execute("SELECT seq FROM state").fetchone()[0]
            n = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(seq), int(n)

    def metadata_keys(self) -> list[str]:
        with self._rlock:
            return [
                r[0] for r in self._reader.execute("SELECT key FROM metadata_keys ORDER BY key")
            ]

    def changes_since(self, seq: int, dim: int) -> Changes:
        """Chunks added and removed after ``seq``, read in one snapshot (seq 0 = everything)."""
        with self.read() as db:
            now = int(db.execute("SELECT seq FROM state").fetchone()[0])
            rows = db.execute(
                "SELECT c.chunk, c.doc, v.vector FROM chunks c JOIN vectors v USING (chunk) "
                "WHERE c.seq > ? ORDER BY c.chunk",
                (seq,),
            ).fetchall()
            removed = [
                r[0] for r in db.execute("SELECT chunk FROM tombstones WHERE seq > ?", (seq,))
            ]
        return Changes(
            seq=now,
            added=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            added_docs=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
            vectors=blobs_to_matrix([r[2] for r in rows], dim),
            removed=np.asarray(sorted(removed), dtype=np.int64),
        )

    def candidates(
        self, chunks: Sequence[int] | np.ndarray, dim: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The live ones of ``chunks`` (in the given order), their document row ids and vectors.

        One statement per 500 chunks, all in one snapshot; documents are not joined (search
        reads the external ids of the winners alone, with their passages)."""
        with self.read() as db:
            found: dict[int, tuple[int, bytes]] = {}
            for lo in range(0, len(chunks), 500):
                part = [int(c) for c in chunks[lo : lo + 500]]
                marks = ",".join("?" * len(part))
                for chunk, doc, blob in db.execute(
                    "SELECT c.chunk, c.doc, v.vector FROM chunks c JOIN vectors v USING (chunk) "
                    f"WHERE c.chunk IN ({marks})",
                    part,
                ):
                    found[chunk] = (doc, blob)
        live = [int(c) for c in chunks if int(c) in found]
        docs = np.fromiter((found[c][0] for c in live), dtype=np.int64, count=len(live))
        vectors = blobs_to_matrix([found[c][1] for c in live], dim)
        return np.asarray(live, dtype=np.int64), docs, vectors

    def passages(
        self, chunks: Sequence[int] | np.ndarray
    ) -> dict[int, tuple[str, int, int, str, dict[str, Any]]]:
        """chunk id -> (document id, start, end, passage text, metadata) for live chunks.

        Only the passage is read (``substr`` counts characters, as Python slicing does)."""
        with self._rlock:
            out = {}
            for lo in range(0, len(chunks), 500):
                part = [int(c) for c in chunks[lo : lo + 500]]
                marks = ",".join("?" * len(part))
                for chunk, id_, start, end, text, meta in self._reader.execute(
                    "SELECT c.chunk, d.id, c.start, c.end, substr(d.text, c.start + 1, "
                    "c.end - c.start), d.metadata FROM chunks c "
                    f"JOIN documents d USING (doc) WHERE c.chunk IN ({marks})",
                    part,
                ):
                    out[int(chunk)] = (id_, int(start), int(end), text, json.loads(meta))
            return out

    def doc_vectors(self, ids: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """id -> (C, D) chunk vectors of each existing document, in chunk order."""
        with self.read() as db:
            out: dict[str, np.ndarray] = {}
            for id_ in ids:
                blobs = [
                    r[0]
                    for r in db.execute(
                        "SELECT v.vector FROM documents d JOIN chunks c USING (doc) "
                        "JOIN vectors v USING (chunk) WHERE d.id = ? ORDER BY c.ord",
                        (id_,),
                    )
                ]
                if blobs:
                    out[id_] = blobs_to_matrix(blobs, dim)
            return out

    def doc_ids(self, rows: np.ndarray) -> dict[int, str]:
        """Document row id -> external id, for the rows that still exist."""
        with self._rlock:
            out: dict[int, str] = {}
            for lo in range(0, len(rows), 500):
                part = [int(r) for r in rows[lo : lo + 500]]
                marks = ",".join("?" * len(part))
                out.update(
                    self._reader.execute(
                        f"SELECT doc, id FROM documents WHERE doc IN ({marks})", part
                    )
                )
            return out

    def docs_matching(self, where_sql: str, params: Sequence[Any]) -> np.ndarray:
        """Row ids of documents whose metadata satisfies a compiled where-clause."""
        with self._rlock:
            rows = self._reader.execute(
                f"SELECT doc FROM documents WHERE {where_sql}", list(params)
            )
            return np.asarray([r[0] for r in rows], dtype=np.int64)

    def bm25(
        self, match: str, limit: int, where_sql: str | None, params: Sequence[Any]
    ) -> list[tuple[int, float]]:
        """(best chunk id, BM25 score) per document, best first. Higher scores are better."""
        filt = f"WHERE {where_sql}" if where_sql else ""
        sql = (
            "SELECT m.chunk, max(m.score) AS best FROM (SELECT rowid AS chunk, -rank AS score "
            "FROM chunks_fts WHERE chunks_fts MATCH ?) AS m JOIN chunks c USING (chunk) "
            f"JOIN documents d ON d.doc = c.doc {filt} GROUP BY c.doc "
            "ORDER BY best DESC, c.doc LIMIT ?"
        )
        with self._rlock:
            rows = self._reader.execute(sql, [match, *params, limit]).fetchall()
        return [(int(c), float(s)) for c, s in rows]

    def integrity_check(self) -> str:
        with self._rlock:
            return str(self._reader.execute("PRAGMA integrity_check").fetchone()[0])


def blobs_to_matrix(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stacked float32 vectors from little-endian blobs; errors name the damaged row."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    joined = b"".join(blobs)
    if len(joined) != len(blobs) * dim * 4:
        bad = next(i for i, b in enumerate(blobs) if len(b) != dim * 4)
        raise IndexStoreError(
            f"stored vector {bad} has {len(blobs[bad])} bytes, expected {dim * 4}"
        )
    return np.frombuffer(joined, dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
