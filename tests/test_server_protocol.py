"""Protocol and fault answers of the server: Host allowlist, URL ids that are not UTF-8, a 413
that reaches a client still sending, 415 without a JSON content type, index faults as JSON
(long where-lists, a full disk), a clean SIGTERM that closes the index, and a refused pickle."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from test_server_support import free_port, running, wait_ready

from distilmarco.errors import CheckpointError
from distilmarco.index import Index
from distilmarco.server import ServerSettings, create_app
from distilmarco.server.guards import allowed_hosts, host_name


@pytest.fixture()
def index(tiny_encoder, tmp_path: Path):  # type: ignore[no-untyped-def]
    idx = Index(tmp_path / "docs.db", encoder=tiny_encoder)
    idx.add(["a", "b"], ["Planes fly on wings.", "Eggs boil in water."], [{"n": 1}, {"n": 2}])
    yield idx
    idx.close()


def client_for(app, host: str = "127.0.0.1") -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app, base_url=f"http://{host}")


def test_loopback_server_answers_only_loopback_hosts(tiny_encoder, index) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(warmup=False), tiny_encoder, index)
    with client_for(app) as c:
        for host in ("localhost:8080", "127.0.0.1", "[::1]:80", "LOCALHOST"):
            r = c.get("/health", headers={"Host": host})
            assert r.status_code == 200, host
        r = c.put("/documents/x", json={"text": "rebound"}, headers={"Host": "attacker.example"})
        assert (
            r.status_code == 400 and "host 'attacker.example' is not allowed" in r.json()["error"]
        )
        assert "x" not in index
        r = c.post("/v1/embeddings", json={"input": ["a"]}, headers={"Host": "attacker.example"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
    widened = ServerSettings(warmup=False, allowed_hosts=("search.internal",))
    with client_for(create_app(widened, tiny_encoder)) as c:
        assert c.get("/health", headers={"Host": "search.internal:8080"}).status_code == 200
        assert c.get("/health", headers={"Host": "localhost"}).status_code == 400
    assert allowed_hosts("0.0.0.0", ()) is None  # bound elsewhere: its API key guards it
    assert allowed_hosts("127.0.0.1", ("*",)) is None
    assert host_name("[::1]:8080") == "::1" and host_name("Example.COM:1") == "example.com"


def test_ids_that_are_not_utf8_are_refused(tiny_encoder, index) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(warmup=False), tiny_encoder, index)
    with client_for(app) as c:
        for raw in ("alias%FF", "alias%FE"):
            r = c.put(f"/documents/{raw}", json={"text": "one of two"})
            assert r.status_code == 400 and "not valid UTF-8" in r.json()["error"]
        assert c.put("/documents/caf%C3%A9", json={"text": "fine"}).status_code == 200
    assert index.count() == 3 and index.get("café").text == "fine"


def test_a_body_without_json_content_type_is_415(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    with client_for(create_app(ServerSettings(warmup=False), tiny_encoder)) as c:
        r = c.post("/embed", content=b'{"inputs": "x"}')
        assert r.status_code == 415 and "Content-Type: application/json" in r.json()["error"]
        r = c.post("/v1/embeddings", content=b"input=x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_where_lists_and_a_full_disk_answer_json(tiny_encoder, index) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(warmup=False), tiny_encoder, index)
    with client_for(app) as c:
        r = c.post("/search", json={"query": "eggs", "where": {"n": [*range(10, 1500), 2]}})
        assert r.status_code == 200 and [h["id"] for h in r.json()["results"]] == ["b"]
        r = c.post("/search", json={"query": "eggs", "where": {"n": list(range(10001))}})
        assert r.status_code == 422 and "more than 10000 values" in r.json()["error"]
        store = index.store.db
        store.set_max_pages(store.page_count())  # the file may not grow: a full disk
        r = c.put("/documents/big", json={"text": "wings and lift " * 4000})
        store.set_max_pages(None)
        assert r.status_code == 507 and "full" in r.json()["error"]
    assert index.count() == 2


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response: the headers, then the Content-Length bytes of body (they may come
    in separate segments, so one recv is not enough)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    while length and len(body) < int(length.group(1)) and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_413_reaches_a_client_that_sends_the_body_first(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(warmup=False, max_body_bytes=1000), tiny_encoder)
    body = b'{"inputs": "' + b"x" * (4 << 20) + b'"}'
    with running(app) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        for chunked in (False, True):
            with socket.create_connection((host, int(port)), timeout=30) as s:
                length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
                s.sendall(
                    f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\n{length}\r\n\r\n".encode()
                )
                payload = (
                    f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body
                )
                s.sendall(payload)  # a standard client sends the whole body, then reads
                answer = read_response(s)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
            assert b"larger than the limit of 1000 bytes" in answer


@pytest.mark.slow
def test_sigterm_exits_0_and_closes_the_index(tiny_model_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "served.db"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "distilmarco", "serve", "-m", str(tiny_model_dir)]
    proc = subprocess.Popen(
        [*command, "--index", str(db), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                try:
                    wait_ready(http.get, timeout=1)
                    break
                except (httpx.TransportError, AssertionError):
                    assert time.monotonic() < deadline, "server did not become healthy"
                    time.sleep(0.1)
            assert http.put("/documents/kept", json={"text": "written"}).status_code == 200
        assert Path(f"{db}-wal").stat().st_size > 0  # the write sits in the WAL
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not Path(f"{db}-wal").exists()  # closed: checkpointed into the file
    with Index(db) as idx:
        assert idx.get("kept").text == "written"


def test_a_pickle_that_would_run_code_is_refused_plainly(tiny_model_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from distilmarco import Encoder

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"evil": Path("/tmp")}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        Encoder(folder)
    message = str(info.value)
    assert "refused" in message and "would run code" in message and "safetensors" in message
    assert "weights_only" not in message  # no advice to switch the protection off
