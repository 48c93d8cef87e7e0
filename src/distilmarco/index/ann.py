"""The HNSW cache: approximate nearest chunks, rebuilt from the store whenever in doubt.

Library: FAISS, chosen by measurement: ``IndexHNSWFlatPanorama`` parts over float32 vectors
rotated onto their principal axes (``ann_part.Rotation``), for cosine and euclidean indexes
whose first add is big enough (``ROTATION_MIN_BYTES``); plain ``IndexHNSWFlat`` otherwise.

Panorama walks the same graph as plain HNSW but reads each candidate a slice at a time and drops
it once a Cauchy-Schwarz bound shows it cannot make the results; after the rotation most of a
vector's length is in its first slice. Measured on a third machine (2 cores of an Intel Xeon,
AVX-512, 105 MiB L3, slower than the second and noisy): 200k of the 1M clustered vectors, one
thread, 300 queries, ef 160: plain 2.00 ms at recall@10 0.969, Panorama 1.11 ms at 0.972
(ef 128: 1.62 ms at 0.946 against 0.96 ms at 0.948). With the query's rotation (0.035 ms with
numpy's BLAS; 0.09-0.11 ms as searches do it, see ``Rotation.apply_one``) and 40 results kept,
as the search asked for then, four passes in shuffled order: plain 1.95-2.18 ms, Panorama
1.43-1.70 ms; at 10 results Panorama 1.25-1.57 ms. The gain depends on how much of
the data's variance the leading axes carry: the first eighth of the axes holds 94% of it in
these synthetic vectors, 54% in 30k real all-MiniLM-L6-v2 embeddings of this project's test
text, where Panorama read 44-59% of each vector (in cache, at that size, it was slower; hence the
size threshold). The rotation costs nothing in answers: distances are kept to float32 rounding,
which ``GraphPart.score_margin`` covers.

The library table below, plain HNSW only, is from the second machine (2 cores of an Intel Xeon
with AVX-512 and VNNI): 200k of the 1M clustered 768-d unit vectors of ``benchmarks/bench_index``
(the first 500k part's), M 16, ef_add 128, one query thread, 300 queries, recall@10 against
exact search, p50 per query:

=============================================  =======  ================  ================
200k vectors                                   build    ef 128            ef 160
=============================================  =======  ================  ================
FAISS float32                                  103 s    1.03 ms, 0.946    1.25 ms, 0.969
FAISS float16 (the choice before)              136 s    1.37 ms, 0.946    1.69 ms, 0.969
hnswlib float32                                94 s     1.00 ms, 0.923    1.24 ms, 0.950
usearch f32                                    189 s    2.40 ms, 0.926    3.01 ms, 0.954
usearch f16                                    113 s    1.75 ms, 0.928    2.07 ms, 0.955
usearch i8 (one global scale, 40 rescored)     54 s     0.87 ms, 0.925    1.03 ms, 0.954
=============================================  =======  ================  ================

At equal recall FAISS float32 is as fast as the fastest (0.953 in 1.04 ms at ef 136; usearch i8
0.954 in 1.03 ms, hnswlib 0.950 in 1.24 ms), and keeps a reported similarity within float32
summation order of the store's, which keeps ``rescore``'s reads to about k. Over the same graph
(a 500k part, ef 175), only the stored copies swapped: float32 1.44 ms, float16 1.69, 8-bit SQ
2.37, 8-bit uniform SQ 1.88, 4-bit SQ 2.57. FAISS's decoding of smaller codes costs more than the
memory they save. The graph's degree does not matter at equal recall: M 16 / 20 / 24 reach 0.953
/ 0.954 / 0.951 in 1.04 / 1.02 / 0.98 ms, M 24 for 37% more build time. (The first choice, on
an AMD Zen 3 without AVX-512, picked FAISS float16 over usearch for the same reasons; it halved
the file, at a cost in speed this CPU shows: parts read from such files are still searched.)

Removal is a tombstone (see ``ann_part.GraphPart``); chunk ids live in a side array per part.

Parts: from ``PART_SIZE`` vectors on, the index is several FAISS graphs (filled in turn, each
compacted on its own), searched in parallel, one thread each, their candidates merged. A search
waits mostly on memory, one vector at a time, so two half-size graphs on two cores answer sooner
than one graph on one core, at about a quarter more CPU per query. 1M clustered 768-d vectors,
graph only, on huge pages (Zen 3, float16): two 500k parts at ef 160 each, 1.47-1.50 ms for
recall@10 0.958; the same two searched one after the other, 2.3-2.4 ms; one 1M graph, 2.0-2.2 ms
at ef 288 (0.969) and 2.1-2.7 ms at ef 256 (0.958, mapped from the file). Building two parts took
678 s, one 1M graph 989 s. On the Xeon, float32, ef 160: one part alone 1.30-1.34 ms, both in
parallel 1.52-1.56 ms (each slows the other a little), both in turn 2.77 ms.

File format (never pickle): FAISS's own serialisation of each part's graph (its stored vectors
last), one after the other; the slot -> key arrays of all parts (int64, little endian); one
tombstone bitmap over all slots; then a trailer: a JSON header (store id, sequence covered, count,
dimension, metric, each part's byte ranges and slot count, two xxh3 checksums), its length (8
bytes, little endian) and ``MAGIC``. Written to a temporary file, fsynced, renamed over the old
one, folder fsynced. Loading checks the checksum of everything FAISS follows (links, levels,
offsets) and of our keys before FAISS reads a byte, then reads each graph as views into the mapped
file (no copy). The stored vectors (90% of the file) are checked then too when small, else on a
background thread, which also moves big graphs onto huge pages (see ``AnnIndex.load``). 1M
vectors, cold page cache, fresh process (one part, before parts): first ``search_vector`` 2.2 s
(load 0.12 s, first graph search 0.9 s while the check runs) vs 3.4 s when one checksum over the
whole file came first.
"""

