"""What the ANN cache needs from outside Python: FAISS (imported lazily), its OpenMP threads, a
pool for searching parts in parallel, 2 MiB pages from Linux, and folder fsyncs."""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import MissingExtraError

log = logging.getLogger(__name__)

_MADV_HUGEPAGE, _MADV_COLLAPSE = 14, 25  # Linux; COLLAPSE since 6.1
_HUGE = 2 << 20
_COLLAPSE_STEP = 32 << 20  # bytes moved onto huge pages per call
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


def private_buffer(size: int) -> tuple[mmap.mmap, np.ndarray]:
    """Anonymous private memory of ``size`` bytes and a byte array over it."""
    buf = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return buf, np.frombuffer(buf, np.uint8, count=size)


def ask_huge_pages(raw: np.ndarray) -> bool:
    """Move filled memory onto 2 MiB pages, on a background thread: an HNSW search touches vectors
    spread over the whole graph, and on 4 KiB pages most of them miss the TLB as well. Done after
    the memory is filled, because faulting in fresh 2 MiB pages while reading would delay the
    first search; collapsing pages keeps their contents, so searches go on meanwhile. False where
    Linux gives no huge pages."""
    madvise = _libc_madvise()
    if madvise is None or not huge_pages_available():
        return False
    start, size = raw.ctypes.data, raw.nbytes
    lo, hi = -(-start // _HUGE) * _HUGE, (start + size) // _HUGE * _HUGE
    if hi <= lo or madvise(lo, hi - lo, _MADV_HUGEPAGE) != 0:
        return False

    def collapse(memory: np.ndarray) -> None:  # ``memory`` stays alive while this runs
        # ctypes lets other threads run during each call
        for at in range(lo, hi, _COLLAPSE_STEP):
            if madvise(at, min(_COLLAPSE_STEP, hi - at), _MADV_COLLAPSE) != 0:
                return  # a kernel before 6.1, or no memory for it: khugepaged does it later

    threading.Thread(target=collapse, args=(raw,), name="ann-huge-pages", daemon=True).start()
    return True


def _libc_madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


def advise_huge_pages(graph: Any) -> None:
    """Ask Linux to back an in-memory graph's vectors and links with 2 MiB pages now (see
    ``ask_huge_pages``). Best effort: nothing happens elsewhere, or where the kernel says no."""
    madvise = _libc_madvise()
    if madvise is None:
        return
    storage = faiss_module().downcast_index(graph.storage)
    for vector, item in ((storage.codes, 1), (graph.hnsw.neighbors, 4)):
        start, size = int(vector.data()), vector.size() * item
        lo, hi = -(-start // _HUGE) * _HUGE, (start + size) // _HUGE * _HUGE
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
