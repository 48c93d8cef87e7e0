"""``ef_search`` (FAISS's ``efSearch``: the candidates a search keeps) for each graph part.

A bigger graph needs a larger ef_search for the same recall; the table's anchors are the smallest
``ef_search`` that held recall@10 0.95 with about 0.015 to spare on clustered 768-d vectors with
M 32 (calibration in ``benchmarks/results/ann-notes.md``); between anchors it grows linearly in
log(size), and stays constant beyond the last.
"""

from __future__ import annotations

import functools

import numpy as np

# (graph size, ef_search) anchors for graphs of M 32
EF_SEARCH_BY_SIZE = ((50_000, 56), (100_000, 64), (1_000_000, 148))
# Equal parts searched together each hold only their share of the global top 10, found with a
# smaller ef_search than a lone graph of their size needs: each gets this share of its own.
MERGED_EF_SCALE = 0.65


@functools.lru_cache(maxsize=64)
def ef_search_for(size: int) -> int:
    """The ``ef_search`` of a lone graph of ``size`` vectors (``EF_SEARCH_BY_SIZE``,
    log-interpolated). Cached: numpy's interpolation costs a noticeable share of a small query."""
    sizes = np.log([n for n, _ in EF_SEARCH_BY_SIZE])
    efs = [ef for _, ef in EF_SEARCH_BY_SIZE]
    return int(np.rint(np.interp(np.log(max(size, 1)), sizes, efs)))


def part_ef_search(sizes: list[int], fixed: int | None = None) -> list[int]:
    """The ``ef_search`` of each part searched together with the others (``sizes``: their live
    vectors); ``fixed`` instead for every part when given (``AnnConfig.ef_search``).

    Equal parts get ``MERGED_EF_SCALE`` of their own size's ef_search; a part holding nearly all
    the vectors holds nearly all the top 10 too, and gets about its lone-graph ef_search: the
    scale moves linearly from the first to the second as the part's share grows from 1/P to 1."""
    if fixed:
        return [fixed] * len(sizes)
    total, n = sum(sizes), len(sizes)
    if n == 1:
        return [ef_search_for(sizes[0])]
    out = []
    for size in sizes:
        excess = min(max((size / total * n - 1) / (n - 1), 0.0), 1.0)
        scale = MERGED_EF_SCALE + (1 - MERGED_EF_SCALE) * excess
        out.append(round(ef_search_for(size) * scale))
    return out
