"""One part of the HNSW cache: a FAISS graph (float32 vectors; float16 in parts read from older
files), its slot -> chunk id array and its tombstones; and the ``Rotation`` that Panorama parts
hold their vectors in. ``ann.AnnIndex`` holds one or more parts and does the locking and the
files."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from distilmarco.index.ann_file import advise_huge_pages, faiss_module
from distilmarco.index.rescore import MARGIN

log = logging.getLogger(__name__)

CONNECTIVITY = 32  # M of new graphs; a graph read from a file keeps its own (older ones: 16)
EXPANSION_ADD = 128
PARALLEL_ADD_MIN = 20_000  # vectors per add() call from which insertion uses every thread
COMPACT_DEAD_FRACTION = 0.25  # rebuild a part once this share of its slots are tombstones
HUGE_PAGES_MIN_BYTES = 32 << 20  # in-memory graphs from this size ask for 2 MiB pages
PANORAMA_LEVELS = 8  # slices of each rotated vector that Panorama bounds the distance after
# L2 order is similarity order for these (cosine vectors are unit length); not for "dot"
PANORAMA_SIMILARITIES = ("cosine", "euclidean")
ROTATION_SAMPLE = 50_000  # vectors the principal axes are estimated from, at most
ROTATE_ONE_BY_ONE = 8  # rows up to which ``Rotation.apply`` keeps off numpy's BLAS threads


@dataclass(frozen=True)
class Rotation:
    """An orthonormal change of basis onto principal axes, most variance first: ``x`` becomes
    ``(x - mean) @ basis.T``. Euclidean distances are kept (to float32 rounding), and most of a
    vector's length lands in its first coordinates, which is what lets a Panorama part rule a
    candidate out after reading only those. Fitted once, on the first vectors an index gets; a
    later shift in the data only weakens the pruning, never changes an answer."""

    mean: np.ndarray  # (D,) float32
    basis: np.ndarray  # (D, D) float32, orthonormal rows by decreasing variance

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Rotation:
        sample = vectors[:: max(1, len(vectors) // ROTATION_SAMPLE)].astype(np.float64)
        mean = sample.mean(axis=0)
        centred = sample - mean
        _, axes = np.linalg.eigh(centred.T @ centred)  # ascending variance
        basis = np.ascontiguousarray(axes[:, ::-1].T, dtype=np.float32)
        return cls(mean.astype(np.float32), basis)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate a batch: numpy's BLAS, on every core, for many rows; a few (an add of one
        short document, say) one at a time like a query (see ``apply_one``)."""
        if len(vectors) <= ROTATE_ONE_BY_ONE:
            return np.concatenate([self.apply_one(v) for v in vectors], axis=0)
        return np.ascontiguousarray((vectors - self.mean) @ self.basis.T, dtype=np.float32)

    def apply_one(self, query: np.ndarray) -> np.ndarray:
        """Rotate one query, shape (1, D), on this thread alone: FAISS's SIMD inner products,
        0.09-0.11 ms for D = 768. Not numpy's BLAS, which takes 0.03 ms on two threads but then
        leaves a worker spinning for more work on the second core, where another graph part is
        being searched: 100k, one part, 3.0 ms a query (and 5.9 ms of CPU) with numpy's, 2.0 ms
        (2.0 ms of CPU) with this."""
        centred = np.ascontiguousarray(query.reshape(-1) - self.mean, dtype=np.float32)
        out = np.empty((1, len(self.mean)), np.float32)
        faiss = faiss_module()
        faiss.fvec_inner_products_ny(
            faiss.swig_ptr(out),
            faiss.swig_ptr(centred),
            faiss.swig_ptr(self.basis),
            len(self.mean),
            len(self.mean),
        )
        return out

    def to_bytes(self) -> bytes:
        return self.mean.astype("<f4").tobytes() + self.basis.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, raw: np.ndarray, dimension: int) -> Rotation:
        """From ``size(dimension)`` bytes of ``to_bytes`` (the file's layout check sized them)."""
        values = raw.view("<f4").astype(np.float32)
        return cls(values[:dimension].copy(), values[dimension:].reshape(dimension, dimension))

    @staticmethod
    def size(dimension: int) -> int:
        return 4 * dimension * (dimension + 1)


