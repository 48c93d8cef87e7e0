"""Reading every vector of a large store in pages, for building caches from scratch.

Reading every changed row at once would hold them all in memory (about three copies of 3 GB for
a million 768-d vectors); a scan hands them over a page at a time instead, all from one snapshot:
it runs in a read transaction on a connection of its own, so the store's other readers are not
held up while a caller spends minutes inserting pages into an HNSW graph.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np

from distilmarco.index.store import Changes, Store, blobs_to_matrix

PAGE = 100_000  # chunk vectors per page (300 MB of 768-d float32)


def scan_changes(store: Store, seq: int, dim: int, page: int = PAGE) -> Iterator[Changes]:
    """Chunks added (with document and vector) and removed after ``seq`` (0: everything), in
    pages of at most ``page`` added chunks, read in one snapshot.

    Every page carries the snapshot's sequence number; the first one also carries the removals.
    At least one page is yielded (empty when nothing changed).
    """
    db = sqlite3.connect(store.path, timeout=store.busy_timeout, isolation_level=None)
    try:
        db.execute("PRAGMA query_only = ON")
        db.execute("BEGIN")
        now = int(db.execute("SELECT seq FROM state").fetchone()[0])
        removed = np.asarray(
            sorted(r[0] for r in db.execute("SELECT chunk FROM tombstones WHERE seq > ?", (seq,))),
            dtype=np.int64,
        )
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