from __future__ import annotations

import functools
import json
import logging
import mmap
import os
import stat
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import IndexStoreError
from distilmarco.index.ann_file import (
    MAGIC,
    AnnStamp,
    faiss_module,
    fsync_dir,
    huge_page_copy,
    huge_pages_available,
    read_header,
    remove_orphans,
    structure_digest,
    vectors_digest,
    view_graph,
)
from distilmarco.index.ann_part import CONNECTIVITY, PANORAMA_SIMILARITIES, GraphPart, Rotation

log = logging.getLogger(__name__)

METRICS = ("cosine", "dot", "euclidean")  # manhattan: exact search only
# Search beam (ef) by graph size and connectivity (M, the graph's neighbours per node): a bigger
# graph needs a wider beam for the same recall, a better connected one a narrower beam. Recall@10
# against exact search on clustered 768-d vectors (bench_index.clustered; ef_add 128).
# M 16 (float16 copies, whose recall float32 ones match to 0.001 at 200k and 500k): 50k (300
# queries): 0.925 / 0.953 / 0.968 / 0.979 at ef 64 / 80 / 96 / 112; 100k (300): 0.888 / 0.922 /
# 0.946 / 0.961 / 0.971 / 0.980 at ef 64 / 80 / 96 / 112 / 128 / 160; 1M (500, make bench):
# 0.870 / 0.906 / 0.933 / 0.960 / 0.970 / 0.974 / 0.980 at ef 128 / 160 / 192 / 256 / 288 / 320
# / 384.
# M 32 (Panorama over rotated float32 copies, 300 queries): 50k: 0.934 / 0.958 / 0.969 / 0.979
# at ef 40 / 48 / 56 / 64; 100k: 0.907 / 0.936 / 0.948 / 0.970 / 0.978 at ef 40 / 48 / 56 / 64
# / 72; 1M as two 500k parts (ef per part): 0.904 / 0.927 / 0.944 / 0.957 / 0.967 / 0.981 at
# ef 48 / 56 / 64 / 72 / 80 / 96. The 1M anchor is the one whose merged beam (see
# ``MERGED_EF_SCALE``) is that 80; a lone 500k M 32 graph needed about ef 104 for 0.965.
# The smallest beam that held 0.95 with about 0.015 to spare anchors each size; between anchors
# ef grows linearly in log(size), constant beyond the last. Query cost grows about linearly with
# ef. Graphs keep the M they were built with (older files: 16); new ones get ``CONNECTIVITY``.
EF_BY_SIZE = {
    16: ((50_000, 96), (100_000, 128), (1_000_000, 288)),
    32: ((50_000, 56), (100_000, 64), (1_000_000, 148)),
}
# With several parts of equal size each is searched with the beam of its size times this: each
# holds only its share of the global top 10, which it finds with a narrower beam. 1M as two 500k
# float32 parts, whole search (500 queries, recall against exact search): 0.955 / 0.961 / 0.965
# / 0.967 at ef 150 / 160 / 170 / 175 per part, where one lone 500k graph needs ef 192 for 0.953
# (expansion_for(500k) = 240). 0.65 gives ef 156.
MERGED_EF_SCALE = 0.65
EXPANSION_SEARCH: int | None = None  # a fixed ef instead, per part (benchmarks set it)
PART_SIZE = 500_000  # slots per graph part; new vectors open a new part once every part is full
VERIFY_NOW_BYTES = 64 << 20  # stored vectors up to this size are checked before use, not after
# Parts of at least this many slots are compacted on a background thread (a 500k part takes about
# 6 minutes on 2 cores); smaller ones at once, inside the removal that made them due.
BACKGROUND_COMPACT_MIN = 50_000
SNAPSHOT_BATCH = 65_536  # slots a background compaction copies out per hold of the lock
# An index whose first add brings at least this many bytes of vectors fits a ``Rotation`` on
# them, and its parts are Panorama graphs (cosine and euclidean); smaller ones stay plain. In
# the CPU's caches Panorama saves no memory traffic and its bookkeeping costs: 30k real 384-d
# all-MiniLM-L6-v2 embeddings (46 MB), ef 16: 0.15 ms against plain HNSW's 0.09.
ROTATION_MIN_BYTES = 64 << 20  # 21,846 768-d float32 vectors


