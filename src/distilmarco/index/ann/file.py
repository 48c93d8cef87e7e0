"""Saving and loading the ANN file (layout in ``header``).

Saves write a temporary file, fsync it, rename it over the old one and fsync the folder, so
readers only ever see a whole file. Loads read the whole file into private memory and check both
checksums before FAISS is handed a byte: a file another process truncates or replaces later can
no longer reach a search (a shared mapping of it would kill the process with SIGBUS).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import IndexStoreError
from distilmarco.index.ann.config import AnnConfig
from distilmarco.index.ann.header import (
    AnnHeader,
    AnnStamp,
    PartLayout,
    read_trailer,
    trailer_bytes,
)
from distilmarco.index.ann.native import (
    ask_huge_pages,
    faiss_module,
    fsync_dir,
    private_buffer,
    view_graph,
    xxh3,
)
from distilmarco.index.ann.part import GraphPart
from distilmarco.index.ann.rotation import Rotation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedFile:
    """A verified file's contents: graphs viewing ``raw`` (which must outlive them), and the
    per-slot keys and tombstones of all parts, in part order."""

    header: AnnHeader
    memory: mmap.mmap
    raw: np.ndarray
    graphs: tuple[Any, ...]
    keys: np.ndarray
    dead: np.ndarray
    rotation: Rotation | None
    on_huge_pages: bool


def save_file(
    path: Path, stamp: AnnStamp, parts: list[GraphPart], rotation: Rotation | None, chunk: int
) -> None:
    """Atomically replace ``path`` with these parts (the caller holds their lock)."""
    faiss = faiss_module()
    remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); readers in other accounts need what SQLite
        # gives the database: the old file's mode, else rw-r--r--.
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "w+b") as f:
            layout = []
            for part in parts:
                start = f.tell()
                writer = faiss.PyCallbackIOWriter(f.write)
                faiss.write_index(part.graph, writer)
                del writer  # flushes its buffer
                end = f.tell()
                # FAISS writes the stored vectors last: end - their size is where they start
                vectors_at = end - part.graph.ntotal * part.code_size()
                layout.append(PartLayout(start, vectors_at, end, part.slots))
            for part in parts:
                f.write(part.keys.astype("<i8").tobytes())
            dead = np.concatenate([p.dead for p in parts] or [np.zeros(0, bool)])
            f.write(np.packbits(dead, bitorder="little").tobytes())
            if rotation is not None:
                f.write(rotation.to_bytes())
            payload_bytes = f.tell()
            f.flush()
            ranges = [p.vectors for p in layout]
            structure, vectors = stream_digests(f.fileno(), payload_bytes, ranges, chunk)
            header = AnnHeader(
                stamp,
                tuple(layout),
                rotation is not None,
                payload_bytes,
                structure,
                vectors,
                f"faiss {faiss.__version__}",
            )
            f.seek(payload_bytes)
            f.write(trailer_bytes(header))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def load_file(path: Path, config: AnnConfig) -> LoadedFile:
    """Read ``path`` into private memory, check it, and view its graphs there; IndexStoreError
    says why the file cannot be trusted."""
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
            trailer = read_trailer(path, f)
        if os.fstat(fd).st_size != trailer.file_bytes:
            raise IndexStoreError(f"ANN file {path} has the wrong length")
        header = trailer.header
        ranges = _check_layout(path, header)
        huge = header.payload_bytes >= config.huge_pages_min_bytes
        _read_ahead(fd, header.payload_bytes)
        try:
            memory, raw = private_buffer(header.payload_bytes)
            structure, vectors = stream_digests(
                fd, header.payload_bytes, ranges, config.read_chunk_bytes, memory
            )
        except OSError as exc:  # no memory for it, or a read error
            raise IndexStoreError(f"ANN file {path} could not be read: {exc}") from exc
    finally:
        os.close(fd)
    if structure != header.xxh3_structure:
        raise IndexStoreError(f"ANN file {path} is corrupt (checksum mismatch)")
    if vectors != header.xxh3_vectors:
        raise IndexStoreError(f"ANN file {path} is corrupt (vector checksum mismatch)")
    return _contents(path, header, memory, raw, huge and ask_huge_pages(raw))


def _contents(
    path: Path, header: AnnHeader, memory: mmap.mmap, raw: np.ndarray, huge: bool
) -> LoadedFile:
    """The checked payload's parts, each checked against the header."""
    faiss = faiss_module()
    total, dimension = header.slots, header.stamp.dimension
    at = header.graphs_end
    # copies, no views: keys and tombstones are small and change often
    keys = raw[at : at + 8 * total].view("<i8").astype(np.int64)
    at += 8 * total
    dead = np.unpackbits(raw[at : at + bitmap_bytes(total)], bitorder="little")[:total]
    rotation = None
    if header.rotation:
        at += bitmap_bytes(total)
        rotation = Rotation.from_bytes(raw[at : at + Rotation.size(dimension)], dimension)
    graphs = []
    for part in header.parts:
        try:
            graph = view_graph(raw, part.start, part.end)
        except RuntimeError as exc:
            raise IndexStoreError(f"ANN file {path} could not be read: {exc}") from exc
        if isinstance(faiss.downcast_index(graph), faiss.IndexHNSWFlatPanorama) != header.rotation:
            raise IndexStoreError(f"ANN file {path} mixes rotated and unrotated parts")
        if graph.ntotal != part.slots or graph.d != dimension:
            raise IndexStoreError(
                f"ANN file {path} holds {graph.ntotal} x {graph.d} vectors in a part, its "
                f"header says {part.slots} x {dimension}"
            )
        code_size = faiss.downcast_index(graph.storage).code_size
        if code_size != 4 * dimension or part.end - part.vectors_at != part.slots * code_size:
            raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
        graphs.append(graph)
    if total - int(dead.sum()) != header.stamp.count:
        raise IndexStoreError(f"ANN file {path}: live count disagrees with its header")
    return LoadedFile(header, memory, raw, tuple(graphs), keys, dead.astype(bool), rotation, huge)


