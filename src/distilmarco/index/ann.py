"""The HNSW cache: approximate nearest chunks, rebuilt from the store whenever in doubt.

Library: FAISS (``IndexHNSWSQ``, vectors stored as float16), chosen by measurement. Clustered
768-d unit vectors (``benchmarks/bench_index.clustered``), 100k of them, M 16, ef_add 128, one
query thread, 300 queries, recall@10 after rescoring 40 candidates, p50 per query:

=========================  =======  ==================  ==================
100k vectors               build    ef 96               ef 128
=========================  =======  ==================  ==================
usearch f16                76 s     1.56 ms, 0.922      2.00 ms, 0.955
usearch i8 (scaled rows)   70 s     1.48 ms, 0.918      1.76 ms, 0.952
FAISS float16 (*)          120 s    0.93 ms, 0.946      1.23 ms, 0.971
FAISS 8-bit SQ             78 s     0.77 ms, 0.947      0.97 ms, 0.972
FAISS flat float32         69 s     0.86 ms, 0.946      1.12 ms, 0.971
=========================  =======  ==================  ==================

(*) measured while another job held a core. FAISS answers about twice as fast at the same beam
and reaches a given recall with a smaller one; at 1M (8-bit SQ, shared CPU) it held recall 0.954
at ef 256 in 3.0 ms, where usearch f16 needed 5.8 ms for 0.943. Float16 rather than 8-bit keeps
the rescoring bound of ``rescore.py`` exact and needs no training.

FAISS's HNSW cannot remove vectors, so removal is a tombstone: the slot stays in the graph (still
a stepping stone) and a bitmap keeps it out of results; once a quarter of the slots are dead the
graph is rebuilt from the live vectors it holds. Keys (chunk ids) live in a side array, slot ->
chunk id.

File format (never pickle): FAISS's own serialisation of the graph (its stored vectors last), the
slot -> key array (int64, little endian), the tombstone bitmap, then a trailer: a JSON header
(store id, sequence covered, count, dimension, metric, section sizes, two xxh3 checksums), its
length (8 bytes, little endian) and ``MAGIC``. Written to a temporary file, fsynced, renamed over
the old one, folder fsynced. Loading checks the checksum of everything FAISS follows (links,
levels, offsets) and of our keys before FAISS reads a byte, then maps the graph in place: FAISS
reads the file from its start, and the trailer keeps our header out of its way. The stored
vectors (90% of the file) are checked then too when small, else on a background thread (see
``AnnIndex.load``). 1M vectors, cold page cache, fresh process: first ``search_vector`` 2.2 s
(load 0.12 s, first graph search 0.9 s while the check runs) vs 3.4 s when one checksum over the
whole file came first.
"""

from __future__ import annotations

import functools
import json
import logging
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import IndexStoreError
from distilmarco.index.ann_file import (
    MAGIC,
    AnnStamp,
    checksum,
    faiss_module,
    fsync_dir,
    read_graph,
    read_header,
    remove_orphans,
    structure_digest,
)

log = logging.getLogger(__name__)

METRICS = ("cosine", "dot", "euclidean")  # manhattan: exact search only
CONNECTIVITY = 16
EXPANSION_ADD = 128
# Search beam (ef) by index size: a bigger graph needs a wider beam for the same recall. Recall@10
# against exact search on clustered 768-d vectors (bench_index.clustered; M 16, ef_add 128,
# float16): 50k (300 queries): 0.925 / 0.953 / 0.968 / 0.979 at ef 64 / 80 / 96 / 112; 100k
# (300): 0.888 / 0.922 / 0.946 / 0.961 / 0.971 / 0.980 at ef 64 / 80 / 96 / 112 / 128 / 160; 1M
# (500, make bench): 0.870 / 0.906 / 0.933 / 0.960 / 0.970 / 0.974 / 0.980 at ef 128 / 160 / 192
# / 256 / 288 / 320 / 384. The smallest beam that held 0.95 with about 0.015 to spare anchors
# each size; between anchors ef grows linearly in log(size), constant beyond the last. Query
# cost grows about linearly with ef.
EF_BY_SIZE = ((50_000, 96), (100_000, 128), (1_000_000, 288))
EXPANSION_SEARCH: int | None = None  # a fixed ef instead (benchmarks set it)
PARALLEL_ADD_MIN = 20_000  # vectors per add() call from which insertion uses every thread
COMPACT_DEAD_FRACTION = 0.25  # rebuild the graph once this share of its slots are tombstones
VERIFY_NOW_BYTES = 64 << 20  # stored vectors up to this size are checked before use, not after


