"""Helpers shared by the server tests (no tests here): a real uvicorn server on a free loopback
port in a thread, an encoder proxy whose backend can be slowed or held, waiting for readiness."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any, *, graceful: int = 10) -> Iterator[tuple[str, Any]]:
    """Serve ``app`` with uvicorn on 127.0.0.1:<free port> in a thread; yields (url, server)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, server
    finally:
        server.should_exit = True
        thread.join(30)


def wait_ready(get: Any, timeout: float = 30.0) -> None:
    """Poll GET /health (``get`` is client.get) until 200."""
    deadline = time.monotonic() + timeout
    while True:
        r = get("/health")
        if r.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"server never became healthy: {r.status_code} {r.text}")
        time.sleep(0.01)


def wait_ready_url(url: str, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(base_url=url, headers=headers) as c:
        wait_ready(c.get)


class HeldBackend:
    """Wraps a backend: each embed call waits for ``gate`` (when set) and sleeps ``delay``."""

    def __init__(self, inner: Any, delay: float = 0.0, hold: bool = False) -> None:
        self.inner = inner
        self.delay = delay
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.calls: list[int] = []  # batch sizes seen
        self.entered = threading.Event()
        self.entered_tokens = 0  # real tokens of the first call, known once ``entered`` is set
        self.name, self.precision, self.device = inner.name, inner.precision, inner.device

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if not self.entered.is_set():
            self.entered_tokens = int(attention_mask.sum())
        self.entered.set()
        self.gate.wait(30)
        if self.delay:
            time.sleep(self.delay)
        self.calls.append(len(input_ids))
        return self.inner.embed(input_ids, attention_mask)


class EncoderProxy:
    """The real encoder with its backend swapped for a HeldBackend."""

    def __init__(self, encoder: Any, backend: HeldBackend) -> None:
        self._encoder = encoder
        self.backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    @property
    def info(self) -> Any:
        return self._encoder.info