def stream_digests(
    fd: int,
    size: int,
    vectors: list[tuple[int, int]],
    chunk: int,
    into: mmap.mmap | None = None,
) -> tuple[int, int]:
    """(structure, vectors) xxh3 checksums of the first ``size`` bytes of the file open as ``fd``:
    of the ``vectors`` byte ranges (in order), and of everything else. Read ``chunk`` bytes at a
    time (into ``into`` when given, else a scratch buffer), each hashed while it is still in the
    CPU's cache; ``os.preadv`` lets other threads run meanwhile."""
    segments, at = [], 0  # (start, end, is stored vectors), tiling [0, size)
    for lo, hi in vectors:
        segments += [(at, lo, False), (lo, hi, True)]
        at = hi
    segments.append((at, size, False))
    structure, stored = xxh3(), xxh3()
    target = memoryview(into if into is not None else bytearray(min(chunk, size)))
    try:
        seg, at = 0, 0
        while at < size:
            n = min(chunk, size - at)
            block = target[at : at + n] if into is not None else target[:n]
            _read_exactly(fd, block, at)
            while seg < len(segments) and segments[seg][0] < at + n:
                lo, hi, is_vectors = segments[seg]
                piece = block[max(lo, at) - at : min(hi, at + n) - at]
                (stored if is_vectors else structure).update(piece)
                if hi > at + n:
                    break  # the segment goes on in the next block
                seg += 1
            at += n
    finally:
        target.release()
    return int(structure.intdigest()), int(stored.intdigest())


def _read_ahead(fd: int, size: int) -> None:
    """Tell the kernel the whole payload will be read in order now, so it reads ahead from disk
    while earlier blocks are copied and hashed (best effort)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_SEQUENTIAL)
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)


def _read_exactly(fd: int, block: memoryview, offset: int) -> None:
    done = 0
    while done < len(block):
        got = os.preadv(fd, [block[done:]], offset + done)
        if got <= 0:
            raise IndexStoreError("ANN file shrank while it was read")
        done += got


def _check_layout(path: Path, header: AnnHeader) -> list[tuple[int, int]]:
    """The stored vectors' byte ranges, once the parts are known to tile the payload: graphs back
    to back from byte 0, each ending with its vectors, then the keys, the tombstone bitmap and
    the rotation, if any."""
    at = 0
    for part in header.parts:
        if not part.start == at <= part.vectors_at <= part.end:
            raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
        at = part.end
    total = header.slots
    rotation = Rotation.size(header.stamp.dimension) if header.rotation else 0
    if at + 8 * total + bitmap_bytes(total) + rotation != header.payload_bytes:
        raise IndexStoreError(f"ANN file {path} has inconsistent section sizes")
    return header.vector_ranges


def bitmap_bytes(slots: int) -> int:
    """Bytes of the tombstone bitmap of ``slots`` slots (one bit each, rounded up)."""
    return -(-slots // 8)


def remove_orphans(path: Path) -> None:
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
