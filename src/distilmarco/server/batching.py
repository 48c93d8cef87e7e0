"""One inference worker thread fed by a bounded queue that forms batches by token budget.

Requests arrive already tokenised. The worker takes every queued request that fits in
``max_batch_tokens`` (waiting at most ``max_wait_s`` after the oldest one for company), runs
them as one length-sorted, padded set of batches of at most ``run_tokens`` each through the
backend (the size it runs fastest at), and hands each request its rows. The queue holds at most
``max_queue_tokens`` tokens; beyond that ``submit`` raises ``QueueFullError`` (HTTP 429). Other
model work (index search and writes) runs on the same thread through ``call`` so that only one
thing uses the model at a time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from distilmarco.encoder import MAX_BATCH_SIZE, pad_batch
from distilmarco.errors import BackendError, DistilmarcoError

log = logging.getLogger(__name__)
T = TypeVar("T")
EmbedFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


# A row joins a batch while its padding is at most this fraction of the batch's longest row, or
# while the batch is still this small in padded tokens (then one more call costs more than padding).
PAD_SLACK = 0.2
SMALL_BATCH_TOKENS = 256


def plan_padded(
    lengths: np.ndarray, budget: int, slack: float = PAD_SLACK, small: int = SMALL_BATCH_TOKENS
) -> list[np.ndarray]:
    """Row indices per batch, longest first; rows x longest <= ``budget`` and little padding.

    ``Encoder.encode`` sorts a whole corpus, so neighbours have similar lengths; a server batch
    mixes short queries with long passages, so it also starts a new batch where padding the
    next row to the current longest would waste more than ``slack`` of it.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        cap = max(1, min(budget // longest, MAX_BATCH_SIZE))
        end = start + 1
        while end < len(order) and end - start < cap:
            rows = end - start + 1
            close = lengths[order[end]] >= (1.0 - slack) * longest
            if not (close or rows * longest <= small):
                break
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


class QueueFullError(DistilmarcoError):
    """The inference queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerClosedError(DistilmarcoError):
    """The worker is shutting down and accepts no new work."""


@dataclass(frozen=True)
class BatchReport:
    """What one worker step did, for metrics."""

    requests: int
    inputs: int
    tokens: int
    padded_tokens: int
    seconds: float


@dataclass
class _Job:
    future: Future[Any]
    enqueued: float
    tokens: int = 0
    ids: list[np.ndarray] | None = None
    call: Callable[[], Any] | None = None


class MicroBatcher:
    """Bounded token-budget queue in front of a single inference thread.

    ``on_batch`` gets a ``BatchReport`` after every batch (metrics); ``on_idle`` runs on the
    worker whenever a batch leaves the queue empty (the server returns freed memory there).
    """

    def __init__(
        self,
        embed: EmbedFn,
        pad_id: int,
        *,
        max_batch_tokens: int = 16384,
        run_tokens: int | None = None,
        max_queue_tokens: int = 131072,
        max_wait_s: float = 0.002,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._embed = embed
        self._pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        # Rows x longest per backend call; the whole taken group when not given.
        self.run_tokens = min(run_tokens or max_batch_tokens, max_batch_tokens)
        self.max_queue_tokens = max_queue_tokens
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._on_idle = on_idle
        self._queue: deque[_Job] = deque()
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._closing = False
        self._tokens_per_s = 2000.0  # running estimate, for Retry-After
        self._thread = threading.Thread(target=self._run, name="distilmarco-inference", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish everything already queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the one being computed)."""
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    # --- submitting -----------------------------------------------------------------------

    def submit(self, ids: list[np.ndarray]) -> Future[np.ndarray]:
        """Queue one request's token ids; its future gets a float32 (len(ids), D) array."""
        tokens = sum(len(x) for x in ids)
        job = _Job(Future(), time.perf_counter(), tokens=tokens, ids=ids)
        with self._cond:
            self._check_open()
            if self._queued_tokens and self._queued_tokens + tokens > self.max_queue_tokens:
                raise QueueFullError(
                    f"the inference queue is full ({self._queued_tokens} of "
                    f"{self.max_queue_tokens} tokens queued); retry later",
                    self._retry_after(tokens),
                )
            self._queue.append(job)
            self._queued_tokens += tokens
            self._cond.notify()
        return job.future

    def submit_call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the inference thread, in queue order."""
        job = _Job(Future(), time.perf_counter(), call=fn)
        with self._cond:
            self._check_open()
            self._queue.append(job)
            self._cond.notify()
        return job.future

    async def embed(self, ids: list[np.ndarray]) -> np.ndarray:
        return await asyncio.wrap_future(self.submit(ids))

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit_call(fn))

    def _check_open(self) -> None:
        if self._closing:
            raise ServerClosedError("the server is shutting down and takes no new work")

    def _retry_after(self, tokens: int) -> int:
        wait = (self._queued_tokens + tokens) / max(self._tokens_per_s, 1.0)
        return max(1, min(60, math.ceil(wait)))

    # --- the worker -----------------------------------------------------------------------

    def _take(self) -> list[_Job] | None:
        """The next group of jobs to run together; None when closed and drained."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._queue[0]
            if first.call is not None:
                return [self._queue.popleft()]
            deadline = first.enqueued + self.max_wait_s
            while self._queued_tokens < self.max_batch_tokens and not self._closing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            group: list[_Job] = []
            tokens = 0
            while self._queue and self._queue[0].call is None:
                nxt = self._queue[0]
                if group and tokens + nxt.tokens > self.max_batch_tokens:
                    break
                group.append(self._queue.popleft())
                tokens += nxt.tokens
            self._queued_tokens -= tokens
            return group

    def _run(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            live = [job for job in group if job.future.set_running_or_notify_cancel()]
            if not live:
                continue
            if live[0].call is not None:
                try:
                    live[0].future.set_result(live[0].call())
                except BaseException as exc:
                    live[0].future.set_exception(exc)
                continue
            try:
                results = self._compute(live)
            except BaseException as exc:
                log.exception("inference failed for %d request(s)", len(live))
                for job in live:
                    job.future.set_exception(exc)
                continue
            for job, rows in zip(live, results, strict=True):
                job.future.set_result(rows)
            if not self._queue and self._on_idle is not None:
                self._on_idle()  # going idle: e.g. hand freed memory back to the OS

    def _compute(self, jobs: list[_Job]) -> list[np.ndarray]:
        start = time.perf_counter()
        ids = [x for job in jobs for x in job.ids or ()]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out: np.ndarray | None = None
        padded = 0
        for rows in plan_padded(lengths, self.run_tokens):
            batch, mask = pad_batch([ids[i] for i in rows], self._pad_id)
            vectors = self._embed(batch, mask)
            if out is None:
                out = np.empty((len(ids), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
            padded += mask.size
        if out is None:
            raise BackendError("no inputs to embed")
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise BackendError(
                f"the backend produced non-finite values for {int(bad.sum())} input(s)"
            )
        seconds = time.perf_counter() - start
        tokens = int(lengths.sum())
        if seconds > 0:
            self._tokens_per_s = 0.8 * self._tokens_per_s + 0.2 * (tokens / seconds)
        if self._on_batch is not None:
            self._on_batch(BatchReport(len(jobs), len(ids), tokens, padded, seconds))
        splits = np.cumsum([len(job.ids or ()) for job in jobs])[:-1]
        return np.split(out, splits)
