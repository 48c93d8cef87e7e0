"""One part of the HNSW cache: a FAISS graph over float32 vectors, its slot -> chunk id array and
its tombstones. ``AnnIndex`` holds one or more parts and does the locking and the files."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from distilmarco.index.ann.config import AnnConfig
from distilmarco.index.ann.native import advise_huge_pages, faiss_module, omp_threads

log = logging.getLogger(__name__)

PANORAMA_LEVELS = 8  # slices of each rotated vector that Panorama bounds the distance after
# L2 order is similarity order for these (cosine vectors are unit length); not for "dot"
PANORAMA_SIMILARITIES = ("cosine", "euclidean")


class GraphPart:
    """A FAISS ``IndexHNSWFlatPanorama`` over rotated vectors (``panorama``) or an
    ``IndexHNSWFlat``, keyed by chunk id, with tombstoned removal. Not thread-safe: the owning
    ``AnnIndex`` serialises every call, and rotates what a Panorama part is given.

    Panorama (FAISS's implementation of arXiv 2510.00566) walks the same HNSW graph, but reads a
    candidate's vector a slice at a time and drops the candidate as soon as a bound on the rest
    of its distance rules it out of the results: a search waits mostly on memory, so reading
    less of each vector makes it faster. FAISS implements it for L2 distance only: a cosine part
    searches unit vectors by L2 distance (the same order) and reports ``(|q|^2 + 1 - d^2) / 2``,
    which is ``q . x``.

    FAISS's HNSW cannot remove vectors, so removal is a tombstone: the slot stays in the graph (a
    stepping stone still) and a bitmap keeps it out of results; once enough slots are dead the
    part is rebuilt from the live vectors it holds (``rebuilt``, then ``catch_up``; big parts on
    a background thread, see ``compaction``)."""

    def __init__(
        self,
        dimension: int,
        similarity: str,
        config: AnnConfig,
        graph: Any = None,
        *,
        panorama: bool = False,
    ) -> None:
        self.dimension = dimension
        self.similarity = similarity
        self.config = config
        # a read-only view (of a loaded file's memory): copied before any change
        self.view = graph is not None
        if graph is None:
            graph = _new_graph(dimension, similarity, config, panorama=panorama)
        self.graph = graph
        # HNSW's M of this graph (the bottom layer has twice as many neighbours)
        self.m = int(graph.hnsw.nb_neighbors(1))
        faiss = faiss_module()
        self.panorama = isinstance(faiss.downcast_index(graph), faiss.IndexHNSWFlatPanorama)
        self.keys = np.zeros(0, np.int64)  # slot -> chunk id
        self.dead = np.zeros(0, bool)  # slot -> tombstoned
        self.n_dead = 0
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
        with omp_threads(threads if len(keys) >= self.config.parallel_add_min else 1):
            self.graph.add(vectors)
        if self.graph.ntotal * self.code_size() >= self.config.huge_pages_min_bytes:
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
        return self.n_dead > self.config.compact_dead_fraction * len(self.keys)

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
        self, query: np.ndarray, count: int, ef_search: int, norm_sq: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, approximate similarity, higher is better) of up to ``count`` nearest.
        A Panorama part takes the rotated query, and ``norm_sq``, the squared length of the query
        as it was (to turn a cosine part's L2 distances back into similarities)."""
        count = min(count, self.live)
        if count <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        ef_search = max(ef_search, count)
        if self.n_dead:
            params = self._search_params()
            params.efSearch = ef_search
            scores, slots = self.graph.search(query, count, params=params)
        else:
            self.graph.hnsw.efSearch = ef_search
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
        """Copy a viewed graph into memory of its own: FAISS aborts the process (not an
        exception) when a viewed graph is changed."""
        if self.view:
            faiss = faiss_module()
            self.graph = faiss.deserialize_index(faiss.serialize_index(self.graph))
            self.view = False  # huge pages: asked for by add(), once the arrays have grown

    @property
    def score_margin(self) -> float:
        """Twice the most a similarity this part reports can be off the float32 one, relative to
        |q| |x|: the summation order of two D-term float32 sums (at most 2 * D * 2**-24); a
        Panorama part's vectors and query were also rotated in float32, which adds as much."""
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
        fresh = GraphPart(self.dimension, self.similarity, self.config, panorama=self.panorama)
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


def _new_graph(dimension: int, similarity: str, config: AnnConfig, *, panorama: bool) -> Any:
    """An empty graph: Panorama over rotated float32 vectors (cosine and euclidean), or plain
    float32 HNSW."""
    faiss = faiss_module()
    metric = faiss.METRIC_L2 if similarity == "euclidean" else faiss.METRIC_INNER_PRODUCT
    if panorama:
        if similarity not in PANORAMA_SIMILARITIES:
            raise ValueError(f"Panorama parts search by L2 distance, not {similarity!r}")
        graph = faiss.IndexHNSWFlatPanorama(
            dimension, config.m, min(PANORAMA_LEVELS, dimension), faiss.METRIC_L2
        )
    else:
        graph = faiss.IndexHNSWFlat(dimension, config.m, metric)
    graph.hnsw.efConstruction = config.ef_construction
    return graph
