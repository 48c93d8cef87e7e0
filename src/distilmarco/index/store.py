"""The SQLite store: the source of truth of an index.

One file in WAL mode. Tables: ``documents`` (external id, text, JSON metadata, content hash),
``chunks`` (character span of each passage), ``vectors`` (one float32 blob per chunk),
``chunks_fts`` (FTS5 over the passages, for BM25), ``tombstones`` (chunks removed, with the
sequence that removed them, so caches can catch up) and ``state`` (the sequence number, bumped in
every write transaction). Row ids come from AUTOINCREMENT and are never reused, so a cache keyed by
chunk id can replay the changes since its sequence (``StoreReader.scan``) without ambiguity.

The store knows nothing about models or embeddings: callers hand it finished rows. This module
opens, migrates and writes; the reading queries live in ``reader.py`` (``store.reader``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from distilmarco.errors import IndexBusyError, IndexFullError, IndexStoreError, InputError
from distilmarco.index.reader import StoreReader, existing_ids
from distilmarco.index.storage import ChunkRow as ChunkRow
from distilmarco.index.storage import DocumentRow as DocumentRow
from distilmarco.index.storage import ModelCheck

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


class Store:
    """The writing connection to one index file, and its ``reader``. Thread-safe (one lock per
    connection); many processes may share the file."""

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
        self._lock = threading.RLock()
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
            self.reader = StoreReader(self.path, busy_timeout)
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
        with self._lock:
            self._db.close()
            if hasattr(self, "reader"):
                self.reader.close()

    def _close_quietly(self) -> None:
        with suppress(sqlite3.Error, AttributeError):
            self._db.close()

    # --- transactions ------------------------------------------------------------------------

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another connection's lock before ``IndexBusyError``."""
        with self._lock:
            self.busy_timeout = self.reader.busy_timeout = seconds
            self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def page_count(self) -> int:
        """Pages the file holds now."""
        with self._lock:
            return int(self._db.execute("PRAGMA page_count").fetchone()[0])

    def set_max_pages(self, pages: int | None) -> None:
        """Let the file grow to at most ``pages`` pages (None: SQLite's limit); a write that needs
        more fails as on a full disk (``IndexFullError``), for tests and size-capped deployments."""
        with self._lock:
            self._db.execute(f"PRAGMA max_page_count = {int(pages or 0x3FFFFFFF)}")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: waits up to the busy timeout for the lock).

        SQLite errors become ``IndexStoreError`` (``IndexBusyError`` for a lock held too long,
        ``IndexFullError`` for a full disk); the transaction is always rolled back on failure.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                # SQLite may already have rolled back (a full disk does): ROLLBACK would then
                # raise "no transaction is active" and hide the real error.
                if self._db.in_transaction:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from exc
                raise

    def _error(self, exc: sqlite3.Error) -> IndexStoreError:
        """Our error for a failed write; nothing of the transaction was kept."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return IndexBusyError(
                f"could not lock {self.path} for writing within {self.busy_timeout:g} s ({text}): "
                "another process is writing to it; try again"
            )
        if "full" in text:
            return IndexFullError(
                f"writing to {self.path} failed: {text}; nothing was written, free some disk "
                "space and try again"
            )
        return IndexStoreError(f"writing to {self.path} failed: {text}; nothing was written")

    @staticmethod
    def bump(db: sqlite3.Connection) -> int:
        """Advance the sequence number inside a write transaction and return the new value."""
        db.execute("UPDATE state SET seq = seq + 1 WHERE id = 1")
        return int(db.execute("SELECT seq FROM state WHERE id = 1").fetchone()[0])

    # --- meta --------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return self.reader.meta()

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.write() as db:
            self._set_meta(db, values)
            self.bump(db)

    @staticmethod
    def _set_meta(db: sqlite3.Connection, values: Mapping[str, str]) -> None:
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def seq(self) -> tuple[int, int]:
        """(sequence number, highest sequence whose tombstones were pruned)."""
        return self.reader.seq()

    def chunk_count(self) -> tuple[int, int]:
        """(sequence, number of chunks) in one snapshot (see ``StoreReader``)."""
        return self.reader.chunk_count()

    def document_count(self) -> int:
        return self.reader.document_count()

    # --- writing -----------------------------------------------------------------------------

    def put(
        self,
        rows: Sequence[DocumentRow],
        *,
        replace: bool,
        meta: Mapping[str, str] | None = None,
        check: ModelCheck | None = None,
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
            existing = existing_ids(db, [r.id for r in rows])
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
            existing = existing_ids(db, ids)
            if not existing:
                return 0
            seq = self.bump(db)
            self._delete_docs(db, list(existing.values()), seq)
        return len(existing)

    def replace_passages(
        self,
        chunks_by_id: Mapping[str, Sequence[ChunkRow]],
        meta: Mapping[str, str],
        expect_seq: int,
    ) -> None:
        """Swap the chunks and vectors of the named documents (``reindex``) in one transaction,
        provided nothing was written since ``expect_seq`` (the snapshot the new vectors were made
        from)."""
        with self.write() as db:
            now = int(db.execute("SELECT seq FROM state").fetchone()[0])
            if now != expect_seq:
                raise IndexStoreError(
                    f"{self.path} changed while it was being re-embedded (sequence {expect_seq} "
                    f"-> {now}); nothing was replaced, run reindex again"
                )
            seq = self.bump(db)
            rows = existing_ids(db, list(chunks_by_id))
            for id_, chunks in chunks_by_id.items():
                if id_ not in rows:
                    continue
                self._delete_chunks(db, [rows[id_]], seq)
                text = db.execute("SELECT text FROM documents WHERE doc = ?", (rows[id_],))
                self._insert_chunks(db, rows[id_], text.fetchone()[0], chunks, seq)
            self._set_meta(db, meta)

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

    def backup(self, path: str | Path) -> None:
        """Write a consistent copy of the file, as of now, to ``path`` (which must not exist)."""
        with self._lock:
            self._db.execute("VACUUM INTO ?", (str(path),))

    def prune_tombstones(self, upto: int) -> None:
        """Forget removals up to ``upto`` (once a saved cache covers them); caches older rebuild."""
        with self.write() as db:
            db.execute("DELETE FROM tombstones WHERE seq <= ?", (upto,))
            db.execute("UPDATE state SET pruned = max(pruned, ?) WHERE id = 1", (upto,))


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
