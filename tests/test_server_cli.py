"""``distilmarco serve``: flags and DISTILMARCO_* variables reach the server; a real process
serves on 127.0.0.1 and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from test_server_support import free_port

from distilmarco.cli import main


@pytest.fixture()
def captured(monkeypatch):  # type: ignore[no-untyped-def]
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        seen["app"], seen["kwargs"] = app, kwargs

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return seen


def test_flags_and_environment(captured, monkeypatch, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DISTILMARCO_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("DISTILMARCO_PORT", "9123")
    monkeypatch.setenv("DISTILMARCO_API_KEY", "env-key-12345")
    monkeypatch.setenv("DISTILMARCO_MAX_INPUTS", "7")
    monkeypatch.setenv("DISTILMARCO_MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("DISTILMARCO_TRUNCATE", "false")
    assert main(["serve", "--max-inputs", "5", "--max-wait-ms", "1.5"]) == 0
    settings = captured["app"].state.settings
    assert captured["kwargs"]["host"] == "127.0.0.1"  # loopback unless told otherwise
    assert captured["kwargs"]["port"] == 9123 == settings.port
    assert captured["kwargs"]["timeout_keep_alive"] == 75  # outlives clients' idle pools
    assert captured["kwargs"]["timeout_graceful_shutdown"] == 30
    assert settings.api_key == "env-key-12345"
    assert settings.max_inputs == 5  # the flag wins over the environment
    assert settings.max_batch_tokens == 4096 and settings.max_wait_ms == 1.5
    assert settings.truncate is False and settings.cors_origins == ()
    paths = {getattr(r, "path", "") for r in captured["app"].routes}
    assert "/v1/embeddings" in paths and "/search" not in paths


def test_index_flag_attaches_search(captured, tiny_model_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "cli.db"
    assert main(["serve", "-m", str(tiny_model_dir), "--index", str(db), "--port", "9000"]) == 0
    paths = {getattr(r, "path", "") for r in captured["app"].routes}
    assert {"/search", "/documents", "/documents/{id:path}"} <= paths


def test_bad_settings_are_clean_errors(captured, tiny_model_dir, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["serve", "-m", str(tiny_model_dir), "--max-inputs", "0"]) == 1
    assert "max_inputs must be a positive integer" in capsys.readouterr().err
    assert "app" not in captured


@pytest.mark.slow
def test_real_process_serves_and_stops_on_sigterm(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "DISTILMARCO_PORT": str(port), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "distilmarco", "serve", "-m", str(tiny_model_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.1)
        r = httpx.post(url + "/embed", json={"inputs": ["hello", "world"]}, timeout=30)
        assert r.status_code == 200 and len(r.json()) == 2
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (exit status -15)
        assert proc.wait(30) in (0, -signal.SIGTERM)
        log = proc.stderr.read().decode() if proc.stderr else ""
        assert "Application shutdown complete" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_isolation_flags_reach_the_settings(captured, tiny_model_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = ["serve", "-m", str(tiny_model_dir), "--index", str(tmp_path / "f.db")]
    args += ["--max-queue-wait", "0.5", "--index-lock-wait", "2", "--allowed-hosts", "a.internal"]
    assert main([*args, "--allowed-hosts", "b.internal"]) == 0
    settings = captured["app"].state.settings
    assert settings.max_queue_wait_s == 0.5 and settings.index_lock_wait_s == 2.0
    assert settings.allowed_hosts == ("a.internal", "b.internal")
    assert captured["app"].state.service.batcher.max_queue_wait_s == 0.5
