"""Token-exact chunking with the model's own tokenizer.

A document is cut into windows of at most ``window`` tokens (without [CLS]/[SEP]) that overlap by
``overlap`` tokens, and each window is kept as a character span of the original text. Window ends
are moved back to the last whitespace gap in the window's second half when there is one, so that a
chunk never splits a word (re-tokenising the passage gives exactly the same tokens). Together the
spans cover every token: nothing past the model's limit is silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from distilmarco.errors import InputError


@dataclass(frozen=True)
class ChunkConfig:
    window: int  # tokens per chunk, special tokens excluded
    overlap: int  # tokens shared by consecutive chunks

    @classmethod
    def for_model(cls, max_seq_length: int, window: int | None, overlap: int | None) -> ChunkConfig:
        """Validate against the model's limit; default = the whole limit and 1/8 of it overlap."""
        limit = max_seq_length - 2
        window = limit if window is None else window
        if not isinstance(window, int) or not 8 <= window <= limit:
            raise InputError(
                f"chunk window {window!r} must be an integer between 8 and {limit} tokens "
                f"(the model's max_seq_length {max_seq_length} minus [CLS] and [SEP])"
            )
        overlap = min(32, window // 8) if overlap is None else overlap
        if not isinstance(overlap, int) or not 0 <= overlap <= window // 2:
            raise InputError(
                f"chunk overlap {overlap!r} must be an integer between 0 and {window // 2} "
                f"(half the window of {window} tokens)"
            )
        return cls(window, overlap)


def chunk_spans(
    offsets: Sequence[tuple[int, int]], text_length: int, config: ChunkConfig
) -> list[tuple[int, int]]:
    """Character spans (start, end) of the chunks of a text whose tokens have ``offsets``.

    A text with no tokens (only whitespace or characters the tokenizer drops) is one chunk
    covering the whole text.
    """
    n = len(offsets)
    if n <= config.window:
        return [(0, text_length)]
    spans: list[tuple[int, int]] = []
    first = 0
    while True:
        last = min(first + config.window, n)  # exclusive token index
        if last < n:
            last = _word_boundary(offsets, first, last)
        start = 0 if first == 0 else offsets[first][0]
        end = text_length if last == n else offsets[last - 1][1]
        spans.append((start, end))
        if last == n:
            return spans
        floor = first + 1
        first = _word_start(offsets, max(last - config.overlap, floor), floor)


def _word_boundary(offsets: Sequence[tuple[int, int]], first: int, last: int) -> int:
    """The largest cut <= ``last`` in the window's second half with a gap before token ``cut``."""
    half = first + (last - first) // 2
    for cut in range(last, half, -1):
        if offsets[cut][0] > offsets[cut - 1][1]:
            return cut
    return last


def _word_start(offsets: Sequence[tuple[int, int]], first: int, floor: int) -> int:
    """Move ``first`` back (at most 16 tokens, never below ``floor``) to the start of its word."""
    floor = max(first - 16, floor)
    while first > floor and offsets[first][0] == offsets[first - 1][1]:
        first -= 1
    return first