class AnnIndex:
    """HNSW over chunk vectors keyed by chunk id (FAISS, float16 storage, tombstoned removal).

    Thread-safe: one lock serialises changes and searches (FAISS's graph must not change under
    a search)."""

    def __init__(self, dimension: int, similarity: str, *, store_id: str, seq: int = 0) -> None:
        if similarity not in METRICS:
            raise IndexStoreError(
                f"ANN search supports similarities {list(METRICS)}, not {similarity!r}; "
                "use exact search"
            )
        self.dimension = dimension
        self.similarity = similarity
        self.store_id = store_id
        self.seq = seq
        self._lock = threading.RLock()
        self._graph = _new_graph(dimension, similarity)
        self._keys = np.zeros(0, np.int64)  # slot -> chunk id
        self._dead = np.zeros(0, bool)  # slot -> tombstoned
        self._n_dead = 0
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # sorted live keys, their slots
        self._selector: Any = None  # search parameters excluding tombstones, built on demand
        self._mapped = False  # the graph is a read-only view of its file: copy before changing
        self._verifier: threading.Thread | None = None  # checks the stored vectors after load
        self.damaged: str | None = None  # why the stored vectors failed that check

    def __len__(self) -> int:
        return len(self._keys) - self._n_dead

    @property
    def mapped(self) -> bool:
        """True while the graph is searched in place from its memory-mapped file."""
        return self._mapped

    @property
    def slots(self) -> int:
        """Vectors in the graph, tombstones included."""
        return len(self._keys)

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
        with self._lock:
            if len(np.unique(keys)) != len(keys) or self.contains_many(keys).any():
                raise IndexStoreError("ANN add: a chunk id is already in the index or repeated")
            self._writable()
            with _threads(0 if len(keys) >= PARALLEL_ADD_MIN else 1):
                self._graph.add(vectors)
            self._keys = np.concatenate([self._keys, keys])
            self._dead = np.concatenate([self._dead, np.zeros(len(keys), bool)])
            self._changed()

    def remove(self, keys: np.ndarray) -> None:
        """Tombstone the vectors of these chunk ids (absent ids are ignored)."""
        with self._lock:
            slots = self._slots_of(np.asarray(keys, dtype=np.int64))
            slots = slots[slots >= 0]
            if not len(slots):
                return
            self._dead[slots] = True
            self._n_dead = int(self._dead.sum())
            self._changed()
            if self._n_dead > COMPACT_DEAD_FRACTION * len(self._keys):
                self._compact()

    def contains_many(self, keys: np.ndarray) -> np.ndarray:
        """Membership of every key, as one boolean array."""
        with self._lock:
            return self._slots_of(np.asarray(keys, dtype=np.int64)) >= 0

    def keys(self) -> np.ndarray:
        with self._lock:
            return self._keys[~self._dead].copy()

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        """Chunk ids of (approximately) the ``count`` nearest vectors, nearest first."""
        return self.search_scored(query, count)[0]

    def search_scored(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids of (approximately) the ``count`` nearest vectors, nearest first, and their
        approximate similarity (higher is better, as ``search.similarity_scores``): computed on
        the float16 copies, so off by about 1e-3 for unit vectors; rescore before reporting."""
        with self._lock:
            live = len(self)
            if live == 0 or count <= 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            count = min(count, live)
            ef = max(EXPANSION_SEARCH or expansion_for(live), count)
            q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
            if self._n_dead:
                params = self._search_params()
                params.efSearch = ef
                scores, slots = self._graph.search(q, count, params=params)
            else:
                self._graph.hnsw.efSearch = ef
                scores, slots = self._graph.search(q, count)
            slots, scores = slots[0], scores[0]
            found = slots >= 0  # fewer than ``count`` reachable
            keys = self._keys[slots[found]]  # under the lock: compaction renumbers slots
        scores = scores[found].astype(np.float32)
        if self.similarity == "euclidean":  # FAISS reports squared distances
            return keys, -np.sqrt(np.maximum(scores, 0.0))
        return keys, scores

    # --- internals -----------------------------------------------------------------------------

    def _writable(self) -> None:
        """Copy a memory-mapped graph into memory: FAISS aborts the process (not an exception)
        when a viewed graph is changed."""
        if self._mapped:
            faiss = faiss_module()
            self._graph = faiss.deserialize_index(faiss.serialize_index(self._graph))
            self._mapped = False

    def _changed(self) -> None:
        self._lookup = None
        self._selector = None

    def _slots_of(self, keys: np.ndarray) -> np.ndarray:
        """The live slot of each key, -1 where absent."""
        if self._lookup is None:
            live = np.flatnonzero(~self._dead)
            order = np.argsort(self._keys[live], kind="stable")
            self._lookup = (self._keys[live][order], live[order])
        sorted_keys, sorted_slots = self._lookup
        at = np.searchsorted(sorted_keys, keys)
        at = np.minimum(at, max(len(sorted_keys) - 1, 0))
        hit = (sorted_keys[at] == keys) if len(sorted_keys) else np.zeros(len(keys), bool)
        return np.where(hit, sorted_slots[at] if len(sorted_keys) else -1, -1)

    def _search_params(self) -> Any:
        if self._selector is None:
            faiss = faiss_module()
            bits = np.packbits(~self._dead, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self._dead), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector)
            self._selector = (params, selector, bits)  # FAISS keeps pointers, not references
        return self._selector[0]

    def _compact(self) -> None:
        """Rebuild the graph from the live vectors it holds (float16 values, kept exactly)."""
        live = np.flatnonzero(~self._dead)
        log.info("compacting the ANN graph: %d live of %d slots", len(live), len(self._keys))
        vectors = self._graph.reconstruct_batch(live.astype(np.int64)) if len(live) else None
        keys = self._keys[live]
        self._graph, self._mapped = _new_graph(self.dimension, self.similarity), False
        self._keys, self._dead, self._n_dead = np.zeros(0, np.int64), np.zeros(0, bool), 0
        self._changed()
        if vectors is not None:
            self.add(keys, vectors)

    # --- persistence ---------------------------------------------------------------------------

    @property
    def stamp(self) -> AnnStamp:
        return AnnStamp(self.store_id, self.seq, len(self), self.dimension, self.similarity)

    def save(self, path: Path) -> None:
        """Atomically replace ``path``: temp file, fsync, rename, fsync the folder. Refuses an
        index whose vectors failed their background check (it would launder the damage)."""
        if not self.wait_verified():
            raise IndexStoreError(f"not saving a damaged ANN cache: {self.damaged}")
        faiss = faiss_module()
        remove_orphans(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
        try:
            # mkstemp makes the file private (0600); readers in other accounts need what SQLite
            # gives the database: the old file's mode, else rw-r--r--.
            os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
            with os.fdopen(fd, "w+b") as f, self._lock:
                writer = faiss.PyCallbackIOWriter(f.write)
                faiss.write_index(self._graph, writer)
                del writer  # flushes its buffer
                graph_bytes = f.tell()
                f.write(self._keys.astype("<i8").tobytes())
                f.write(np.packbits(self._dead, bitorder="little").tobytes())
                payload_bytes = f.tell()
                f.flush()
                # FAISS writes the stored vectors last: graph_bytes - their size is where they start
                vectors_at = graph_bytes - self._graph.ntotal * self._code_size()
                with mmap.mmap(f.fileno(), payload_bytes, access=mmap.ACCESS_READ) as data:
                    view = memoryview(data)
                    try:
                        structure = structure_digest(view, vectors_at, graph_bytes)
                        vectors = checksum(view[vectors_at:graph_bytes]).intdigest()
                    finally:
                        view.release()
                header = json.dumps(
                    {
                        **self.stamp.__dict__,
                        "slots": len(self._keys),
                        "graph_bytes": graph_bytes,
                        "vectors_at": vectors_at,
                        "payload_bytes": payload_bytes,
                        "xxh3_structure": structure,
                        "xxh3_vectors": vectors,
                        "library": f"faiss {faiss.__version__}",
                    }
                ).encode()
                f.seek(payload_bytes)
                f.write(header + struct.pack("<Q", len(header)) + MAGIC)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> AnnIndex:
        """Verify a file, then search its graph in place (memory-mapped); IndexStoreError says
        why it cannot be trusted.

        Everything FAISS follows (graph links, levels, offsets) and our keys are checked before
        FAISS reads a byte. The stored vectors, 90% of a big file, are checked now if small and
        otherwise on a background thread (``wait_verified``, ``damaged``): a damaged vector can
        only mislead the search about candidates (every reported score is recomputed from the
        store), and its discovery makes the caches rebuild. So a cold 1M-vector file is searched
        after reading about 10% of it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise IndexStoreError(f"ANN file {path} is missing") from exc
        data: mmap.mmap | None = None
        try:  # everything below reads this one inode, even if a save renames over ``path``
            with open(fd, "rb", closefd=False) as f:
                header = read_header(path, f)
            if os.fstat(fd).st_size != header["payload_bytes"] + header["_trailer"]:
                raise IndexStoreError(f"ANN file {path} has the wrong length")
            lo, hi = header["vectors_at"], header["graph_bytes"]
            if not 0 <= lo <= hi <= header["payload_bytes"]:
                raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
            data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            payload = memoryview(data)[: header["payload_bytes"]]
            try:
                if structure_digest(payload, lo, hi) != header["xxh3_structure"]:
                    raise IndexStoreError(f"ANN file {path} is corrupt (checksum mismatch)")
                now = hi - lo <= VERIFY_NOW_BYTES
                if now and checksum(payload[lo:hi]).intdigest() != header["xxh3_vectors"]:
                    raise IndexStoreError(f"ANN file {path} is corrupt (vector checksum mismatch)")
                ann = cls._from_payload(path, header, payload, fd)
            finally:
                payload.release()
            if not now:
                ann._verify_later(path, data, lo, hi, header["xxh3_vectors"])
                data = None  # the thread closes it
            return ann
        finally:
            if data is not None:
                data.close()
            os.close(fd)

    def wait_verified(self, timeout: float | None = None) -> bool:
        """Wait for the background check of the stored vectors; False if they are damaged."""
        if self._verifier is not None:
            self._verifier.join(timeout)
        return self.damaged is None

    def _verify_later(self, path: Path, data: mmap.mmap, lo: int, hi: int, want: int) -> None:
        def check() -> None:
            view = memoryview(data)[lo:hi]
            try:
                if checksum(view).intdigest() != want:
                    self.damaged = f"ANN file {path} is corrupt (vector checksum mismatch)"
                    log.warning("%s; the cache will be rebuilt", self.damaged)
            finally:
                view.release()
                data.close()

        self._verifier = threading.Thread(target=check, name="ann-verify", daemon=True)
        self._verifier.start()

    def _code_size(self) -> int:
        return int(faiss_module().downcast_index(self._graph.storage).code_size)

    @classmethod
    def _from_payload(
        cls, path: Path, header: dict[str, Any], payload: memoryview, fd: int
    ) -> AnnIndex:
        slots, graph_bytes = header["slots"], header["graph_bytes"]
        if graph_bytes + 8 * slots + -(-slots // 8) != len(payload):
            raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
        ann = cls(
            header["dimension"], header["metric"], store_id=header["store_id"], seq=header["seq"]
        )
        try:
            graph, ann._mapped = read_graph(payload[:graph_bytes], fd)
        except RuntimeError as exc:
            raise IndexStoreError(f"ANN file {path} could not be read: {exc}") from exc
        # copies, no views: ``payload`` is released when this returns (or raises)
        keys = np.frombuffer(payload[graph_bytes : graph_bytes + 8 * slots], "<i8").astype(np.int64)
        dead = np.unpackbits(
            np.frombuffer(payload[graph_bytes + 8 * slots :], np.uint8), bitorder="little"
        )[:slots].astype(bool)
        if graph.ntotal != slots or graph.d != header["dimension"]:
            raise IndexStoreError(
                f"ANN file {path} holds {graph.ntotal} x {graph.d} vectors, its header says "
                f"{slots} x {header['dimension']}"
            )
        ann._graph = graph
        if graph_bytes - header["vectors_at"] != slots * ann._code_size():
            raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
        if slots - int(dead.sum()) != header["count"]:
            raise IndexStoreError(f"ANN file {path}: live count disagrees with its header")
        ann._keys, ann._dead = keys, dead
        ann._n_dead = int(dead.sum())
        return ann


def expansion_for(size: int) -> int:
    """The search beam (ef) for an index of ``size`` vectors (``EF_BY_SIZE``, log-interpolated)."""
    return _expansion_for(size, EF_BY_SIZE)


@functools.lru_cache(maxsize=64)
def _expansion_for(size: int, anchors: tuple[tuple[int, int], ...]) -> int:
    """(Cached: numpy's interpolation costs about 0.1 ms, a tenth of a query at 100k.)"""
    sizes = np.log([n for n, _ in anchors])
    return int(np.rint(np.interp(np.log(max(size, 1)), sizes, [ef for _, ef in anchors])))


def _new_graph(dimension: int, similarity: str) -> Any:
    faiss = faiss_module()
    metric = faiss.METRIC_L2 if similarity == "euclidean" else faiss.METRIC_INNER_PRODUCT
    graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, CONNECTIVITY, metric)
    graph.hnsw.efConstruction = EXPANSION_ADD
    return graph


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """FAISS's OpenMP threads for a block (0: all); its own runtime, not torch's."""
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