class GraphPart:
    """A FAISS ``IndexHNSWFlatPanorama`` over rotated vectors (``panorama``), an
    ``IndexHNSWFlat``, or, read from an older file, an ``IndexHNSWSQ`` with float16 vectors; keyed
    by chunk id, with tombstoned removal. Not thread-safe: the owning ``AnnIndex`` serialises
    every call, and rotates what a Panorama part is given.

    Panorama (FAISS's implementation of arXiv 2510.00566) walks the same HNSW graph, but reads a
    candidate's vector a slice at a time and drops the candidate as soon as a bound on the rest
    of its distance rules it out of the results. A search waits mostly on memory, so reading
    less of each vector is what makes it faster (see ``ann``'s notes for the figures). FAISS
    implements it for L2 distance only: a cosine part searches unit vectors by L2 distance
    (the same order) and reports ``(|q|^2 + 1 - d^2) / 2``, which is ``q . x``.

    FAISS's HNSW cannot remove vectors, so removal is a tombstone: the slot stays in the graph (a
    stepping stone still) and a bitmap keeps it out of results; once a quarter of the slots are
    dead the part is rebuilt from the live vectors it holds (``rebuilt``, then ``catch_up``; big
    parts on a background thread, see ``AnnIndex.remove``)."""

    def __init__(
        self,
        dimension: int,
        similarity: str,
        graph: Any = None,
        *,
        float16: bool = False,
        panorama: bool = False,
    ) -> None:
        self.dimension = dimension
        self.similarity = similarity
        if graph is None:
            graph = _new_graph(dimension, similarity, float16=float16, panorama=panorama)
        self.graph = graph
        # HNSW's M, neighbours per node above the bottom layer (which has twice as many); the
        # graph is later only swapped for copies of itself (``writable``, huge pages)
        self.connectivity = int(graph.hnsw.nb_neighbors(1))
        faiss = faiss_module()
        kind = faiss.downcast_index(graph)
        # float16 copies: only in a graph read from an older file, or a compacted copy of one
        self.float16 = isinstance(kind, faiss.IndexHNSWSQ)
        self.panorama = isinstance(kind, faiss.IndexHNSWFlatPanorama)  # rotated vectors, L2
        self.keys = np.zeros(0, np.int64)  # slot -> chunk id
        self.dead = np.zeros(0, bool)  # slot -> tombstoned
        self.n_dead = 0
        # a read-only view (of the file, or of a copy on huge pages): copied before any change
        self.view = graph is not None
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # sorted live keys, their slots
        self._selector: Any = None  # search parameters excluding tombstones, built on demand

    @property
    def live(self) -> int:
        return len(self.keys) - self.n_dead

    @property
    def slots(self) -> int:
        return len(self.keys)

    def set_slots(self, keys: np.ndarray, dead: np.ndarray) -> None:
        self.keys, self.dead, self.n_dead = keys, dead, int(dead.sum())
        self._changed()

    def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int = 0) -> None:
        """Append vectors (keys already checked to be new by the caller); big batches use
        ``threads`` threads (0: every CPU)."""
        self.writable()
        with _threads(threads if len(keys) >= PARALLEL_ADD_MIN else 1):
            self.graph.add(vectors)
        if self.graph.ntotal * self.code_size() >= HUGE_PAGES_MIN_BYTES:
            advise_huge_pages(self.graph)  # growing may have moved the arrays
        self.keys = np.concatenate([self.keys, keys])
        self.dead = np.concatenate([self.dead, np.zeros(len(keys), bool)])
        self._changed()

    def remove(self, keys: np.ndarray) -> None:
        """Tombstone these chunk ids where present (``AnnIndex`` decides when to compact)."""
        slots = self.slots_of(keys)
        slots = slots[slots >= 0]
        if not len(slots):
            return
        self.dead[slots] = True
        self.n_dead = int(self.dead.sum())  # recounted: repeated keys would over-count
        self._changed()

    @property
    def due_for_compaction(self) -> bool:
        return self.n_dead > COMPACT_DEAD_FRACTION * len(self.keys)

    def slots_of(self, keys: np.ndarray) -> np.ndarray:
        """The live slot of each key, -1 where absent."""
        if self._lookup is None:
            live = np.flatnonzero(~self.dead)
            order = np.argsort(self.keys[live], kind="stable")
            self._lookup = (self.keys[live][order], live[order])
        sorted_keys, sorted_slots = self._lookup
        if not len(sorted_keys):
            return np.full(len(keys), -1, np.int64)
        at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return np.where(sorted_keys[at] == keys, sorted_slots[at], -1)

    def search(
        self, query: np.ndarray, count: int, ef: int, norm_sq: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, approximate similarity, higher is better) of up to ``count`` nearest.
        A Panorama part takes the rotated query, and ``norm_sq``, the squared length of the query
        as it was (to turn a cosine part's L2 distances back into similarities)."""
        count = min(count, self.live)
        if count <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        ef = max(ef, count)
        if self.n_dead:
            params = self._search_params()
            params.efSearch = ef
            scores, slots = self.graph.search(query, count, params=params)
        else:
            self.graph.hnsw.efSearch = ef
            scores, slots = self.graph.search(query, count)
        slots, scores = slots[0], scores[0]
        found = slots >= 0  # fewer than ``count`` reachable
        return self.keys[slots[found]], self._similarity(scores[found], norm_sq)

    def _similarity(self, scores: np.ndarray, norm_sq: float) -> np.ndarray:
        """FAISS's scores as similarities: it reports squared distances for L2 graphs."""
        if self.similarity == "euclidean":
            return -np.sqrt(np.maximum(scores, 0.0))
        if self.panorama:  # unit vectors: |q - x|^2 = |q|^2 + 1 - 2 q . x
            return (norm_sq + 1.0 - scores) / 2.0
        return scores

    def writable(self) -> None:
        """Copy a viewed graph into memory: FAISS aborts the process (not an exception) when a
        viewed graph is changed."""
        if self.view:
            faiss = faiss_module()
            self.graph = faiss.deserialize_index(faiss.serialize_index(self.graph))
            self.view = False  # huge pages: asked for by add(), once the arrays have grown

    @property
    def score_margin(self) -> float:
        """Twice the most a similarity this part reports can be off the float32 one, relative to
        |q| |x|: float16 rounding (see ``rescore``), or, for float32 copies, only the summation
        order of two D-term float32 sums (at most 2 * D * 2**-24: 9e-5 for D = 768); a Panorama
        part's vectors and query were also rotated in float32, which adds as much again."""
        if self.float16:
            return MARGIN
        return max(2e-4, (8 if self.panorama else 4) * self.dimension * 2.0**-24)

    def vectors_of(self, slots: np.ndarray) -> np.ndarray:
        """The stored vectors of these slots, as float32 (rotated, in a Panorama part): exact, so
        a rebuilt graph (of the same kind, see ``rebuilt``) holds the same values."""
        if not len(slots):
            return np.zeros((0, self.dimension), np.float32)
        return np.asarray(self.graph.reconstruct_batch(slots.astype(np.int64)), np.float32)

    def rebuilt(self, keys: np.ndarray, vectors: np.ndarray, threads: int = 0) -> GraphPart:
        """A new part of the same kind holding ``vectors`` under ``keys`` (no tombstones)."""
        log.info("compacting an ANN graph part: %d live of %d slots", len(keys), self.slots)
        fresh = GraphPart(
            self.dimension, self.similarity, float16=self.float16, panorama=self.panorama
        )
        if len(keys):
            fresh.add(keys, vectors, threads)
        return fresh

    def catch_up(self, old: GraphPart, slots: int, dead: np.ndarray) -> None:
        """Apply to this rebuilt copy what happened to ``old`` since it had ``slots`` slots and
        the tombstones ``dead``: the slots removed since, and the ones appended since."""
        removed = old.dead[:slots] & ~dead
        if removed.any():
            self.remove(old.keys[:slots][removed])
        added = slots + np.flatnonzero(~old.dead[slots:])
        if len(added):
            self.add(old.keys[added], old.vectors_of(added))

    def code_size(self) -> int:
        return int(faiss_module().downcast_index(self.graph.storage).code_size)

    def _changed(self) -> None:
        self._lookup = None
        self._selector = None

    def _search_params(self) -> Any:
        if self._selector is None:
            faiss = faiss_module()
            bits = np.packbits(~self.dead, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self.dead), faiss.swig_ptr(bits))
            params = faiss.SearchParametersHNSW(sel=selector)
            self._selector = (params, selector, bits)  # FAISS keeps pointers, not references
        return self._selector[0]


def _new_graph(
    dimension: int, similarity: str, *, float16: bool = False, panorama: bool = False
) -> Any:
    """An empty graph: Panorama over rotated float32 vectors (cosine and euclidean), plain
    float32, or float16 only to compact an older float16 part (its vectors are already rounded;
    widening them would make ``score_margin`` a lie)."""
    faiss = faiss_module()
    metric = faiss.METRIC_L2 if similarity == "euclidean" else faiss.METRIC_INNER_PRODUCT
    if panorama:
        if similarity not in PANORAMA_SIMILARITIES:
            raise ValueError(f"Panorama parts search by L2 distance, not {similarity!r}")
        graph = faiss.IndexHNSWFlatPanorama(
            dimension, CONNECTIVITY, min(PANORAMA_LEVELS, dimension), faiss.METRIC_L2
        )
    elif float16:
        graph = faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_fp16, CONNECTIVITY, metric)
    else:
        graph = faiss.IndexHNSWFlat(dimension, CONNECTIVITY, metric)
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
