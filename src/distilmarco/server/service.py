"""The embedding service behind the routes: limits -> tokenise (off the loop) -> shared batcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.types import Receive

from distilmarco.encoder import Encoder
from distilmarco.errors import ClientGoneError, QueueFullError
from distilmarco.server.batching import BatchReport, MicroBatcher
from distilmarco.server.http_errors import ApiError
from distilmarco.server.limits import check_texts
from distilmarco.server.metrics import Metrics
from distilmarco.server.settings import ServerSettings
from distilmarco.vectors import normalize_rows

log = logging.getLogger(__name__)
INLINE_TOKENIZE_CHARS = 2048  # cheaper to tokenise inline than to hop to a thread; larger: thread
WARMUP_TEXT = "warm-up: how do planes stay in the air?"


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # float32 (N, D)
    tokens: int  # real tokens, special tokens included
    truncated: int


class EmbeddingService:
    """Owns the inference worker; every route that needs vectors goes through ``embed``."""

    def __init__(self, encoder: Encoder, settings: ServerSettings, metrics: Metrics) -> None:
        self.encoder = encoder
        self.settings = settings
        self.metrics = metrics
        self.ready = False
        self.stopping = False
        self.batcher = MicroBatcher(
            encoder.backend.embed,
            encoder.tokenizer.pad_id,
            max_batch_tokens=settings.max_batch_tokens,
            run_tokens=encoder.batch_tokens,
            max_queue_tokens=settings.max_queue_tokens,
            max_queue_wait_s=settings.max_queue_wait_s,
            max_wait_s=settings.max_wait_ms / 1000.0,
            on_batch=self._observe,
            on_idle=release_memory(),
        )
        metrics.watch_queue(lambda: self.batcher.depth, lambda: self.batcher.queued_tokens)

    def _observe(self, report: BatchReport) -> None:
        self.metrics.observe_batch(report)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and queue the warm-up; ``ready`` turns True once it has run."""
        self.batcher.start()
        if not self.settings.warmup:
            self._set_ready()
            return
        ids = self.encoder.tokenizer.encode([WARMUP_TEXT] * 4).ids
        future = self.batcher.submit(ids)
        future.add_done_callback(lambda f: self._warmed(f.exception()))

    def _warmed(self, exc: BaseException | None) -> None:
        if exc is not None:
            log.error("warm-up failed: %s", exc)
            return
        log.info("warm-up done; ready")
        self._set_ready()

    def _set_ready(self) -> None:
        self.ready = True
        self.metrics.ready.set(1)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Refuse new work, finish what is queued, stop the worker."""
        self.stopping = True
        self.ready = False
        self.metrics.ready.set(0)
        self.batcher.close(timeout)

    # --- embedding ------------------------------------------------------------------------

    async def embed(
        self,
        texts: Sequence[str],
        *,
        truncate: bool | None,
        normalize: bool,
        param: str,
        receive: Receive | None = None,
    ) -> Embedded:
        """Vectors for ``texts``; with ``receive`` (the request's), a client that hangs up while
        its request waits or runs has it dropped (``ClientGoneError``)."""
        s = self.settings
        check_texts(texts, s.max_inputs, s.max_input_chars, param)
        tokenize = self.encoder.tokenizer.encode
        if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
            tokenized = tokenize(list(texts))  # cheaper than a thread hop
        else:
            tokenized = await asyncio.to_thread(tokenize, list(texts))
        truncated = int(tokenized.truncated.sum())
        allow = s.truncate if truncate is None else truncate
        if truncated and not allow:
            first = int(np.argmax(tokenized.truncated))
            raise ApiError(
                422,
                f"{param}[{first}] is longer than the model's limit of "
                f"{self.encoder.max_seq_length} tokens; shorten it or allow truncation",
                param=param,
                code="context_length_exceeded",
            )
        if truncated:
            self.metrics.truncated.inc(truncated)
        vectors = await self.wait(self._submit(tokenized.ids), receive)
        if normalize:
            vectors = normalize_rows(vectors)
        return Embedded(vectors, int(tokenized.lengths.sum()), truncated)

    def _submit(self, ids: list[np.ndarray]) -> Future[np.ndarray]:
        try:
            return self.batcher.submit(ids)
        except QueueFullError:
            self.metrics.rejected.inc()
            raise

    async def wait(self, future: Future[np.ndarray], receive: Receive | None) -> np.ndarray:
        """The batcher's answer, or ``ClientGoneError`` (and the work dropped) when the client
        disconnects first."""
        result = asyncio.wrap_future(future)
        watcher = asyncio.ensure_future(until_disconnected(receive)) if receive else None
        try:
            waiting: set[asyncio.Future[Any]] = {result}
            if watcher is not None:
                waiting.add(watcher)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.batcher.cancel(future)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if result in done:
            return result.result()
        self.batcher.cancel(future)
        self.metrics.abandoned.inc()
        raise ClientGoneError("the client closed the connection; its request was dropped")

    def embed_blocking(self, texts: list[str]) -> np.ndarray:
        """Raw vectors through the shared queue, for code running in a worker thread (index
        writes and searches): their model work interleaves fairly with every other request."""
        tokenized = self.encoder.tokenizer.encode(texts)
        if tokenized.truncated.any():
            self.metrics.truncated.inc(int(tokenized.truncated.sum()))
        return self._submit(tokenized.ids).result()


async def until_disconnected(receive: Receive) -> None:
    """Returns once the ASGI server reports that the client went away (the body is read)."""
    while (await receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that repeats empty body messages is not spun on


def release_memory() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``: returns freed heap pages to the OS; the worker calls it when
    it goes idle and at least every ``RELEASE_EVERY_S`` under unbroken load.

    Batches of varying shapes leave freed activation memory in malloc's arenas, so resident
    memory creeps up without it (figures: ``benchmarks/results/engine-notes.md``). None outside
    glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0) and None
