"""The HNSW cache: approximate nearest chunks, rebuilt from the store whenever in doubt.

Choice of library (measured here, ``/tmp`` script kept in ``benchmarks/bench_index.py``'s
``ann_choice`` case): 20k clustered 384-d unit vectors, 20% of them then deleted, one thread,
M=16, ef_add=128, ef_search=64, recall@10 against exact search over the live vectors:

=======================  ========  ===========  =========  ========  ===========
library                  build     remove 4k    query      recall    bytes/vec
=======================  ========  ===========  =========  ========  ===========
usearch f32              27.5 s    1 ms         0.82 ms    1.000     1,685
usearch f16              16.7 s    2 ms         0.67 ms    0.999     917
FAISS HNSWFlat f32       13.0 s    (none)       0.28 ms    0.999     1,680
=======================  ========  ===========  =========  ========  ===========

FAISS queries faster, but its HNSW cannot remove vectors or take our own 64-bit keys: deletions
would need tombstones, over-fetching and periodic full rebuilds, and keys a side table. usearch
removes by key in milliseconds, so catching the cache up with the store's tombstones is exact and
cheap, and f16 storage halves the file at no measurable recall cost (candidates are rescored with
the full-precision vectors from the store anyway). So: **usearch, f16**.

File format (never pickle): ``MAGIC`` (8 bytes), header length (8 bytes, little endian), a JSON
header (store id, sequence covered, count, dimension, metric, payload length and CRC-32) padded
with spaces to a 64-byte boundary, then the usearch payload. Written to a temporary file, fsynced,
renamed over the old one, folder fsynced.

Loading memory-maps the file and lets usearch search it in place ("view"): opening a 1M-vector
cache costs one sequential CRC pass (about 3 GB/s here) instead of a copy into memory. The CRC is
checked before usearch sees a byte, since a damaged graph could send it out of bounds. A viewed
index is read-only; the first change (catch-up with the store) copies it into memory.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import IndexStoreError, MissingExtraError

log = logging.getLogger(__name__)

MAGIC = b"DMANN02\n"  # 01: payload right after the header, loaded by copying
ALIGN = 64
METRICS = {"cosine": "ip", "dot": "ip", "euclidean": "l2sq"}  # manhattan: exact search only
CONNECTIVITY = 16
EXPANSION_ADD = 128
# Search beam (ef) by index size: a bigger graph needs a wider beam for the same recall. Recall@10
# against exact search on clustered 768-d vectors (intrinsic dimension 32, bench_index.clustered;
# M 16, ef_add 128): 20k: 0.931 / 0.991 at ef 64 / 128; 100k (500 queries): 0.838 / 0.912 / 0.947
# / 0.967 / 0.979 / 0.991 at ef 64 / 96 / 128 / 160 / 192 / 256; 1M (100 queries): 0.856 / 0.891
# / 0.947 / 0.965 / 0.983 / 0.991 at ef 128 / 160 / 256 / 320 / 384 / 512. The smallest beam
# that held 0.95 with some margin anchors each size; between anchors ef grows linearly in
# log(size), constant beyond the last. Query cost grows about linearly with ef (bench_index).
EF_BY_SIZE = ((50_000, 128), (100_000, 160), (1_000_000, 320))
EXPANSION_SEARCH: int | None = None  # a fixed ef instead (benchmarks set it)
PARALLEL_ADD_MIN = 20_000  # vectors per add() call from which insertion uses every thread


@dataclass(frozen=True)
class AnnStamp:
    """What an ANN file claims to cover; checked against the store before it is trusted."""

    store_id: str
    seq: int
    count: int
    dimension: int
    metric: str


class AnnIndex:
    """HNSW over chunk vectors keyed by chunk id (usearch, f16 storage, inner product or L2)."""

    def __init__(self, dimension: int, similarity: str, *, store_id: str, seq: int = 0) -> None:
        if similarity not in METRICS:
            raise IndexStoreError(
                f"ANN search supports similarities {sorted(METRICS)}, not {similarity!r}; "
                "use exact search"
            )
        self.dimension = dimension
        self.similarity = similarity
        self.store_id = store_id
        self.seq = seq
        self._index = _new_usearch(dimension, METRICS[similarity])
        self._mapped: mmap.mmap | None = None  # set while ``_index`` views the file in place

    def __len__(self) -> int:
        return len(self._index)

    @property
    def mapped(self) -> bool:
        """True while the index is searched in place from its memory-mapped file."""
        return self._mapped is not None

    def _writable(self) -> None:
        """Copy a memory-mapped (read-only) index into memory before changing it."""
        if self._mapped is None:
            return
        copy = _restore_usearch(bytes(self._index.save()))
        self._index.reset()
        self._index, self._mapped = copy, None

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys):
            self._writable()
            # Measured: 311 chunk vectors of the crash test (203 distinct, the rest exact
            # duplicates) inserted on all threads left 9 nodes unreachable even at ef = N; one
            # thread left none. Parallel insertion only for bulk builds, where it pays.
            threads = 0 if len(keys) >= PARALLEL_ADD_MIN else 1
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # no copy if it is already
            self._index.add(keys.astype(np.uint64), vectors, threads=threads)

    def remove(self, keys: np.ndarray) -> None:
        present = np.asarray(keys, dtype=np.uint64)[self.contains_many(keys)]
        if len(present):
            self._writable()
            self._index.remove(present)

    def contains(self, key: int) -> bool:
        return int(key) in self._index

    def contains_many(self, keys: np.ndarray) -> np.ndarray:
        """Membership of every key, as one boolean array (one call into usearch)."""
        if not len(keys):
            return np.zeros(0, dtype=bool)
        return np.asarray(self._index.contains(np.asarray(keys, dtype=np.uint64)), dtype=bool)

    def keys(self) -> np.ndarray:
        return np.asarray(self._index.keys, dtype=np.int64)

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        """Chunk ids of (approximately) the ``count`` nearest vectors, nearest first."""
        return self.search_scored(query, count)[0]

    def search_scored(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids of (approximately) the ``count`` nearest vectors, nearest first, and their
        approximate similarity (higher is better, as ``search.similarity_scores``): computed on
        the f16 copies, so off by about 1e-3 for unit vectors; rescore before reporting."""
        if len(self._index) == 0 or count <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        ef = max(EXPANSION_SEARCH or expansion_for(len(self._index)), count)
        if self._index.expansion_search != ef:
            self._index.expansion_search = ef
        # One thread: a single query gains nothing from a pool, and starting one costs ~0.1 ms.
        found = self._index.search(
            query.astype(np.float32), min(count, len(self._index)), threads=1
        )
        keys = np.asarray(found.keys, dtype=np.int64)
        distances = np.asarray(found.distances, dtype=np.float32)
        if METRICS[self.similarity] == "ip":  # usearch's inner-product distance is 1 - dot
            return keys, 1.0 - distances
        return keys, -np.sqrt(np.maximum(distances, 0.0))  # l2sq -> minus euclidean distance

    # --- persistence ---------------------------------------------------------------------------

    @property
    def stamp(self) -> AnnStamp:
        return AnnStamp(self.store_id, self.seq, len(self), self.dimension, self.similarity)

    def save(self, path: Path) -> None:
        """Atomically replace ``path``: temp file, fsync, rename, fsync the folder."""
        payload = bytes(self._index.save())
        header = json.dumps(
            {
                **self.stamp.__dict__,
                "payload_bytes": len(payload),
                "crc32": zlib.crc32(payload),
                "library": "usearch",
            }
        ).encode()
        # JSON ignores trailing spaces: pad so that the payload starts on an ALIGN boundary.
        header = header.ljust(-(-(len(MAGIC) + 8 + len(header)) // ALIGN) * ALIGN - len(MAGIC) - 8)
        _remove_orphans(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + struct.pack("<Q", len(header)) + header)
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> AnnIndex:
        """Map and verify a file; IndexStoreError says why it cannot be trusted."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except FileNotFoundError as exc:
            raise IndexStoreError(f"ANN file {path} is missing") from exc
        if data is None:
            raise IndexStoreError(f"ANN file {path} is empty")
        header = _parse_header(path, data)
        payload = memoryview(data)[header["_offset"] :]
        if len(payload) != header["payload_bytes"]:
            raise IndexStoreError(
                f"ANN file {path} is truncated: payload {len(payload)} of "
                f"{header['payload_bytes']} bytes"
            )
        if zlib.crc32(payload) != header["crc32"]:
            raise IndexStoreError(f"ANN file {path} is corrupt (checksum mismatch)")
        ann = cls(
            header["dimension"], header["metric"], store_id=header["store_id"], seq=header["seq"]
        )
        try:
            ann._index = _view_usearch(payload, header["dimension"], METRICS[header["metric"]])
            ann._mapped = data
        except (RuntimeError, ValueError) as exc:
            raise IndexStoreError(f"ANN file {path} could not be read: {exc}") from exc
        if len(ann) != header["count"] or ann._index.ndim != header["dimension"]:
            raise IndexStoreError(
                f"ANN file {path} holds {len(ann)} x {ann._index.ndim} vectors, its header says "
                f"{header['count']} x {header['dimension']}"
            )
        return ann


def expansion_for(size: int) -> int:
    """The search beam (ef) for an index of ``size`` vectors (``EF_BY_SIZE``, log-interpolated)."""
    sizes = np.log([n for n, _ in EF_BY_SIZE])
    return int(np.rint(np.interp(np.log(max(size, 1)), sizes, [ef for _, ef in EF_BY_SIZE])))


def read_stamp(path: Path) -> AnnStamp:
    """The stamp in a file's header, with its length checked but not its checksum (cheap)."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 8)
        if len(head) == len(MAGIC) + 8 and head.startswith(MAGIC):
            head += f.read(struct.unpack_from("<Q", head, len(MAGIC))[0])
    header = _parse_header(path, head)
    if path.stat().st_size != header["_offset"] + header["payload_bytes"]:
        raise IndexStoreError(f"ANN file {path} has the wrong length (truncated or extended)")
    return AnnStamp(
        header["store_id"], header["seq"], header["count"], header["dimension"], header["metric"]
    )


def _parse_header(path: Path, data: bytes | mmap.mmap) -> dict[str, Any]:
    if bytes(data[: len(MAGIC)]) != MAGIC or len(data) < len(MAGIC) + 8:
        raise IndexStoreError(f"ANN file {path} is not a distilmarco ANN file (bad magic)")
    (size,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    if size > len(data) - start:
        raise IndexStoreError(f"ANN file {path} is truncated inside its header")
    try:
        header = json.loads(data[start : start + size])
        for key, kind in (
            ("store_id", str),
            ("seq", int),
            ("count", int),
            ("dimension", int),
            ("metric", str),
            ("payload_bytes", int),
            ("crc32", int),
        ):
            if not isinstance(header[key], kind):
                raise TypeError(key)
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexStoreError(f"ANN file {path} has a damaged header ({exc})") from exc
    header["_offset"] = start + size
    return dict(header)


def _remove_orphans(path: Path) -> None:
    """Delete temporary files left by saves whose process died (e.g. killed mid-write)."""
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 1 :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
            log.info("removed %s, left by a save that did not finish", tmp)
        except PermissionError:  # alive, owned by someone else
            continue


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _usearch() -> Any:
    try:
        from usearch.index import Index
    except ImportError as exc:
        raise MissingExtraError("usearch", "ann", "approximate (HNSW) search") from exc
    return Index


def _new_usearch(dimension: int, metric: str) -> Any:
    return _usearch()(
        ndim=dimension,
        metric=metric,
        dtype="f16",
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EF_BY_SIZE[0][1],
    )


def _view_usearch(payload: memoryview, dimension: int, metric: str) -> Any:
    meta = _usearch().metadata(payload)
    if meta is None:
        raise ValueError("usearch could not parse the payload")
    index = _new_usearch(dimension, metric)
    index.view(payload)
    return index


def _restore_usearch(payload: bytes) -> Any:
    index = _usearch().restore(payload)
    if index is None:
        raise ValueError("usearch could not parse the payload")
    return index
