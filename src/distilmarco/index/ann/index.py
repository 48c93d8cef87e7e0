"""``AnnIndex``: the HNSW cache of chunk vectors, keyed by chunk id, in one or more graph parts.

From ``AnnConfig.part_size`` vectors on, the index is several FAISS graphs (filled in turn, each
compacted on its own), searched in parallel, one thread each, their candidates merged: a search
waits mostly on memory, so two half-size graphs on two cores answer sooner than one on one core.
Cosine and euclidean indexes whose first add is big enough hold their vectors rotated
(``Rotation``) in Panorama graphs. Figures behind these choices: benchmarks/results/ann-notes.md.
"""

from __future__ import annotations

import logging
import mmap
import threading
from concurrent.futures import wait
from pathlib import Path

import numpy as np

from distilmarco.errors import IndexStoreError
from distilmarco.index.ann.compaction import compact_later, compacted_now
from distilmarco.index.ann.config import AnnConfig
from distilmarco.index.ann.ef_search import part_ef_search
from distilmarco.index.ann.file import load_file, save_file
from distilmarco.index.ann.header import AnnStamp
from distilmarco.index.ann.native import search_pool
from distilmarco.index.ann.part import PANORAMA_SIMILARITIES, GraphPart
from distilmarco.index.ann.rotation import Rotation

log = logging.getLogger(__name__)

METRICS = ("cosine", "dot", "euclidean")  # manhattan: exact search only


