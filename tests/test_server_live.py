"""The server under a real uvicorn on 127.0.0.1 (random free port): the official ``openai``
client, batching across concurrent requests, 429 when the queue is full, warm-up before healthy,
graceful shutdown, and chunked bodies over the limit."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import numpy as np
import openai
import pytest
from test_server_support import EncoderProxy, HeldBackend, running, wait_ready_url

from distilmarco.index.identity import display_name
from distilmarco.server import ServerSettings, create_app

KEY = "live-test-key-0123"
QUERIES = [
    "what is the capital of france",
    "how many calories are in a banana",
    "symptoms of vitamin d deficiency",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "define photosynthesis",
]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_openai_client_round_trip(minilm_encoder) -> None:  # type: ignore[no-untyped-def]
    """The real all-MiniLM-L6-v2 behind the server, called by the unchanged openai client."""
    app = create_app(ServerSettings(api_key=KEY, max_inputs=16), minilm_encoder)
    with running(app) as (url, _):
        wait_ready_url(url)
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        want = minilm_encoder.encode(QUERIES)
        for fmt in ("base64", "float"):  # the client asks for base64 unless told otherwise
            kwargs = {} if fmt == "base64" else {"encoding_format": "float"}
            resp = client.embeddings.create(model="text-embedding-3-small", input=QUERIES, **kwargs)
            got = np.array([d.embedding for d in resp.data])
            assert got.shape == (5, 384)
            assert cosine_rows(got, want).min() >= 0.99999
            assert resp.usage.prompt_tokens == sum(minilm_encoder.tokenizer.count(QUERIES))
            assert resp.model == display_name(minilm_encoder.model_id)
        assert [m.id for m in client.models.list()] == [display_name(minilm_encoder.model_id)]
        single = client.embeddings.create(model="m", input="define photosynthesis")
        assert cosine_rows(np.array([single.data[0].embedding]), want[4:5])[0] >= 0.99999

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=url + "/v1", api_key="wrong-key-999", max_retries=0
            ).embeddings.create(model="m", input="x")
        with pytest.raises(openai.APIStatusError) as info:
            client.embeddings.create(model="m", input=["x"] * 17)
        assert info.value.status_code == 413
        assert "at most 16" in info.value.message
        with pytest.raises(openai.UnprocessableEntityError):
            client.embeddings.create(model="m", input=[])


def test_concurrent_requests_share_batches(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    backend = HeldBackend(tiny_encoder.backend, hold=True)
    app = create_app(ServerSettings(warmup=False), EncoderProxy(tiny_encoder, backend))
    requests = [[f"{q} #{i}" for q in QUERIES[: 1 + i % 5]] for i in range(12)]
    total_tokens = sum(int(tiny_encoder.tokenizer.encode(t).lengths.sum()) for t in requests)
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:

        def call(texts: list[str]) -> np.ndarray:
            r = http.post("/embed", json={"inputs": texts, "normalize": False})
            assert r.status_code == 200, r.text
            return np.array(r.json())

        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(call, texts) for texts in requests]
            assert backend.entered.wait(10)
            # every other request is queued behind the held step once the queue holds all
            # tokens but the step's
            _wait_for_queue_tokens(http, total_tokens - backend.entered_tokens)
            backend.gate.set()
            results = [f.result() for f in futures]
        metrics = http.get("/metrics").text
    for texts, got in zip(requests, results, strict=True):  # every request got its own rows
        assert got.shape == (len(texts), tiny_encoder.dimension)
        assert cosine_rows(got, tiny_encoder.encode(texts)).min() >= 0.99999
    total_inputs = sum(len(t) for t in requests)
    assert sum(backend.calls) == total_inputs
    # 12 requests: the held one, then the other 11 together, split only by length (<= 3 calls)
    assert len(backend.calls) <= 4, backend.calls
    groups = _metric(metrics, "distilmarco_batch_requests_count")
    assert _metric(metrics, "distilmarco_batch_requests_sum") == 12
    assert groups <= 3, groups  # the held request, then the other eleven in one or two steps


def _wait_for_queue_tokens(http: httpx.Client, tokens: int) -> None:
    deadline = time.monotonic() + 10
    while _metric(http.get("/metrics").text, "distilmarco_queue_tokens") != tokens:
        assert time.monotonic() < deadline, f"the queue never held {tokens} tokens"
        time.sleep(0.01)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_full_queue_gives_429_with_retry_after(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    backend = HeldBackend(tiny_encoder.backend, hold=True)
    settings = ServerSettings(warmup=False, max_batch_tokens=128, max_queue_tokens=128)
    app = create_app(settings, EncoderProxy(tiny_encoder, backend))
    text = "word " * 30  # 32 tokens
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(http.post, "/embed", json={"inputs": text})
            assert backend.entered.wait(10)  # the worker holds the first request
            queued = [pool.submit(http.post, "/embed", json={"inputs": text}) for _ in range(4)]
            deadline = time.monotonic() + 10
            while "distilmarco_queue_tokens 128.0" not in http.get("/metrics").text:
                assert time.monotonic() < deadline, "queue never filled"
                time.sleep(0.02)
            over = http.post("/embed", json={"inputs": text})
            over_oa = http.post("/v1/embeddings", json={"input": text, "model": "m"})
            backend.gate.set()
            statuses = [first.result().status_code] + [f.result().status_code for f in queued]
        metrics = http.get("/metrics").text
    assert over.status_code == 429 and over.json()["error_type"] == "Overloaded"
    assert int(over.headers["retry-after"]) >= 1
    assert over_oa.status_code == 429
    assert over_oa.json()["error"]["code"] == "rate_limit_exceeded"
    assert statuses == [200] * 5
    assert "distilmarco_rejected_requests_total 2.0" in metrics


def test_warm_up_before_healthy(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    backend = HeldBackend(tiny_encoder.backend, hold=True)
    app = create_app(ServerSettings(), EncoderProxy(tiny_encoder, backend))
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=30) as http:
        assert backend.entered.wait(10)  # the warm-up batch is running
        r = http.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "starting"}
        assert "distilmarco_ready 0.0" in http.get("/metrics").text
        backend.gate.set()
        wait_ready_url(url)
        assert http.get("/health").json() == {"status": "ok"}


def test_graceful_shutdown_finishes_in_flight(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    backend = HeldBackend(tiny_encoder.backend, delay=1.0)
    app = create_app(ServerSettings(warmup=False), EncoderProxy(tiny_encoder, backend))
    service = app.state.service
    result: dict[str, object] = {}
    with running(app) as (url, server):
        wait_ready_url(url)
        backend.entered.clear()

        def call() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                r = http.post("/embed", json={"inputs": ["in flight"]})
                result["status"], result["body"] = r.status_code, r.json()

        worker = threading.Thread(target=call)
        worker.start()
        assert backend.entered.wait(10)
        server.should_exit = True  # what SIGTERM does
        worker.join(30)
    assert result["status"] == 200
    assert np.array(result["body"]).shape == (1, tiny_encoder.dimension)
    assert service.stopping and not service.batcher.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)


def post_chunked(host: str, port: int, path: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """POST a chunked body in one write, then read the answer.

    One write (a few KB) lands in the server's read buffer whole, so a server that answers 413 and
    closes early cannot turn the client's later writes into a broken pipe.
    """
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head + body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()


def test_chunked_body_limit_on_the_wire(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(max_body_bytes=1000, warmup=False), tiny_encoder)
    with running(app) as (url, _):
        host = urlparse(url)
        assert host.hostname is not None and host.port is not None
        small = [b'{"inputs": ', b'"a short text"}']
        big = [b'{"inputs": "'] + [b"x" * 300] * 10 + [b'"}']
        answers = [post_chunked(host.hostname, host.port, "/embed", c) for c in (small, big)]
    assert answers[0][0] == 200
    assert answers[1][0] == 413 and b"1000 bytes" in answers[1][1]
