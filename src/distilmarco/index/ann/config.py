"""The ANN cache's tunables, in one frozen value passed down from ``Index`` (never patched)."""

from __future__ import annotations

from dataclasses import dataclass

from distilmarco.errors import InputError


@dataclass(frozen=True)
class AnnConfig:
    """How the HNSW cache builds, searches, reads and compacts its graphs.

    The defaults are what ``Index`` uses; tests and benchmarks pass their own instead. The figures
    behind them are in ``benchmarks/results/ann-notes.md``."""

    # HNSW's M (neighbours per node above the bottom layer) of new graphs; loaded graphs keep theirs
    m: int = 32
    # FAISS's efConstruction: the candidate list an insertion keeps
    ef_construction: int = 128
    # a fixed efSearch for every part instead of the size table (``ef_search.part_ef_search``)
    ef_search: int | None = None
    # slots per graph part; new vectors open a new part once every part is full
    part_size: int = 500_000
    # an index whose first add brings this many bytes of vectors gets rotated Panorama parts
    # (cosine, euclidean): below it the vectors sit in the CPU's caches, where Panorama costs more
    rotation_min_bytes: int = 64 << 20
    # parts of at least this many slots are compacted on a background thread, smaller ones at once
    background_compact_min: int = 50_000
    # slots a background compaction copies out per hold of the lock
    snapshot_batch: int = 65_536
    # rebuild a part once this share of its slots are tombstones
    compact_dead_fraction: float = 0.25
    # vectors per add from which FAISS inserts on every thread
    parallel_add_min: int = 20_000
    # graphs at least this big (built or loaded) move onto huge pages: a random graph walk
    # misses the TLB on small pages
    huge_pages_min_bytes: int = 32 << 20
    # bytes read (and checksummed while still in the CPU's cache) per step when a file is loaded
    read_chunk_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        for name in ("m", "ef_construction", "part_size", "snapshot_batch", "read_chunk_bytes"):
            if getattr(self, name) < 1:
                raise InputError(f"AnnConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.ef_search is not None and self.ef_search < 1:
            raise InputError(
                f"AnnConfig.ef_search must be at least 1 or None, got {self.ef_search}"
            )
        if not 0.0 < self.compact_dead_fraction <= 1.0:
            raise InputError(
                f"AnnConfig.compact_dead_fraction must be in (0, 1], got {self.compact_dead_fraction}"
            )
