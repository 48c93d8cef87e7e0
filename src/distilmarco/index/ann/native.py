"""What the ANN cache needs from outside Python: FAISS (imported lazily), its OpenMP threads, a
pool for searching parts in parallel, 2 MiB pages from Linux, and folder fsyncs."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import MissingExtraError

log = logging.getLogger(__name__)

_MADV_HUGEPAGE, _MADV_COLLAPSE = 14, 25  # Linux; COLLAPSE since 6.1
_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_POOLS: dict[int, ThreadPoolExecutor | None] = {}  # by process: a fork has no pool threads


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise MissingExtraError("faiss-cpu", "ann", "approximate (HNSW) search") from exc
    return faiss


def xxh3() -> Any:
    """A fresh xxh3-64 digest."""
    try:
        import xxhash
    except ImportError as exc:
        raise MissingExtraError("xxhash", "ann", "approximate (HNSW) search") from exc
    return xxhash.xxh3_64()


def view_graph(raw: np.ndarray, lo: int, hi: int) -> Any:
    """The FAISS graph serialised in ``raw[lo:hi]``; its vectors and links are views into
    ``raw`` (no copy), so ``raw``'s memory must outlive the graph."""
    faiss = faiss_module()
    return faiss.read_index(faiss.ZeroCopyIOReader(faiss.swig_ptr(raw[lo:hi]), hi - lo))


@contextmanager
def omp_threads(count: int) -> Iterator[None]:
    """FAISS's OpenMP threads for a block (0: all); its own runtime, not torch's."""
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _cpus() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cpus or 1


def background_threads() -> int:
    """Threads for work beside the searches: every CPU but one, at least one."""
    return max(_cpus() - 1, 1)


def search_pool() -> ThreadPoolExecutor | None:
    """Threads that search the other parts while the caller searches the first; None on a
    single CPU, where the parts are searched in turn."""
    pid = os.getpid()
    if pid not in _POOLS:
        workers = _cpus() - 1
        _POOLS[pid] = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ann-part")
            if workers
            else None
        )
    return _POOLS[pid]


def huge_pages_available() -> bool:
    """True where Linux gives transparent huge pages to memory that asks ("always"/"madvise")."""
    try:
        setting = _THP_SETTING.read_text()
    except OSError:
        return False
    return "[always]" in setting or "[madvise]" in setting


def private_buffer(size: int, huge: bool) -> tuple[mmap.mmap, np.ndarray]:
    """Anonymous private memory of ``size`` bytes and a byte array over it; with ``huge``, asking
    for 2 MiB pages: an HNSW search touches vectors spread over the whole graph, and on 4 KiB pages
    most of them miss the TLB as well."""
    buf = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge and hasattr(mmap, "MADV_HUGEPAGE"):
        # a kernel without transparent huge pages refuses: 4 KiB pages, same answers
        with contextlib.suppress(OSError):
            buf.madvise(mmap.MADV_HUGEPAGE)
    return buf, np.frombuffer(buf, np.uint8, count=size)


def advise_huge_pages(graph: Any) -> None:
    """Ask Linux to back an in-memory graph's vectors and links with 2 MiB pages now (see
    ``private_buffer``). Best effort: nothing happens elsewhere, or where the kernel says no."""
    if not sys.platform.startswith("linux"):
        return
    faiss = faiss_module()
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    storage = faiss.downcast_index(graph.storage)
    for vector, item in ((storage.codes, 1), (graph.hnsw.neighbors, 4)):
        start, size = int(vector.data()), vector.size() * item
        lo, hi = -(-start // (2 << 20)) * (2 << 20), (start + size) // (2 << 20) * (2 << 20)
        if hi > lo and madvise(lo, hi - lo, _MADV_HUGEPAGE) == 0:
            madvise(lo, hi - lo, _MADV_COLLAPSE)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
