"""A Milvus server for the index tests: ``milvus-lite server`` on a free loopback port, one per test
session (per xdist worker), ended by the pid it was started with; or the real Milvus that
``DISTILMARCO_MILVUS_URI`` names (``milvus://HOST:PORT``). Every test talks to it over gRPC through
``MilvusClient(uri=...)``, as it would to a cluster, in a collection of its own.

Import the fixtures into a test module (``from milvus_fixtures import milvus_server, ...``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

URI_ENV = "DISTILMARCO_MILVUS_URI"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Whether the server answers a real call (not merely has its port open)."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if proc.poll() is not None:
        raise RuntimeError(f"milvus-lite server exited with status {proc.returncode}")
    try:
        client = MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=2)
    except MilvusException:
        return False
    try:
        client.list_collections()
        return True
    except MilvusException:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``milvus://HOST:PORT`` of a running server."""
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    if os.environ.get(URI_ENV):
        yield os.environ[URI_ENV].rstrip("/")
        return
    pytest.importorskip("milvus_lite", reason="milvus-lite (the test extra) is not installed")
    data = tmp_path_factory.mktemp("milvus")
    port = free_port()
    log = open(data / "server.log", "wb")  # noqa: SIM115 - open until the server stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data / "db"),
         "--host", "127.0.0.1", "--port", str(port), "--max-workers", "4"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port, proc):
            if time.monotonic() > deadline:
                raise RuntimeError(f"milvus-lite server did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.2)
        yield f"milvus://127.0.0.1:{port}"
    finally:
        proc.terminate()  # this pid only: never by name, other sessions run their own servers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def milvus_location(milvus_server: str) -> Iterator[str]:
    """A fresh collection's address; dropped after the test."""
    from pymilvus import MilvusClient

    name = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{milvus_server}/{name}"
    client = MilvusClient(uri="http://" + milvus_server.removeprefix("milvus://"))
    try:
        if client.has_collection(name):
            client.drop_collection(name)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("milvus", marks=pytest.mark.xdist_group("milvus"))])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an index lives, once per kind of storage: a SQLite file, then a Milvus collection."""
    if request.param == "sqlite":
        return str(tmp_path / "t.db")
    return str(request.getfixturevalue("milvus_location"))
