"""Batches from a stream of examples: a seeded shuffle buffer, and no duplicate text in a batch.

Memory holds the shuffle buffer and the examples put off to a later batch, never the whole file.
The batches of an epoch depend only on (data, seed, epoch), so a resumed run skips the batches it
has already trained on and continues exactly where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from distilmarco.errors import InputError
from distilmarco.training.data import Example

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerConfig:
    batch_size: int
    seed: int = 42
    shuffle_buffer: int = 10_000  # examples; 0 or 1 keeps file order
    no_duplicates: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.shuffle_buffer < 0:
            raise InputError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")


def shuffled(examples: Iterable[Example], size: int, rng: np.random.Generator) -> Iterator[Example]:
    """A buffered shuffle: each incoming example replaces a random one of ``size`` held."""
    if size <= 1:
        yield from examples
        return
    buffer: list[Example] = []
    for ex in examples:
        if len(buffer) < size:
            buffer.append(ex)
            continue
        i = int(rng.integers(size))
        yield buffer[i]
        buffer[i] = ex
    order = rng.permutation(len(buffer))
    for i in order:
        yield buffer[int(i)]


class _Filling:
    """The batch being filled and the texts it holds."""

    def __init__(self, size: int, no_duplicates: bool) -> None:
        self.size, self.no_duplicates = size, no_duplicates
        self.rows: list[Example] = []
        self.texts: set[str] = set()

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.size

    def fits(self, ex: Example) -> bool:
        return not self.no_duplicates or self.texts.isdisjoint(ex.texts)

    def add(self, ex: Example) -> None:
        self.rows.append(ex)
        self.texts.update(ex.texts)

    def take(self) -> list[Example]:
        rows, self.rows, self.texts = self.rows, [], set()
        return rows

    def refill(self, pending: list[Example]) -> list[Example]:
        """Move waiting examples that fit, oldest first; returns those still waiting."""
        rest: list[Example] = []
        for ex in pending:
            if not self.full and self.fits(ex):
                self.add(ex)
            else:
                rest.append(ex)
        return rest


def batches(examples: Iterable[Example], cfg: SamplerConfig, epoch: int) -> Iterator[list[Example]]:
    """The batches of one epoch. With ``no_duplicates``, an example sharing a text with the batch
    being filled waits for the next one (the in-batch-negative losses would otherwise treat a
    copy of the positive as a negative)."""
    rng = np.random.default_rng([cfg.seed, epoch])
    limit = max(cfg.shuffle_buffer, 4 * cfg.batch_size)
    batch = _Filling(cfg.batch_size, cfg.no_duplicates)
    pending: list[Example] = []
    for ex in shuffled(examples, cfg.shuffle_buffer, rng):
        if batch.fits(ex):
            batch.add(ex)
        else:
            pending.append(ex)
            if len(pending) > limit:
                # Too many near-copies to keep apart: let the oldest in anyway.
                log.warning("more than %d examples share texts; allowing a duplicate", limit)
                batch.add(pending.pop(0))
        while batch.full:
            yield batch.take()
            pending = batch.refill(pending)
    # The stream is done: what is left goes out in batches of its own; after a refill, nothing
    # still waiting fits the batch, so it is complete.
    while pending:
        pending = batch.refill(pending)
        rows = batch.take()
        if len(rows) == cfg.batch_size or not cfg.drop_last:
            yield rows
    if batch.rows and (batch.full or not cfg.drop_last):
        yield batch.take()


def count_batches(examples: Iterable[Example], cfg: SamplerConfig, epoch: int) -> int:
    return sum(1 for _ in batches(examples, cfg, epoch))