class AnnIndex:
    """HNSW over chunk vectors keyed by chunk id: one or more ``GraphPart``s.

    Thread-safe: one lock serialises changes and searches (a FAISS graph must not change under a
    search)."""

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
        self._parts: list[GraphPart] = []
        # set once, at the first add (``ROTATION_MIN_BYTES``): then every part is Panorama
        self.rotation: Rotation | None = None
        # the memory viewed graphs live in (the mapped file, or its copy on huge pages): dropped
        # once no part is a view any more, and only after the views themselves
        self._backing: tuple[mmap.mmap, np.ndarray] | None = None
        self._huge = False
        self._verifier: threading.Thread | None = None  # checks the stored vectors after load
        self.damaged: str | None = None  # why the stored vectors failed that check
        self._compactions: list[tuple[GraphPart, threading.Thread]] = []  # running, per part
        self.generation = 0  # bumped when a part is swapped for its compacted copy

    def __len__(self) -> int:
        return sum(p.live for p in self._parts)

    @property
    def mapped(self) -> bool:
        """True while a part is a read-only view: of the mapped file after ``load``, then (big
        files, where Linux has huge pages) of a verified copy on 2 MiB pages."""
        return any(p.view for p in self._parts)

    @property
    def on_huge_pages(self) -> bool:
        """True once a loaded graph is searched from its copy in huge-page memory."""
        return self._huge and self.mapped

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
    def part_connectivity(self) -> list[int]:
        """Neighbours per node (HNSW's M) of each part."""
        return [p.connectivity for p in self._parts]

    @property
    def part_views(self) -> list[bool]:
        """Per part: still a read-only view (True), or copied into memory by a change."""
        return [p.view for p in self._parts]

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
            if (
                not self._parts
                and self.rotation is None
                and self.similarity in PANORAMA_SIMILARITIES
                and vectors.nbytes >= ROTATION_MIN_BYTES
            ):
                self.rotation = Rotation.fit(vectors)
            if self.rotation is not None:
                vectors = self.rotation.apply(vectors)
            at = 0
            while at < len(keys):
                part = self._part_to_fill()
                take = min(len(keys) - at, PART_SIZE - part.slots)
                part.add(keys[at : at + take], vectors[at : at + take])
                at += take
            self._drop_unused_backing()

    def remove(self, keys: np.ndarray) -> None:
        """Tombstone the vectors of these chunk ids (absent ids are ignored). A part with a
        quarter of its slots dead is compacted: a big one on a background thread, while the
        searches go on with its tombstones (``compacting``, ``wait_compacted``)."""
        keys = np.asarray(keys, dtype=np.int64)
        with self._lock:
            for part in self._parts:
                part.remove(keys)
            running = [p for p, _ in self._running()]
            for at, part in enumerate(self._parts):
                if not part.due_for_compaction or any(p is part for p in running):
                    continue
                if part.slots < BACKGROUND_COMPACT_MIN:
                    live = np.flatnonzero(~part.dead)
                    self._parts[at] = part.rebuilt(part.keys[live], part.vectors_of(live))
                    self.generation += 1
                else:
                    self._compact_later(part)
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

    def _running(self) -> list[tuple[GraphPart, threading.Thread]]:
        """The compactions still running (in a forked child, none of the parent's are)."""
        with self._lock:
            self._compactions = [(p, t) for p, t in self._compactions if t.is_alive()]
            return list(self._compactions)

    def _compact_later(self, part: GraphPart) -> None:
        """Rebuild ``part`` from its live vectors on a thread of its own, then swap the copy in,
        caught up with what changed in ``part`` meanwhile. The lock is held only to copy the
        vectors out (in batches) and for the swap, so searches and changes go on."""

        def copy_out() -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
            with self._lock:
                slots, dead = part.slots, part.dead.copy()
                live = np.flatnonzero(~dead)
                keys = part.keys[live]
            # the part's own precision: exact (a float16 part's copy takes half the memory)
            vectors = np.empty(
                (len(live), self.dimension), np.float16 if part.float16 else np.float32
            )
            for lo in range(0, len(live), SNAPSHOT_BATCH):
                with self._lock:  # an add may move the graph's arrays, a swap drop its memory
                    if not any(p is part for p in self._parts):
                        return None
                    vectors[lo : lo + SNAPSHOT_BATCH] = part.vectors_of(
                        live[lo : lo + SNAPSHOT_BATCH]
                    )
            return slots, dead, keys, vectors

        def compact() -> None:
            try:
                snapshot = copy_out()
                if snapshot is None:
                    return
                slots, dead, keys, vectors = snapshot
                fresh = part.rebuilt(keys, vectors.astype(np.float32), _background_threads())
                with self._lock:
                    at = next((i for i, p in enumerate(self._parts) if p is part), None)
                    if at is None:
                        return
                    fresh.catch_up(part, slots, dead)
                    self._parts[at] = fresh
                    self.generation += 1
                    self._drop_unused_backing()
                log.info("ANN part compacted: %d live of %d slots", fresh.live, fresh.slots)
            except Exception:  # the part keeps its tombstones: slower searches, same answers
                log.exception("compacting an ANN graph part failed")
            finally:
                with self._lock:
                    self._compactions = [(p, t) for p, t in self._compactions if p is not part]

        thread = threading.Thread(target=compact, name="ann-compact", daemon=True)
        self._compactions.append((part, thread))
        thread.start()

    def contains_many(self, keys: np.ndarray) -> np.ndarray:
        """Membership of every key, as one boolean array."""
        keys = np.asarray(keys, dtype=np.int64)
        with self._lock:
            found = np.zeros(len(keys), bool)
            for part in self._parts:
                found |= part.slots_of(keys) >= 0
            return found

    def keys(self) -> np.ndarray:
        with self._lock:
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
        with self._lock:
            parts = [p for p in self._parts if p.live]
            if not parts or count <= 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            if self.rotation is not None:
                q = self.rotation.apply_one(q)
            efs = part_expansions([p.live for p in parts], [p.connectivity for p in parts])
            pool = _search_pool() if len(parts) > 1 else None
            if pool is None:
                found = [p.search(q, count, ef, norm_sq) for p, ef in zip(parts, efs, strict=True)]
            else:  # this thread takes the first part, the pool the others
                futures = [
                    pool.submit(p.search, q, count, ef, norm_sq)
                    for p, ef in zip(parts[1:], efs[1:], strict=True)
                ]
                try:
                    found = [parts[0].search(q, count, efs[0], norm_sq)]
                except BaseException:
                    wait(futures)  # no part is still being searched once the lock is released
                    raise
                # result() rather than wait(): 0.05 ms less a query (1M, two parts)
                found += [f.result() for f in futures]
        keys = np.concatenate([k for k, _ in found])
        scores = np.concatenate([s for _, s in found]).astype(np.float32)
        if len(found) > 1:
            best = np.argsort(-scores, kind="stable")[:count]
            keys, scores = keys[best], scores[best]
        return keys, scores

    # --- internals -----------------------------------------------------------------------------

    def _part_to_fill(self) -> GraphPart:
        """The part with the fewest slots, or a new one when every part is full."""
        part = min(self._parts, key=lambda p: p.slots, default=None)
        if part is None or part.slots >= PART_SIZE:
            part = GraphPart(self.dimension, self.similarity, panorama=self.rotation is not None)
            self._parts.append(part)
        return part

    def _drop_unused_backing(self) -> None:
        if self._backing is not None and not self.mapped:
            self._backing, self._huge = None, False

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
                parts = []
                for part in self._parts:
                    start = f.tell()
                    writer = faiss.PyCallbackIOWriter(f.write)
                    faiss.write_index(part.graph, writer)
                    del writer  # flushes its buffer
                    end = f.tell()
                    # FAISS writes the stored vectors last: end - their size is where they start
                    parts.append(
                        [start, end - part.graph.ntotal * part.code_size(), end, part.slots]
                    )
                for part in self._parts:
                    f.write(part.keys.astype("<i8").tobytes())
                dead = np.concatenate([p.dead for p in self._parts] or [np.zeros(0, bool)])
                f.write(np.packbits(dead, bitorder="little").tobytes())
                if self.rotation is not None:
                    f.write(self.rotation.to_bytes())
                payload_bytes = f.tell()
                f.flush()
                ranges = [(lo, hi) for _, lo, hi, _ in parts]
                structure, vectors = _digests(f.fileno(), payload_bytes, ranges)
                header = json.dumps(
                    {
                        **self.stamp.__dict__,
                        "parts": parts,
                        "rotation": self.rotation is not None,
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
        """Verify a file, then search its graphs in place (views into the mapped file);
        IndexStoreError says why it cannot be trusted.

        Everything FAISS follows (graph links, levels, offsets) and our keys are checked before
        FAISS reads a byte. The stored vectors, 90% of a big file, are checked now if small and
        otherwise on a background thread (``wait_verified``, ``damaged``): a damaged vector can
        only mislead the search about candidates (every reported score is recomputed from the
        store), and its discovery makes the caches rebuild. So a cold 1M-vector file is searched
        after reading about 10% of it. Where Linux has huge pages, that thread checks a copy of
        the graphs in huge-page memory instead, and the search moves onto it once it matched."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise IndexStoreError(f"ANN file {path} is missing") from exc
        except OSError as exc:
            raise IndexStoreError(f"ANN file {path} cannot be opened: {exc}") from exc
        try:  # everything below reads this one inode, even if a save renames over ``path``
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IndexStoreError(f"ANN file {path} is not a regular file")
            with open(fd, "rb", closefd=False) as f:
                header = read_header(path, f)
            if os.fstat(fd).st_size != header["payload_bytes"] + header["_trailer"]:
                raise IndexStoreError(f"ANN file {path} has the wrong length")
            ranges = _check_layout(path, header)
            now = sum(hi - lo for lo, hi in ranges) <= VERIFY_NOW_BYTES
            if now:  # read into private memory: a shared mapping dies (SIGBUS) if it is truncated
                data, raw = huge_page_copy(fd, header["payload_bytes"])
            else:
                data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                raw = np.frombuffer(data, np.uint8, count=header["payload_bytes"])
            if structure_digest(raw, ranges) != header["xxh3_structure"]:
                raise IndexStoreError(f"ANN file {path} is corrupt (checksum mismatch)")
            if now and vectors_digest(raw, ranges) != header["xxh3_vectors"]:
                raise IndexStoreError(f"ANN file {path} is corrupt (vector checksum mismatch)")
            ann = cls._from_payload(path, header, raw)
            ann._backing = (data, raw)
            if not now:
                ann._settle_later(path, os.dup(fd), header, raw)
            return ann
        finally:
            os.close(fd)

    def wait_verified(self, timeout: float | None = None) -> bool:
        """Wait for the background check of the stored vectors; False if they are damaged."""
        if self._verifier is not None:
            self._verifier.join(timeout)
        return self.damaged is None

    def _settle_later(
        self, path: Path, fd: int, header: dict[str, Any], mapped: np.ndarray
    ) -> None:
        """On a background thread: check the stored vectors; where Linux has huge pages, check
        them in a copy of the graphs on 2 MiB pages and move the search onto that copy (unless a
        part changed meanwhile). What is searched is what matched the checksum. Without a copy
        (no huge pages, or no memory for one) the mapped file is checked."""
        loaded = [p.graph for p in self._parts]
        ranges = [(lo, hi) for _, lo, hi, _ in header["parts"]]
        end = header["parts"][-1][2] if header["parts"] else 0

        def settle() -> None:
            copy = None
            try:
                if huge_pages_available():
                    copy = huge_page_copy(fd, end)
            except (OSError, ValueError, IndexStoreError) as exc:  # no memory for it, say
                log.warning("ANN graphs stay mapped from the file: %s", exc)
            finally:
                os.close(fd)
            # the copy when there is one (what will be searched), else the mapped file
            if (
                vectors_digest(mapped if copy is None else copy[1], ranges)
                != header["xxh3_vectors"]
            ):
                self._damage(path)
                return
            if copy is None:
                return
            try:
                graphs = [view_graph(copy[1], lo, hi) for lo, _, hi, _ in header["parts"]]
            except RuntimeError as exc:  # keeps searching the mapped file
                log.warning("ANN graphs not moved to huge pages: %s", exc)
                return
            with self._lock:
                if len(self._parts) != len(loaded) or any(
                    p.graph is not g for p, g in zip(self._parts, loaded, strict=True)
                ):
                    return  # changed meanwhile (a part was copied out or compacted)
                for part, graph in zip(self._parts, graphs, strict=True):
                    part.graph = graph
                self._backing, self._huge = copy, True

        self._verifier = threading.Thread(target=settle, name="ann-verify", daemon=True)
        self._verifier.start()

    def _damage(self, path: Path) -> None:
        self.damaged = f"ANN file {path} is corrupt (vector checksum mismatch)"
        log.warning("%s; the cache will be rebuilt", self.damaged)

    @classmethod
    def _from_payload(cls, path: Path, header: dict[str, Any], raw: np.ndarray) -> AnnIndex:
        ann = cls(
            header["dimension"], header["metric"], store_id=header["store_id"], seq=header["seq"]
        )
        layout = header["parts"]
        total = sum(slots for *_, slots in layout)
        at = layout[-1][2] if layout else 0
        # copies, no views: keys and tombstones are small and change often
        keys = raw[at : at + 8 * total].view("<i8").astype(np.int64)
        at += 8 * total
        dead = np.unpackbits(raw[at : at + _bitmap_bytes(total)], bitorder="little")[:total]
        dead = dead.astype(bool)
        if header.get("rotation"):  # absent in files from before Panorama parts
            at += _bitmap_bytes(total)
            ann.rotation = Rotation.from_bytes(
                raw[at : at + Rotation.size(ann.dimension)], ann.dimension
            )
        first = 0
        for start, vectors_at, end, slots in layout:
            try:
                graph = view_graph(raw, start, end)
            except RuntimeError as exc:
                raise IndexStoreError(f"ANN file {path} could not be read: {exc}") from exc
            part = GraphPart(ann.dimension, ann.similarity, graph)
            if part.panorama != (ann.rotation is not None):
                raise IndexStoreError(f"ANN file {path} mixes rotated and unrotated parts")
            if graph.ntotal != slots or graph.d != ann.dimension:
                raise IndexStoreError(
                    f"ANN file {path} holds {graph.ntotal} x {graph.d} vectors in a part, its "
                    f"header says {slots} x {ann.dimension}"
                )
            if end - vectors_at != slots * part.code_size():
                raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
            part.set_slots(keys[first : first + slots], dead[first : first + slots])
            first += slots
            ann._parts.append(part)
        if len(ann) != header["count"]:
            raise IndexStoreError(f"ANN file {path}: live count disagrees with its header")
        return ann


def _digests(fd: int, size: int, ranges: list[tuple[int, int]]) -> tuple[int, int]:
    """(structure, vectors) checksums of the first ``size`` bytes of a file being written."""
    if not size:  # no parts: nothing to map
        return structure_digest(b"", []), vectors_digest(b"", [])
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            return structure_digest(view, ranges), vectors_digest(view, ranges)
        finally:
            view.release()


def _check_layout(path: Path, header: dict[str, Any]) -> list[tuple[int, int]]:
    """The stored vectors' byte ranges, once the parts are known to tile the payload: graphs back
    to back from byte 0, each ending with its vectors, then the keys, the tombstone bitmap and
    the rotation, if any."""
    at, total = 0, 0
    for start, vectors_at, end, slots in header["parts"]:
        if not start == at <= vectors_at <= end:
            raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
        at, total = end, total + slots
    rotation = Rotation.size(header["dimension"]) if header.get("rotation") else 0
    if at + 8 * total + _bitmap_bytes(total) + rotation != header["payload_bytes"]:
        raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
    return [(lo, hi) for _, lo, hi, _ in header["parts"]]


def _bitmap_bytes(slots: int) -> int:
    """Bytes of the tombstone bitmap of ``slots`` slots (one bit each, rounded up)."""
    return -(-slots // 8)


def part_expansions(sizes: list[int], connectivity: list[int] | None = None) -> list[int]:
    """The beam of each part searched together with the others (``sizes``: their live vectors).

    Equal parts get ``MERGED_EF_SCALE`` of their own size's beam; a part holding nearly all the
    vectors (500k + 10k) holds nearly all the top 10 too, and gets about its lone-graph beam: the
    scale moves linearly from the first to the second as the part's share grows from 1/P to 1."""
    if EXPANSION_SEARCH:
        return [EXPANSION_SEARCH] * len(sizes)
    ms = connectivity or [CONNECTIVITY] * len(sizes)
    total, n = sum(sizes), len(sizes)
    if n == 1:
        return [expansion_for(sizes[0], ms[0])]
    out = []
    for size, m in zip(sizes, ms, strict=True):
        excess = min(max((size / total * n - 1) / (n - 1), 0.0), 1.0)
        scale = MERGED_EF_SCALE + (1 - MERGED_EF_SCALE) * excess
        out.append(round(expansion_for(size, m) * scale))
    return out


@functools.lru_cache(maxsize=64)
def expansion_for(size: int, connectivity: int = CONNECTIVITY) -> int:
    """The search beam (ef) for a graph of ``size`` vectors and ``connectivity`` neighbours per
    node (``EF_BY_SIZE``, log-interpolated; the nearest tabulated M below, or the smallest).
    Cached: numpy's interpolation costs about 0.1 ms, a tenth of a query at 100k."""
    known = [m for m in EF_BY_SIZE if m <= connectivity] or [min(EF_BY_SIZE)]
    anchors = EF_BY_SIZE[max(known)]
    sizes = np.log([n for n, _ in anchors])
    return int(np.rint(np.interp(np.log(max(size, 1)), sizes, [ef for _, ef in anchors])))


def _background_threads() -> int:
    """Threads for work beside the searches: every CPU but one, at least one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max((cpus or 1) - 1, 1)


_POOLS: dict[int, ThreadPoolExecutor | None] = {}  # by process: a fork has no pool threads


def _search_pool() -> ThreadPoolExecutor | None:
    """Threads that search the other parts while the caller searches the first; None on a
    single CPU, where the parts are searched in turn."""
    pid = os.getpid()
    if pid not in _POOLS:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = (cpus or 1) - 1
        _POOLS[pid] = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ann-part")
            if workers
            else None
        )
    return _POOLS[pid]