class AnnIndex:
    """HNSW over chunk vectors keyed by chunk id: one or more ``GraphPart``s.

    Thread-safe: one lock serialises changes and searches (a FAISS graph must not change under a
    search)."""

    def __init__(
        self,
        dimension: int,
        similarity: str,
        *,
        store_id: str,
        seq: int = 0,
        config: AnnConfig | None = None,
    ) -> None:
        if similarity not in METRICS:
            raise IndexStoreError(
                f"ANN search supports similarities {list(METRICS)}, not {similarity!r}; "
                "use exact search"
            )
        self.dimension = dimension
        self.similarity = similarity
        self.store_id = store_id
        self.seq = seq
        self.config = config or AnnConfig()
        self.lock = threading.RLock()
        self._parts: list[GraphPart] = []
        # set once, at the first add (``AnnConfig.rotation_min_bytes``): then every part is Panorama
        self.rotation: Rotation | None = None
        # the private memory a loaded file's graphs are views of: dropped once no part is a view
        self._backing: tuple[mmap.mmap, np.ndarray] | None = None
        self._huge = False
        self._compactions: list[tuple[GraphPart, threading.Thread]] = []  # running, per part
        self.generation = 0  # bumped when a part is swapped for its compacted copy

    def __len__(self) -> int:
        return sum(p.live for p in self._parts)

    @property
    def viewed(self) -> bool:
        """True while a part is a read-only view of the memory its file was read into."""
        return any(p.view for p in self._parts)

    @property
    def on_huge_pages(self) -> bool:
        """True while a loaded graph is searched in memory that asked Linux for 2 MiB pages."""
        return self._huge and self.viewed

    @property
    def slots(self) -> int:
        """Vectors in the graphs, tombstones included."""
        return sum(p.slots for p in self._parts)

    @property
    def parts(self) -> int:
        return len(self._parts)

    @property
    def part_sizes(self) -> list[int]:
        """Live vectors per part."""
        return [p.live for p in self._parts]

    @property
    def part_m(self) -> list[int]:
        """HNSW's M (neighbours per node) of each part."""
        return [p.m for p in self._parts]

    @property
    def part_views(self) -> list[bool]:
        """Per part: still a read-only view (True), or copied into memory by a change."""
        return [p.view for p in self._parts]

    @property
    def part_ef_search(self) -> list[int]:
        """The ``ef_search`` each part is searched with now."""
        return part_ef_search(self.part_sizes, self.config.ef_search)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under chunk ids that are not in the index yet."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(keys):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dimension):
            raise IndexStoreError(
                f"{len(keys)} keys need {len(keys)} x {self.dimension} vectors, got {vectors.shape}"
            )
        with self.lock:
            if len(np.unique(keys)) != len(keys) or self.contains_many(keys).any():
                raise IndexStoreError("ANN add: a chunk id is already in the index or repeated")
            if (
                not self._parts
                and self.rotation is None
                and self.similarity in PANORAMA_SIMILARITIES
                and vectors.nbytes >= self.config.rotation_min_bytes
            ):
                self.rotation = Rotation.fit(vectors)
            if self.rotation is not None:
                vectors = self.rotation.apply(vectors)
            at = 0
            while at < len(keys):
                part = self._part_to_fill()
                take = min(len(keys) - at, self.config.part_size - part.slots)
                part.add(keys[at : at + take], vectors[at : at + take])
                at += take
            self._drop_unused_backing()

    def remove(self, keys: np.ndarray) -> None:
        """Tombstone the vectors of these chunk ids (absent ids are ignored). A part with enough
        of its slots dead is compacted: a big one on a background thread, while the searches go
        on with its tombstones (``compacting``, ``wait_compacted``)."""
        keys = np.asarray(keys, dtype=np.int64)
        with self.lock:
            for part in self._parts:
                part.remove(keys)
            running = [p for p, _ in self._running()]
            for at, part in enumerate(self._parts):
                if not part.due_for_compaction or any(p is part for p in running):
                    continue
                if part.slots < self.config.background_compact_min:
                    self._parts[at] = compacted_now(part)
                    self.generation += 1
                else:
                    thread = compact_later(self, part, self.config.snapshot_batch)
                    self._compactions.append((part, thread))
            self._drop_unused_backing()

    @property
    def compacting(self) -> int:
        """Parts being compacted on background threads now."""
        return len(self._running())

    def wait_compacted(self, timeout: float | None = None) -> bool:
        """Wait for the background compactions; True once none is running."""
        for _, thread in self._running():
            thread.join(timeout)
        return not self.compacting

    def holds(self, part: GraphPart) -> bool:
        """Whether ``part`` is still one of this index's parts (not swapped for a copy)."""
        return any(p is part for p in self._parts)

    def replace_part(self, old: GraphPart, fresh: GraphPart) -> bool:
        """Swap a part for its compacted copy; False if ``old`` is no longer held."""
        with self.lock:
            at = next((i for i, p in enumerate(self._parts) if p is old), None)
            if at is None:
                return False
            self._parts[at] = fresh
            self.generation += 1
            self._drop_unused_backing()
            return True

    def contains_many(self, keys: np.ndarray) -> np.ndarray:
        """Membership of every key, as one boolean array."""
        keys = np.asarray(keys, dtype=np.int64)
        with self.lock:
            found = np.zeros(len(keys), bool)
            for part in self._parts:
                found |= part.slots_of(keys) >= 0
            return found

    def keys(self) -> np.ndarray:
        with self.lock:
            return np.concatenate([p.keys[~p.dead] for p in self._parts] or [np.zeros(0, np.int64)])

    @property
    def score_margin(self) -> float:
        """Relative bound on the error of the similarities ``search_scored`` reports (see
        ``GraphPart.score_margin``), for ``rescore``."""
        return max((p.score_margin for p in self._parts), default=0.0)

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        """Chunk ids of (approximately) the ``count`` nearest vectors, nearest first."""
        return self.search_scored(query, count)[0]

    def search_scored(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids of (approximately) the ``count`` nearest vectors, nearest first, and their
        approximate similarity (higher is better, as ``search.similarity_scores``): computed by
        FAISS on its copies, so off by up to ``score_margin``; rescore before reporting."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        norm_sq = float(q[0] @ q[0])
        with self.lock:
            parts = [p for p in self._parts if p.live]
            if not parts or count <= 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            if self.rotation is not None:
                q = self.rotation.apply_one(q)
            ef_searches = part_ef_search([p.live for p in parts], self.config.ef_search)
            pool = search_pool() if len(parts) > 1 else None
            if pool is None:
                found = [
                    p.search(q, count, ef, norm_sq)
                    for p, ef in zip(parts, ef_searches, strict=True)
                ]
            else:  # this thread takes the first part, the pool the others
                futures = [
                    pool.submit(p.search, q, count, ef, norm_sq)
                    for p, ef in zip(parts[1:], ef_searches[1:], strict=True)
                ]
                try:
                    found = [parts[0].search(q, count, ef_searches[0], norm_sq)]
                except BaseException:
                    wait(futures)  # no part is still being searched once the lock is released
                    raise
                found += [f.result() for f in futures]
        keys = np.concatenate([k for k, _ in found])
        scores = np.concatenate([s for _, s in found]).astype(np.float32)
        if len(found) > 1:
            best = np.argsort(-scores, kind="stable")[:count]
            keys, scores = keys[best], scores[best]
        return keys, scores

    # --- persistence ---------------------------------------------------------------------------

    @property
    def stamp(self) -> AnnStamp:
        return AnnStamp(self.store_id, self.seq, len(self), self.dimension, self.similarity)

    def save(self, path: Path) -> None:
        """Atomically replace ``path``: temp file, fsync, rename, fsync the folder."""
        with self.lock:
            save_file(path, self.stamp, self._parts, self.rotation, self.config.read_chunk_bytes)

    @classmethod
    def load(cls, path: Path, config: AnnConfig | None = None) -> AnnIndex:
        """Read and check a file, then search its graphs in the private memory it was read into;
        IndexStoreError says why it cannot be trusted. Nothing is searched before every byte
        matched its checksum, and later changes to the file cannot reach the search."""
        config = config or AnnConfig()
        loaded = load_file(path, config)
        stamp = loaded.header.stamp
        ann = cls(stamp.dimension, stamp.metric, store_id=stamp.store_id, seq=stamp.seq)
        ann.config, ann.rotation = config, loaded.rotation
        first = 0
        for layout, graph in zip(loaded.header.parts, loaded.graphs, strict=True):
            part = GraphPart(ann.dimension, ann.similarity, config, graph)
            end = first + layout.slots
            part.set_slots(loaded.keys[first:end], loaded.dead[first:end])
            ann._parts.append(part)
            first = end
        ann._backing, ann._huge = (loaded.memory, loaded.raw), loaded.on_huge_pages
        return ann

    # --- internals -----------------------------------------------------------------------------

    def _running(self) -> list[tuple[GraphPart, threading.Thread]]:
        """The compactions still running (in a forked child, none of the parent's are)."""
        with self.lock:
            self._compactions = [(p, t) for p, t in self._compactions if t.is_alive()]
            return list(self._compactions)

    def _part_to_fill(self) -> GraphPart:
        """The part with the fewest slots, or a new one when every part is full."""
        part = min(self._parts, key=lambda p: p.slots, default=None)
        if part is None or part.slots >= self.config.part_size:
            panorama = self.rotation is not None
            part = GraphPart(self.dimension, self.similarity, self.config, panorama=panorama)
            self._parts.append(part)
        return part

    def _drop_unused_backing(self) -> None:
        if self._backing is not None and not self.viewed:
            self._backing, self._huge = None, False
