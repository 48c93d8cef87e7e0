"""One inference worker thread fed by a bounded, fair queue of tokenised requests.

Each step the worker takes at most ``run_tokens`` real tokens (the size the backend runs fastest
at), shared fairly among every waiting request (``fairqueue.pick``): a huge request is computed a
slice per step, and a small one that arrives behind it runs in the next step. A request whose
client left is dropped from the queue, and its rows stop at the next step. Rows with non-finite
output fail only the request that sent them; the rest of their backend call is re-run without
them. The queue sheds load (``QueueFullError``, HTTP 429) when it holds ``max_queue_tokens`` or
when a new request would wait longer than ``max_queue_wait_s`` at the measured throughput.
``call`` runs other work on the same thread, between steps.
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

from distilmarco.batching import non_finite_rows, pad_batch, plan_batches
from distilmarco.errors import (
    NonFiniteOutputError,
    QueueFullError,
    ServerClosedError,
)
from distilmarco.server.fairqueue import Job, Slice, pick, processor_share

log = logging.getLogger(__name__)
T = TypeVar("T")
EmbedFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
RELEASE_EVERY_S = 1.0  # under unbroken load, hand freed memory back at least this often


@dataclass(frozen=True)
class BatchReport:
    """What one worker step did, for metrics."""

    requests: int
    inputs: int
    tokens: int
    padded_tokens: int
    seconds: float


@dataclass(frozen=True)
class _Call:
    future: Future[Any]
    fn: Callable[[], Any]


class MicroBatcher:
    """Bounded fair token queue in front of a single inference thread.

    ``on_batch`` gets a ``BatchReport`` after every step (metrics); ``on_idle`` runs on the
    worker when a step leaves the queue empty, and at least every ``RELEASE_EVERY_S`` under
    unbroken load (the server returns freed memory to the OS there).
    """

    def __init__(
        self,
        embed: EmbedFn,
        pad_id: int,
        *,
        max_batch_tokens: int = 16384,
        run_tokens: int | None = None,
        max_queue_tokens: int = 131072,
        max_queue_wait_s: float | None = None,
        max_wait_s: float = 0.002,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._embed = embed
        self._pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        # Real tokens per step: one backend call's worth, so a small request waits one call.
        self.run_tokens = min(run_tokens or max_batch_tokens, max_batch_tokens)
        self.max_queue_tokens = max_queue_tokens
        self.max_queue_wait_s = max_queue_wait_s
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._on_idle = on_idle
        self._jobs: deque[Job] = deque()
        self._calls: deque[_Call] = deque()
        self._queued_tokens = 0
        self._step_tokens = 0  # tokens of the step being computed (a new request waits for it)
        self._cond = threading.Condition()
        self._closing = False
        # running estimate of throughput, for shedding and Retry-After: a guess until the first
        # step (the warm-up) is measured, then that measurement, then a moving average
        self._tokens_per_s = 2000.0
        self._measured = False
        self._released = time.perf_counter()
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
        """Requests with rows still waiting (not counting rows being computed), calls included."""
        return sum(job.taken < len(job.ids) for job in self._jobs) + len(self._calls)

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def tokens_per_s(self) -> float:
        return self._tokens_per_s

    # --- submitting -----------------------------------------------------------------------

    def submit(self, ids: list[np.ndarray]) -> Future[np.ndarray]:
        """Queue one request's token ids; its future gets a float32 (len(ids), D) array.

        Cancel the future (``cancel``) when the client leaves: its remaining rows are dropped.
        """
        job = Job(ids)
        tokens = job.tokens
        with self._cond:
            self._check_open()
            self._check_room(tokens)
            self._jobs.append(job)
            self._queued_tokens += tokens
            self._cond.notify()
        return job.future

    def cancel(self, future: Future[Any]) -> None:
        """Drop a request: gone from the queue now, or stopped after the step that is running."""
        future.cancel()
        with self._cond:
            for job in self._jobs:
                if job.future is future:
                    self._drop(job)
                    break

    def _drop(self, job: Job) -> None:
        """Take ``job`` out of the queue (lock held); its rows not yet taken leave the count."""
        self._jobs.remove(job)
        self._queued_tokens -= job.remaining_tokens

    def submit_call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the inference thread, before the next step."""
        call = _Call(Future(), fn)
        with self._cond:
            self._check_open()
            self._calls.append(call)
            self._cond.notify()
        return call.future

    async def embed(self, ids: list[np.ndarray]) -> np.ndarray:
        future = self.submit(ids)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.cancel(future)
            raise

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit_call(fn))

    def _check_open(self) -> None:
        if self._closing:
            raise ServerClosedError("the server is shutting down and takes no new work")

    def _check_room(self, tokens: int) -> None:
        """Shed when the queue is full or a new request would wait too long (lock held)."""
        if not self._jobs:
            return  # an idle server takes any request, however large
        if self._queued_tokens + tokens > self.max_queue_tokens:
            raise QueueFullError(
                f"the inference queue is full ({self._queued_tokens} of "
                f"{self.max_queue_tokens} tokens queued); retry later",
                self._retry_after(self._queued_tokens + tokens - self.max_queue_tokens),
            )
        if self.max_queue_wait_s is None:
            return
        # the step running now, then the steps until the new request's first step ends: the
        # next one (full when the queue can fill it), or its fair share of every other request
        own = min(tokens, self.run_tokens)
        next_step = min(self._queued_tokens + own, self.run_tokens)
        ahead = self._step_tokens + max(next_step, processor_share(list(self._jobs), own) + own)
        wait = ahead / max(self._tokens_per_s, 1.0)
        if wait > self.max_queue_wait_s:
            raise QueueFullError(
                f"the server is overloaded: this request would wait about {wait:.1f} s, more "
                f"than the limit of {self.max_queue_wait_s:g} s; retry later",
                self._retry_after(ahead),
            )

    def _retry_after(self, tokens: int) -> int:
        return max(1, min(60, math.ceil(tokens / max(self._tokens_per_s, 1.0))))

    # --- the worker -----------------------------------------------------------------------

    def _take(self) -> _Call | list[Slice] | None:
        """The next call, or the rows of the next step; None when closed and drained."""
        with self._cond:
            while not self._jobs and not self._calls:
                if self._closing:
                    return None
                self._cond.wait()
            if self._calls:
                return self._calls.popleft()
            if not any(job.taken for job in self._jobs):
                # wait a moment for company, unless a step's worth is already queued
                deadline = self._jobs[0].enqueued + self.max_wait_s
                while self._queued_tokens < self.run_tokens and not self._closing:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or not self._jobs:
                        break
                    self._cond.wait(remaining)
            live = [job for job in self._jobs if not job.future.cancelled()]
            slices = pick(live, self.run_tokens)
            self._step_tokens = 0
            for s in slices:
                taken = int(s.job.lengths[s.rows].sum())
                self._queued_tokens -= taken
                self._step_tokens += taken
                s.job.taken = s.end
            return slices

    def _run(self) -> None:
        while True:
            work = self._take()
            if work is None:
                return
            if isinstance(work, _Call):
                if work.future.set_running_or_notify_cancel():
                    try:
                        work.future.set_result(work.fn())
                    except BaseException as exc:
                        work.future.set_exception(exc)
                continue
            try:
                if work:
                    self._step(work)
            except Exception as exc:  # a fault of the worker itself: fail this step's requests
                log.exception("inference step failed")
                for s in work:
                    s.job.failed = s.job.failed or exc
            self._finish(work)
            now = time.perf_counter()
            if self._on_idle is not None and (
                not self._jobs or now - self._released >= RELEASE_EVERY_S
            ):
                self._released = now
                self._on_idle()  # e.g. hand freed memory back to the OS

    def _step(self, slices: list[Slice]) -> None:
        """Compute the rows of ``slices``; a failure or a non-finite row fails only its job."""
        start = time.perf_counter()
        owners = [s.job for s in slices for _ in range(s.end - s.start)]
        rows = np.concatenate([s.rows for s in slices])
        ids = [job.ids[r] for job, r in zip(owners, rows.tolist(), strict=True)]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        padded = 0
        for part in plan_batches(lengths, self.run_tokens):
            padded += self._run_part(part, ids, owners, rows)
        seconds = time.perf_counter() - start
        tokens = int(lengths.sum())
        if seconds > 0:
            speed = tokens / seconds
            self._tokens_per_s = 0.8 * self._tokens_per_s + 0.2 * speed if self._measured else speed
            self._measured = True
        if self._on_batch is not None:
            report = BatchReport(len(slices), len(ids), tokens, padded, seconds)
            self._on_batch(report)

    def _run_part(
        self, part: np.ndarray, ids: list[np.ndarray], owners: list[Job], rows: np.ndarray
    ) -> int:
        """One backend call (split per job when it raises); returns the padded tokens computed.
        Rows of requests that failed or were cancelled since the step began are left out."""
        live = [i for i in part.tolist() if owners[i].failed is None]
        part = np.asarray([i for i in live if not owners[i].future.cancelled()], dtype=np.int64)
        if not len(part):
            return 0
        batch, mask = pad_batch([ids[i] for i in part], self._pad_id)
        try:
            vectors = self._embed(batch, mask)
        except Exception as exc:
            jobs = {id(owners[i]): owners[i] for i in part}
            if len(jobs) == 1:
                log.error("inference failed for one request: %s", exc)
                next(iter(jobs.values())).failed = exc
                return int(mask.size)
            # one request's input may be what breaks the call: run each request on its own
            done = int(mask.size)
            for job in jobs.values():
                done += self._run_part(part[[owners[i] is job for i in part]], ids, owners, rows)
            return done
        bad = non_finite_rows(vectors)
        if bad.any():
            for i in part[bad].tolist():
                self._poisoned(owners[i], int(rows[i]))
            if any(owners[i].failed is None for i in part[~bad]):
                # the rest shared a call with a bad row: compute them again without it
                return int(mask.size) + self._run_part(part[~bad], ids, owners, rows)
            return int(mask.size)
        for i, vector in zip(part.tolist(), vectors, strict=True):
            owners[i].store(rows[i : i + 1], vector[None])
        return int(mask.size)

    @staticmethod
    def _poisoned(job: Job, row: int) -> None:
        if isinstance(job.failed, NonFiniteOutputError):
            positions = tuple(sorted({*job.failed.positions, row}))
        else:
            positions = (row,)
        shown = ", ".join(str(p) for p in positions[:10])
        job.failed = NonFiniteOutputError(
            f"the model produced non-finite values (not-a-number or infinity) for input(s) {shown} of "
            "this request, e.g. an overflow in reduced precision; other inputs were fine",
            positions,
        )

    def _finish(self, slices: list[Slice]) -> None:
        """Resolve the jobs that are finished, failed or cancelled."""
        with self._cond:
            self._step_tokens = 0
            for job in [j for j in self._jobs if j.future.cancelled() or j.failed is not None]:
                self._drop(job)
            for s in slices:
                job = s.job
                if job.failed is None and s.end < len(job.ids):
                    continue
                if job in self._jobs:
                    self._drop(job)
                if not job.future.set_running_or_notify_cancel():
                    continue
                if job.failed is not None:
                    job.future.set_exception(job.failed)
                else:
                    assert job.out is not None
                    job.future.set_result(job.out)
