"""Isolation on a real uvicorn server: a poisoned input fails only its request, a client that
hangs up has its work dropped, and index writes neither stall embeddings nor wait forever on
another process's lock."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_server_support import EncoderProxy, HeldBackend, running, wait_ready_url

from distilmarco.index import Index
from distilmarco.server import ServerSettings, create_app


class PoisonBackend(HeldBackend):
    """NaN for every row that holds ``poison`` (as fp16 overflow would give)."""

    def __init__(self, inner: Any, poison: int, **kw: Any) -> None:
        super().__init__(inner, **kw)
        self.poison = poison

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = super().embed(input_ids, attention_mask).copy()
        out[(input_ids == self.poison).any(axis=1)] = np.nan
        return out


def test_poisoned_clients_fail_alone(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    poison = int(tiny_encoder.tokenizer.encode(["zebra"]).ids[0][1])
    backend = PoisonBackend(tiny_encoder.backend, poison, delay=0.01)
    app = create_app(ServerSettings(warmup=False), EncoderProxy(tiny_encoder, backend))
    innocent = [[f"how do planes fly {i}", f"boil an egg {i}"] for i in range(24)]
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:

        def call(texts: list[str]) -> httpx.Response:
            return http.post("/embed", json={"inputs": texts})

        with ThreadPoolExecutor(14) as pool:
            bad = [pool.submit(call, ["a cat", "a zebra here", "a dog"]) for _ in range(4)]
            good = [pool.submit(call, texts) for texts in innocent]
            statuses = [f.result().status_code for f in good]
            failed = [f.result() for f in bad]
    assert statuses == [200] * len(innocent)
    for r in failed:
        assert r.status_code == 422
        assert "input(s) 1 of this request" in r.json()["error"]


def _raw_post(url: str, path: str, body: dict[str, Any]) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    s = socket.create_connection((host, int(port)))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    s.sendall(head.encode() + data)
    return s


def test_abandoned_requests_are_dropped(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    backend = HeldBackend(tiny_encoder.backend, hold=True)
    app = create_app(ServerSettings(warmup=False), EncoderProxy(tiny_encoder, backend))
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        wait_ready_url(url)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(http.post, "/embed", json={"inputs": ["held"]})
            assert backend.entered.wait(10)
            gone = [_raw_post(url, "/embed", {"inputs": [f"text {i}"] * 100}) for i in range(5)]
            deadline = time.monotonic() + 10
            while "distilmarco_queue_depth 5.0" not in http.get("/metrics").text:
                assert time.monotonic() < deadline, "requests never queued"
                time.sleep(0.02)
            for s in gone:
                s.close()  # the clients hang up
            while "distilmarco_abandoned_requests_total 5.0" not in http.get("/metrics").text:
                assert time.monotonic() < deadline, "disconnects never noticed"
                time.sleep(0.02)
            assert "distilmarco_queue_tokens 0.0" in http.get("/metrics").text
            backend.gate.set()
            assert first.result().status_code == 200
        small = http.post("/embed", json={"inputs": ["after"]})
        assert small.status_code == 200
    assert sum(backend.calls) == 2  # the held text and the one after: none of the 500


@pytest.fixture()
def index(tiny_encoder, tmp_path: Path):  # type: ignore[no-untyped-def]
    idx = Index(tmp_path / "docs.db", encoder=tiny_encoder)
    idx.add(["a"], ["Planes fly because their wings make lift."])
    yield idx
    idx.close()


def test_a_locked_index_gives_503_and_embeddings_go_on(tiny_encoder, index) -> None:  # type: ignore[no-untyped-def]
    settings = ServerSettings(warmup=False, index_lock_wait_s=0.5)
    app = create_app(settings, tiny_encoder, index)
    other = sqlite3.connect(index.path, isolation_level=None)
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        result: dict[str, Any] = {}

        def put() -> None:
            start = time.monotonic()
            result["r"] = http.put("/documents/b", json={"text": "Cats sleep all day."})
            result["s"] = time.monotonic() - start

        writer = threading.Thread(target=put)
        writer.start()
        time.sleep(0.1)  # the write is waiting for the lock now
        start = time.monotonic()
        embedded = http.post("/embed", json={"inputs": ["not held up"]})
        embed_s = time.monotonic() - start
        writer.join(10)
        r = result["r"]
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "could not lock" in r.json()["error"]
        assert 0.4 <= result["s"] < 5
        assert embedded.status_code == 200 and embed_s < 0.4
        other.execute("ROLLBACK")
        again = http.put("/documents/b", json={"text": "Cats sleep all day."})
        assert again.status_code == 200
    other.close()
    assert index.get("b").text == "Cats sleep all day."


def test_a_big_write_does_not_hold_up_a_small_embed(tiny_encoder, index, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    backend = HeldBackend(tiny_encoder.backend, delay=0.05)  # 50 ms a backend call
    monkeypatch.setattr(tiny_encoder, "backend", backend)  # for the index's own encoding too
    app = create_app(ServerSettings(warmup=False), tiny_encoder, index)
    text = " ".join(f"word{i % 97} lift" for i in range(15000))  # 30k words: many steps
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=120) as http:
        done: dict[str, float] = {}

        def put() -> None:
            r = http.put("/documents/long", json={"text": text})
            assert r.status_code == 200, r.text
            done["put"] = time.monotonic()

        writer = threading.Thread(target=put)
        writer.start()
        assert backend.entered.wait(30)  # the write's passages are being embedded
        start = time.monotonic()
        r = http.post("/embed", json={"inputs": ["one"]})
        done["embed"] = time.monotonic()
        writer.join(120)
    assert r.status_code == 200
    assert done["embed"] - start < 0.5  # a step or two of 50 ms, not the whole write
    assert done["embed"] < done["put"]
    assert len(backend.calls) > 10  # the write really took many steps
