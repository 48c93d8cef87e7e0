"""How token sequences are grouped into backend calls: one planner for the encoder and the server.

A batch holds at most ``budget`` padded tokens (rows x its longest row), longest rows first, and
stays nearly free of padding: a row joins only while it is at least ``1 - max_padding`` of the
batch's longest, or while the whole batch is still ``small_tokens`` or fewer (one more backend
call costs more than that much padding). Padded attention costs rows x length^2, so mixing short
queries with long passages in one call wastes most of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distilmarco.errors import InputError

MAX_BATCH_SIZE = 512
MAX_PADDING = 0.2
SMALL_BATCH_TOKENS = 256


def check_batch_tokens(budget: int, max_len: int) -> int:
    """``budget`` if it holds at least one full-length sequence; otherwise a clear error."""
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < max_len:
        raise InputError(
            f"batch_tokens must be an integer >= max_seq_length {max_len}, got {budget}"
        )
    return budget


def plan_batches(
    lengths: np.ndarray,
    budget: int,
    max_padding: float = MAX_PADDING,
    small_tokens: int = SMALL_BATCH_TOKENS,
) -> list[np.ndarray]:
    """Row indices per batch, longest first; every row exactly once."""
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        cap = max(1, min(budget // longest, MAX_BATCH_SIZE))
        end = start + 1
        while end < len(order) and end - start < cap:
            close = lengths[order[end]] >= (1.0 - max_padding) * longest
            if not (close or (end - start + 1) * longest <= small_tokens):
                break
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def pad_batch(ids: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest row: (B, T) int64 ids and attention mask."""
    width = max(len(x) for x in ids)
    batch = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, x in enumerate(ids):
        batch[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return batch, mask


def non_finite_rows(vectors: np.ndarray) -> np.ndarray:
    """(N,) bool: the rows holding a NaN or an infinity (a backend's overflow, never valid)."""
    return ~np.isfinite(vectors).all(axis=1)
