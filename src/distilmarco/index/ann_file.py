"""The ANN cache's file: layout, checks and the atomic-write helpers (format in ``ann.py``).

Nothing here trusts the file: the trailer is parsed defensively, lengths are checked against the
file, and the checksums are computed before FAISS is handed a byte.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilmarco.errors import IndexStoreError, MissingExtraError

log = logging.getLogger(__name__)

MAGIC = b"DMANN03\n"  # at the end of the file; 01 and 02 (usearch) began with theirs


@dataclass(frozen=True)
class AnnStamp:
    """What an ANN file claims to cover; checked against the store before it is trusted."""

    store_id: str
    seq: int
    count: int
    dimension: int
    metric: str


def read_stamp(path: Path) -> AnnStamp:
    """The stamp in a file's trailer, with the file's length checked but not its checksum."""
    try:
        with open(path, "rb") as f:
            header = read_header(path, f)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError as exc:
        raise IndexStoreError(f"ANN file {path} is missing") from exc
    if size != header["payload_bytes"] + header["_trailer"]:
        raise IndexStoreError(f"ANN file {path} has the wrong length (truncated or extended)")
    return AnnStamp(
        header["store_id"], header["seq"], header["count"], header["dimension"], header["metric"]
    )


def read_header(path: Path, f: Any) -> dict[str, Any]:
    """The JSON header of the trailer: ``header, its length (u64 little endian), MAGIC``."""
    head = f.read(len(MAGIC))
    if head[:6] == MAGIC[:6]:  # 01 and 02 began with their magic
        raise IndexStoreError(f"ANN file {path} has an older format (bad magic)")
    size = f.seek(0, os.SEEK_END)
    if size < len(MAGIC) + 8:
        raise IndexStoreError(f"ANN file {path} is {'empty' if not size else 'truncated'}")
    f.seek(size - len(MAGIC) - 8)
    tail = f.read(len(MAGIC) + 8)
    if tail[8:] != MAGIC:
        raise IndexStoreError(f"ANN file {path} is not a distilmarco ANN file (bad magic)")
    (length,) = struct.unpack_from("<Q", tail)
    if length > size - len(MAGIC) - 8:
        raise IndexStoreError(f"ANN file {path} is truncated inside its header")
    f.seek(size - len(MAGIC) - 8 - length)
    try:
        header = json.loads(f.read(length))
        for key, kind in (
            ("store_id", str),
            ("seq", int),
            ("count", int),
            ("dimension", int),
            ("metric", str),
            ("slots", int),
            ("graph_bytes", int),
            ("vectors_at", int),
            ("payload_bytes", int),
            ("xxh3_structure", int),
            ("xxh3_vectors", int),
        ):
            if not isinstance(header[key], kind):
                raise TypeError(key)
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexStoreError(f"ANN file {path} has a damaged header ({exc})") from exc
    header["_trailer"] = length + 8 + len(MAGIC)
    return dict(header)


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


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise MissingExtraError("faiss-cpu", "ann", "approximate (HNSW) search") from exc
    return faiss


def read_graph(graph: memoryview, fd: int) -> tuple[Any, bool]:
    """The FAISS graph in ``graph`` (the start of the file open as ``fd``), and whether it is a
    view: mapped in place where the platform names open files (/proc/self/fd or /dev/fd), which
    costs no copy (1M float16 vectors: 0.03 s vs about 2 s to read them in), else copied."""
    faiss = faiss_module()
    for folder in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(folder):
            return faiss.read_index(f"{folder}/{fd}", faiss.IO_FLAG_MMAP_IFC), True
    at = 0

    def read(n: int) -> bytes:
        nonlocal at
        n = min(n, len(graph) - at)
        at += n
        return bytes(graph[at - n : at])

    return faiss.read_index(faiss.PyCallbackIOReader(read)), False


def structure_digest(payload: memoryview, vectors_at: int, vectors_end: int) -> int:
    """xxh3 of the payload without its stored vectors: what FAISS follows, and our keys."""
    digest = checksum(payload[:vectors_at])
    digest.update(payload[vectors_end:])
    return int(digest.intdigest())


def checksum(data: bytes | memoryview = b"") -> Any:
    try:
        import xxhash
    except ImportError as exc:
        raise MissingExtraError("xxhash", "ann", "approximate (HNSW) search") from exc
    return xxhash.xxh3_64(data)
