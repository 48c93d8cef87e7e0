"""The queue's bookkeeping: one ``Job`` per request, and a fair pick of rows for each step.

A step takes rows from every waiting request in turn (each gets an equal share of the step's token
budget first, then any budget left goes in arrival order), so a request of a thousand texts is
split across many steps while one-text requests that arrive behind it run in the next step.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Job:
    """One request: its token ids, the rows done so far and its future."""

    ids: list[np.ndarray]
    future: Future[np.ndarray] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    lengths: np.ndarray = field(init=False)
    order: np.ndarray = field(init=False)  # longest rows first, so a step's slice pads little
    taken: int = 0  # rows of ``order`` handed to a step (their tokens left the queue's count)
    out: np.ndarray | None = None
    failed: BaseException | None = None

    def __post_init__(self) -> None:
        self.lengths = np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))
        self.order = np.argsort(-self.lengths, kind="stable")

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def remaining_tokens(self) -> int:
        """Tokens of the rows not yet handed to a step."""
        return int(self.lengths[self.order[self.taken :]].sum())

    @property
    def finished(self) -> bool:
        return self.failed is not None or self.taken >= len(self.ids)

    def store(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Keep the vectors of ``rows`` (indices into ``ids``)."""
        if self.out is None:
            self.out = np.empty((len(self.ids), vectors.shape[1]), dtype=np.float32)
        self.out[rows] = vectors


@dataclass(frozen=True)
class Slice:
    """Rows ``job.order[start:end]`` of one job, taken into a step."""

    job: Job
    start: int
    end: int

    @property
    def rows(self) -> np.ndarray:
        return self.job.order[self.start : self.end]


def pick(jobs: list[Job], budget: int) -> list[Slice]:
    """Rows for one step of at most ``budget`` real tokens (at least one row), fairly shared.

    First every job (in arrival order) takes rows up to an equal share of the budget, at least
    one row while budget is left; then the rest of the budget goes to jobs in arrival order.
    """
    taken = {id(job): job.taken for job in jobs}
    used = 0
    share = max(1, budget // max(1, len(jobs)))
    for first_pass in (True, False):
        for job in jobs:
            at = taken[id(job)]
            own = 0
            limit = share if first_pass else budget
            while at < len(job.ids):
                length = int(job.lengths[job.order[at]])
                if used and used + length > budget:
                    break
                if own and own + length > limit:
                    break
                own += length
                used += length
                at += 1
            taken[id(job)] = at
            if used >= budget:
                break
        if used >= budget:
            break
    return [Slice(job, job.taken, taken[id(job)]) for job in jobs if taken[id(job)] > job.taken]


def processor_share(jobs: list[Job], tokens: int) -> int:
    """Tokens of other jobs computed before a new request of ``tokens`` finishes, when every job
    gets an equal share of each step: each job contributes at most the new request's size."""
    return sum(min(job.remaining_tokens, tokens) for job in jobs)
