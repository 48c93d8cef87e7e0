"""``SqliteStorage``: the ``Storage`` of an embedded index, one SQLite file (``Store``, the truth)
plus the caches search builds from it (an in-memory matrix and an HNSW file, ``Caches``) and the
``Searcher`` that plans over both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from distilmarco.errors import InputError
from distilmarco.index.ann import AnnConfig, AnnFileStats
from distilmarco.index.caches import Caches
from distilmarco.index.matrix import MATRIX_DTYPES
from distilmarco.index.searcher import ANN_POLICIES, AnnPolicy, Searcher
from distilmarco.index.storage import (
    Counts,
    DocumentRow,
    ModelCheck,
    StoredDocument,
    VectorSpace,
)
from distilmarco.index.store import Store


class SqliteStorage:
    """One index file and its search caches. ``space`` says the vectors' length and similarity
    while the file records none yet (a new index: the encoder's)."""

    def __init__(
        self,
        path: Path,
        space: Callable[[], VectorSpace],
        *,
        ann: AnnPolicy = "auto",
        matrix_dtype: str = "float32",
        busy_timeout: float = 30.0,
        create: bool = True,
        ann_config: AnnConfig | None = None,
    ) -> None:
        if ann not in ANN_POLICIES:
            raise InputError(f"ann {ann!r} is not one of 'auto', 'always', 'never'")
        if matrix_dtype not in MATRIX_DTYPES:
            raise InputError(
                f"matrix_dtype {matrix_dtype!r} is not one of {', '.join(MATRIX_DTYPES)}"
            )
        self.path = path
        self.ann_policy: AnnPolicy = ann
        self.matrix_dtype = matrix_dtype
        self.ann_config = ann_config or AnnConfig()  # how the HNSW cache builds and searches
        self.db = Store(path, busy_timeout=busy_timeout, create=create)
        self._space = space
        self._caches: Caches | None = None
        self._searcher: Searcher | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def caches(self) -> Caches:
        """The matrix and ANN caches, built on first use for the recorded (or given) space."""
        if self._caches is None:
            space = self._space()
            ann_path = self.path.with_name(self.path.name + ".ann")
            self._caches = Caches(
                self.db,
                space.dimension,
                space.similarity,
                ann_path,
                self.matrix_dtype,
                self.ann_config,
            )
        return self._caches

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            self._searcher = Searcher(self.db, self.caches, self.ann_policy)
        return self._searcher

    # --- identity and bookkeeping ---------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return self.db.meta()

    def sequence(self) -> int:
        return self.db.seq()[0]

    def counts(self) -> Counts:
        return self.db.reader.counts()

    def document_count(self) -> int:
        return self.db.reader.document_count()

    def size_bytes(self) -> int:
        files = (self.path, Path(f"{self.path}-wal"))
        return sum(p.stat().st_size for p in files if p.exists())

    def cache_stats(self) -> AnnFileStats:
        if "dimension" not in self.meta():
            return AnnFileStats()
        return self.caches.ann_file_stamp()

    # --- writing --------------------------------------------------------------------------------

    def put(
        self,
        rows: Sequence[DocumentRow],
        *,
        replace: bool,
        meta: Mapping[str, str] | None = None,
        check: ModelCheck | None = None,
    ) -> int:
        return self.db.put(rows, replace=replace, meta=meta, check=check)

    def delete(self, ids: Sequence[str]) -> int:
        return self.db.delete(ids)

    def replace_passages(
        self, rows: Sequence[DocumentRow], meta: Mapping[str, str], expect_seq: int
    ) -> None:
        self.db.replace_passages({r.id: r.chunks for r in rows}, meta, expect_seq)
        self._caches = self._searcher = None  # rebuilt for the new dimension and similarity

    def set_busy_timeout(self, seconds: float) -> None:
        self.db.set_busy_timeout(seconds)

    # --- reading --------------------------------------------------------------------------------

    def get(self, id: str) -> StoredDocument | None:
        return self.db.reader.get(id)

    def documents(self) -> Iterator[StoredDocument]:
        return self.db.reader.iter_documents()

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        return self.db.reader.content_hashes(list(ids))

    def passage_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.db.reader.doc_vectors(list(ids), self.caches.dimension)

    def document_means(self) -> tuple[list[str], np.ndarray]:
        """One pass over the in-memory matrix (dequantised if reduced), not one query per id."""
        m = self.caches.matrix()
        docs, matrix = m.docs[m.alive], m.rows()[m.alive]
        order = np.argsort(docs, kind="stable")
        docs, matrix = docs[order], matrix[order]
        rows, first, counts = np.unique(docs, return_index=True, return_counts=True)
        if not len(rows):
            return [], np.zeros((0, self.caches.dimension), np.float32)
        means = np.add.reduceat(matrix, first, axis=0) / counts[:, None]
        names = self.db.reader.doc_ids(rows)  # a document deleted since the scan is left out
        keep = np.asarray([int(r) in names for r in rows], dtype=bool)
        return [names[int(r)] for r in rows[keep]], means[keep]

    # --- maintenance ----------------------------------------------------------------------------

    def optimize(self, *, if_large: bool = False) -> None:
        """Bring the ANN file up to date with the store and save it, then forget the tombstones it
        covers (caches in other processes older than that rebuild). ``if_large``: only when dense
        search would use HNSW."""
        if if_large and not (self.searcher.use_ann(None) and self.caches.similarity != "manhattan"):
            return
        if self.db.reader.counts().chunks:
            self.caches.ann(persist=False)
            if self.caches.save_ann():
                self.db.prune_tombstones(self.caches.saved_seq)

    def close(self) -> None:
        """Save a caught-up ANN cache if one is in memory (after any compaction of it that is
        running), then close the file."""
        if self._caches is not None:
            self._caches.close()
        self.db.close()
