"""The read side of the store: every query that only reads, on a connection of its own so reads
never wait behind a writer that waits for the lock. ``Store`` owns one (``store.reader``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilmarco.errors import IndexStoreError
from distilmarco.index.filters import SqlFilter
from distilmarco.index.scoring import Ranked
from distilmarco.index.storage import Counts, StoredDocument

if TYPE_CHECKING:
    from distilmarco.index.store import Store


@dataclass(frozen=True)
class Changes:
    """What happened after a sequence number: chunks added (with doc and vector) and removed."""

    seq: int
    added: np.ndarray  # (A,) int64 chunk ids, ascending
    added_docs: np.ndarray  # (A,) int64 document row ids
    vectors: np.ndarray  # (A, D) float32
    removed: np.ndarray  # (R,) int64 chunk ids


@dataclass(frozen=True)
class Passage:
    """A hit's passage: ``text`` is ``document[start:end]``, read alone (``substr`` counts
    characters, as Python slicing does)."""

    doc_id: str
    start: int
    end: int
    text: str
    metadata_json: str


@dataclass(frozen=True)
class Candidates:
    """Live chunks among those asked for (in the order asked), with their document row ids,
    float32 vectors and passages, read in one snapshot."""

    chunks: np.ndarray  # (C,) int64 chunk ids
    docs: np.ndarray  # (C,) int64 document row ids
    vectors: np.ndarray  # (C, D) float32
    passages: dict[int, Passage]


READER_CACHE_KIB = 65536  # the reading connection's page cache (SQLite's default: 2,000 KiB)
PAGE = 100_000  # chunk vectors per page of a scan (300 MB of 768-d float32)
_IN_BATCH = 500  # ids bound per "IN (...)" statement (SQLite allows 32,766 variables)
_PASSAGE = "d.id, c.start, c.end, substr(d.text, c.start + 1, c.end - c.start), d.metadata"


class StoreReader:
    """Reading queries over one index file; thread-safe (one lock)."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout  # also for the scans' own connections
        self._rlock = threading.RLock()
        self._db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA query_only = ON")
            # Room for the B-trees' inner pages at a million chunks, so that each of a search's
            # random rows costs one page read.
            self._db.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._rlock:
            self._db.close()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """The reading connection's lock; SQLite errors become ``IndexStoreError``."""
        with self._rlock:
            try:
                yield
            except sqlite3.DatabaseError as exc:
                raise IndexStoreError(
                    f"reading {self.path} failed: {exc}; the file may be damaged (check it with "
                    "PRAGMA integrity_check, restore a backup or rebuild the index)"
                ) from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same snapshot."""
        with self._reading():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def _read_one(self) -> Iterator[sqlite3.Connection]:
        """The reading connection for one statement, which SQLite runs as its own transaction."""
        with self._reading():
            yield self._db

    def meta(self) -> dict[str, str]:
        with self._reading():
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def seq(self) -> tuple[int, int]:
        """(sequence number, highest sequence whose tombstones were pruned)."""
        with self._reading():
            seq, pruned = self._db.execute("SELECT seq, pruned FROM state").fetchone()
        return int(seq), int(pruned)

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
        with self._reading():
            found: dict[str, str] = {}
            for lo in range(0, len(ids), _IN_BATCH):
                part = list(ids[lo : lo + _IN_BATCH])
                marks = ",".join("?" * len(part))
                found.update(
                    self._db.execute(
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
        with self._reading():
            return existing_ids(self._db, ids)

    def counts(self) -> Counts:
        with self.read() as db:
            seq = db.execute("SELECT seq FROM state").fetchone()[0]
            n = [
                db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("documents", "chunks", "vectors", "chunks_fts")
            ]
        return Counts(int(seq), *map(int, n))

    def document_count(self) -> int:
        with self._reading():
            return int(self._db.execute("SELECT count(*) FROM documents").fetchone()[0])

    def chunk_count(self) -> tuple[int, int]:
        """(sequence, number of chunks) in one snapshot; cheaper than ``counts``."""
        with self.read() as db:
            seq = db.execute("SELECT seq FROM state").fetchone()[0]
            n = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(seq), int(n)

    def metadata_keys(self) -> list[str]:
        with self._reading():
            return [r[0] for r in self._db.execute("SELECT key FROM metadata_keys ORDER BY key")]

    def candidates(self, chunks: Sequence[int] | np.ndarray, dim: int) -> Candidates:
        """The live ones of ``chunks`` with their vectors and passages, in one snapshot, so that
        search needs no second query for the winners' text. Up to ``_IN_BATCH`` chunks are one
        statement, a snapshot of its own, which saves the round trips of BEGIN and COMMIT."""
        with self.read() if len(chunks) > _IN_BATCH else self._read_one() as db:
            found: dict[int, tuple[int, bytes]] = {}
            passages: dict[int, Passage] = {}
            for lo in range(0, len(chunks), _IN_BATCH):
                part = [int(c) for c in chunks[lo : lo + _IN_BATCH]]
                marks = ",".join("?" * len(part))
                for chunk, doc, blob, *passage in db.execute(
                    f"SELECT c.chunk, c.doc, v.vector, {_PASSAGE} FROM chunks c "
                    "JOIN vectors v USING (chunk) JOIN documents d ON d.doc = c.doc "
                    f"WHERE c.chunk IN ({marks})",
                    part,
                ):
                    found[chunk] = (doc, blob)
                    passages[chunk] = Passage(*passage)
        live = [int(c) for c in chunks if int(c) in found]
        docs = np.fromiter((found[c][0] for c in live), dtype=np.int64, count=len(live))
        vectors = blobs_to_matrix([found[c][1] for c in live], dim)
        return Candidates(np.asarray(live, dtype=np.int64), docs, vectors, passages)

    def passages(self, chunks: Sequence[int] | np.ndarray) -> dict[int, Passage]:
        """chunk id -> its passage, for the live ones of ``chunks``."""
        with self._reading():
            out: dict[int, Passage] = {}
            for lo in range(0, len(chunks), _IN_BATCH):
                part = [int(c) for c in chunks[lo : lo + _IN_BATCH]]
                marks = ",".join("?" * len(part))
                for chunk, *passage in self._db.execute(
                    f"SELECT c.chunk, {_PASSAGE} FROM chunks c "
                    f"JOIN documents d USING (doc) WHERE c.chunk IN ({marks})",
                    part,
                ):
                    out[int(chunk)] = Passage(*passage)
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
        with self._reading():
            out: dict[int, str] = {}
            for lo in range(0, len(rows), _IN_BATCH):
                part = [int(r) for r in rows[lo : lo + _IN_BATCH]]
                marks = ",".join("?" * len(part))
                out.update(
                    self._db.execute(f"SELECT doc, id FROM documents WHERE doc IN ({marks})", part)
                )
            return out

    def docs_matching(self, where: SqlFilter) -> np.ndarray:
        """Row ids of documents whose metadata satisfies a compiled where-clause."""
        with self._reading():
            rows = self._db.execute(f"SELECT doc FROM documents WHERE {where.sql}", where.params)
            return np.asarray([r[0] for r in rows], dtype=np.int64)

    def bm25(self, match: str, limit: int, where: SqlFilter | None) -> Ranked:
        """The best chunk of each of the ``limit`` best documents by BM25 (higher is better)."""
        filt = f"WHERE {where.sql}" if where else ""
        params = where.params if where else ()
        sql = (
            "SELECT m.chunk, max(m.score) AS best FROM (SELECT rowid AS chunk, -rank AS score "
            "FROM chunks_fts WHERE chunks_fts MATCH ?) AS m JOIN chunks c USING (chunk) "
            f"JOIN documents d ON d.doc = c.doc {filt} GROUP BY c.doc "
            "ORDER BY best DESC, c.doc LIMIT ?"
        )
        with self._reading():
            rows = self._db.execute(sql, [match, *params, limit]).fetchall()
        return Ranked(np.asarray([c for c, _ in rows], np.int64), np.asarray([s for _, s in rows]))

    def integrity_check(self) -> str:
        with self._reading():
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def scan(self, seq: int, dim: int, page: int = PAGE) -> Iterator[Changes]:
        """Chunks added (with document and vector) and removed after ``seq`` (0: everything), in
        pages of at most ``page`` added chunks, all from one snapshot.

        A scan runs on a connection of its own, so other readers are not held up while a caller
        spends minutes on the pages, and hands them over one at a time so that a million vectors
        are never all in memory at once. Every page carries the snapshot's sequence number; the
        first one also carries the removals. At least one page is yielded (empty when nothing
        changed).
        """
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            db.execute("PRAGMA query_only = ON")
            db.execute("BEGIN")
            now = int(db.execute("SELECT seq FROM state").fetchone()[0])
            tombs = db.execute("SELECT chunk FROM tombstones WHERE seq > ?", (seq,))
            removed = np.asarray(sorted(r[0] for r in tombs), dtype=np.int64)
            cursor = db.execute(
                "SELECT c.chunk, c.doc, v.vector FROM chunks c JOIN vectors v USING (chunk) "
                "WHERE c.seq > ? ORDER BY c.chunk",
                (seq,),
            )
            first = True
            while True:
                rows = cursor.fetchmany(page)
                if not rows and not first:
                    break
                yield Changes(
                    seq=now,
                    added=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                    added_docs=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)),
                    vectors=blobs_to_matrix([r[2] for r in rows], dim),
                    removed=removed if first else np.zeros(0, np.int64),
                )
                first = False
                if len(rows) < page:
                    break
            db.execute("COMMIT")
        finally:
            db.close()


def scan_changes(store: Store, seq: int, dim: int, page: int = PAGE) -> Iterator[Changes]:
    """``StoreReader.scan`` of ``store``'s reader (what the caches catch up from)."""
    return store.reader.scan(seq, dim, page)


def merge_pages(pages: list[Changes]) -> Changes:
    """The pages of one scan as one ``Changes`` (a single copy of the vectors)."""
    if len(pages) == 1:
        return pages[0]
    return Changes(
        seq=pages[0].seq,
        added=np.concatenate([p.added for p in pages]),
        added_docs=np.concatenate([p.added_docs for p in pages]),
        vectors=np.concatenate([p.vectors for p in pages]),
        removed=pages[0].removed,
    )


def existing_ids(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
    """External id -> document row id, for the ids that exist (on any connection)."""
    found: dict[str, int] = {}
    for lo in range(0, len(ids), _IN_BATCH):
        part = list(ids[lo : lo + _IN_BATCH])
        marks = ",".join("?" * len(part))
        found.update(
            db.execute(f"SELECT id, doc FROM documents WHERE id IN ({marks})", part).fetchall()
        )
    return found


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
