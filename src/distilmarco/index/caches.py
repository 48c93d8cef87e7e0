"""The two rebuildable caches over the store — the exact-search matrix and the HNSW file — and the
rules that keep them honest: each remembers the sequence it covers and catches up with the store's
changes since then (``scan.scan_changes``); a cache older than the pruned tombstones, or an ANN
file that is missing, corrupt, from another store or ahead of it, is rebuilt. The store always
wins.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from distilmarco.errors import IndexStoreError
from distilmarco.index.ann import AnnConfig, AnnEvent, AnnFileStats, AnnIndex, read_stamp
from distilmarco.index.matrix import VectorMatrix
from distilmarco.index.reader import merge_pages, scan_changes
from distilmarco.index.store import Store

log = logging.getLogger(__name__)

# Save the ANN file after catching up at least this many changed chunks (and after rebuilds).
SAVE_AFTER_CHANGES = 2000


class Caches:
    """Lazily built, incrementally caught-up search structures of one index."""

    def __init__(
        self,
        store: Store,
        dimension: int,
        similarity: str,
        ann_path: Path,
        matrix_dtype: str = "float32",
        ann_config: AnnConfig | None = None,
    ) -> None:
        self.store = store
        self.ann_config = ann_config or AnnConfig()
        self.matrix_dtype = matrix_dtype
        self.dimension = dimension
        self.similarity = similarity
        self.ann_path = ann_path
        self._lock = threading.RLock()
        self._matrix: VectorMatrix | None = None
        self._ann: AnnIndex | None = None
        self._ann_saved_seq = -1
        self._ann_saved_generation = 0  # compactions the saved file includes
        self._unsaveable = (-1, -1)  # (seq, generation) whose save failed
        self.last_ann_event = AnnEvent.NOT_LOADED
        self.last_ann_reason: str | None = None  # why it was last rebuilt
        self._chunk_count = (-1, 0)
        self._documents = (-1, 0)  # (sequence, live documents)

    @property
    def store_id(self) -> str:
        return self.store.meta()["store_id"]

    def matrix(self) -> VectorMatrix:
        """The exact-search matrix, caught up with the store."""
        with self._lock:
            seq, pruned = self.store.seq()
            m = self._matrix
            if m is None or m.seq < pruned:
                m = VectorMatrix.empty(self.dimension, self.matrix_dtype)
            if m.seq != seq or self._matrix is None:
                m.apply(merge_pages(list(scan_changes(self.store, m.seq, self.dimension))))
            self._matrix = m
            return m

    def ann(self, *, persist: bool = True) -> AnnIndex:
        """The HNSW cache, loaded from its file (or rebuilt) and caught up with the store."""
        with self._lock:
            loaded = self._ann is None
            ann = self._ann if self._ann is not None else self._load_ann()
            seq, pruned = self.store.seq()
            if 0 < ann.seq < pruned:
                ann = self._fresh_ann("its sequence is older than the store's pruned tombstones")
            changed = 0
            if ann.seq != seq:
                for changes in scan_changes(self.store, ann.seq, self.dimension):
                    ann.remove(changes.removed)
                    new = ~ann.contains_many(changes.added)
                    if new.all():  # the usual case: no copy of the page
                        ann.add(changes.added, changes.vectors)
                    elif new.any():
                        ann.add(changes.added[new], changes.vectors[new])
                    changed += len(changes.added) + len(changes.removed)
                ann.seq = changes.seq
            at, chunks = self.chunk_count() if (loaded or changed) else (-1, 0)
            if at == ann.seq and chunks != len(ann):
                log.warning(
                    "ANN cache holds %d vectors but the store %d chunks; rebuilding",
                    len(ann),
                    chunks,
                )
                self._ann = self._fresh_ann("it disagreed with the store")
                return self.ann(persist=persist)
            self._ann = ann
            caught_up = ann.seq != self._ann_saved_seq and (
                changed >= SAVE_AFTER_CHANGES or self._ann_saved_seq < 0
            )
            if persist and (caught_up or ann.generation != self._ann_saved_generation):
                self.save_ann()
            return ann

    def chunk_count(self) -> tuple[int, int]:
        """(sequence, live chunks), counted once per sequence number."""
        seq, _ = self.store.seq()
        if self._chunk_count[0] != seq:
            self._chunk_count = self.store.chunk_count()
        return self._chunk_count

    def chunks_per_document(self, ann: AnnIndex) -> float:
        """Live chunks over live documents (1.0 when empty) as of ``ann``, caught up by ``ann()``:
        its length is the chunk count, and the documents are counted once per sequence number."""
        if self._documents[0] != ann.seq:
            self._documents = (ann.seq, self.store.document_count())
        return len(ann) / self._documents[1] if self._documents[1] else 1.0

    def save_ann(self) -> bool:
        """Write the in-memory ANN cache to its file (atomically); False if it could not be.

        The file is only a cache: a folder we cannot write to costs a rebuild later, not data.
        """
        with self._lock:
            ann = self._ann
            if ann is None or (ann.seq, ann.generation) == (
                self._ann_saved_seq,
                self._ann_saved_generation,
            ):
                return ann is not None
            generation = ann.generation  # read first: a compaction may finish during the save
            if self._unsaveable == (ann.seq, generation):
                return False  # failed for this very state already: not again on every search
            try:
                ann.save(self.ann_path)
            except (OSError, IndexStoreError) as exc:
                log.warning("could not save the ANN cache to %s: %s", self.ann_path, exc)
                self._unsaveable = (ann.seq, generation)
                return False
            self._ann_saved_seq, self._ann_saved_generation = ann.seq, generation
            log.info("saved ANN cache (%d vectors, seq %d)", len(ann), ann.seq)
            return True

    def close(self) -> None:
        """Let a running compaction of the ANN cache finish (it would be lost with the process),
        then save it."""
        with self._lock:
            ann = self._ann
        if ann is not None and ann.compacting:
            log.info("finishing the compaction of the ANN cache before closing")
            ann.wait_compacted()
        self.save_ann()

    @property
    def saved_seq(self) -> int:
        return self._ann_saved_seq

    def drop(self) -> None:
        """Forget both caches (after a reindex)."""
        with self._lock:
            self._matrix = None
            self._ann = None
            self._ann_saved_seq = -1
            self._ann_saved_generation = 0

    def _load_ann(self) -> AnnIndex:
        try:
            ann = AnnIndex.load(self.ann_path, self.ann_config)
        except IndexStoreError as exc:
            reason = str(exc)
        else:
            seq, _ = self.store.seq()
            if ann.store_id != self.store_id:
                reason = f"ANN file {self.ann_path} belongs to another index"
            elif (ann.dimension, ann.similarity) != (self.dimension, self.similarity):
                reason = f"ANN file {self.ann_path} was built for another model"
            elif ann.seq > seq:
                reason = f"ANN file {self.ann_path} claims sequence {ann.seq} > the store's {seq}"
            else:
                self._ann_saved_seq, self._ann_saved_generation = ann.seq, ann.generation
                self.last_ann_event, self.last_ann_reason = AnnEvent.LOADED, None
                return ann
        return self._fresh_ann(reason)

    def _fresh_ann(self, reason: str) -> AnnIndex:
        log.warning("rebuilding the ANN cache: %s", reason)
        self.last_ann_event, self.last_ann_reason = AnnEvent.REBUILT, reason
        self._ann_saved_seq, self._ann_saved_generation = -1, 0
        return AnnIndex(
            self.dimension, self.similarity, store_id=self.store_id, seq=0, config=self.ann_config
        )

    def ann_file_stamp(self) -> AnnFileStats:
        """What the ANN file on disk says about itself (for stats), without trusting it."""
        file = str(self.ann_path)
        if not self.ann_path.exists():
            return AnnFileStats(file=file, present=False)
        try:
            stamp = read_stamp(self.ann_path)
        except IndexStoreError as exc:
            return AnnFileStats(file=file, present=True, valid=False, error=str(exc))
        seq, _ = self.store.seq()
        return AnnFileStats(
            file=file,
            present=True,
            valid=stamp.store_id == self.store_id,
            seq=stamp.seq,
            vectors=stamp.count,
            stale_by=seq - stamp.seq,
        )
