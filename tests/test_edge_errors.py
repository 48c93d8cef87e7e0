"""The edges map only our own error types to client errors: a bare ``ValueError`` or
``TypeError`` from our code is a bug, so the server answers 500 (JSON, logged with its traceback)
and the CLI logs the traceback and exits with ``INTERNAL_ERROR``, never a 422 or a clean exit 1."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_server_support import EncoderProxy

from distilmarco.errors import InputError
from distilmarco.server import ServerSettings, create_app


class _RaisingBackend:
    name, precision, device = "torch", "fp32", "cpu"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise self.exc


@pytest.mark.parametrize("exc", [ValueError("bad shape in our code"), TypeError("None + 1")])
def test_server_answers_500_json_for_a_bug_of_ours(
    tiny_encoder, exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(warmup=False), EncoderProxy(tiny_encoder, _RaisingBackend(exc)))
    caplog.set_level(logging.ERROR)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = c.post("/embed", json={"inputs": "hello"})
        assert r.status_code == 500
        assert r.json() == {"error": "internal server error", "error_type": "Backend"}
        r = c.post("/v1/embeddings", json={"input": "hello", "model": "m"})
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error"
        assert str(exc) not in r.text  # the bug's details stay in the log
    assert any(rec.exc_info and rec.exc_info[1] is exc for rec in caplog.records)


def test_server_answers_422_for_our_input_error(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    backend = _RaisingBackend(InputError("input 0 is not something this backend takes"))
    app = create_app(ServerSettings(warmup=False), EncoderProxy(tiny_encoder, backend))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/embed", json={"inputs": "hello"})
        assert r.status_code == 422
        assert r.json() == {
            "error": "input 0 is not something this backend takes",
            "error_type": "Validation",
        }


def _texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    return path


def test_cli_exits_internal_error_with_a_traceback_for_a_bug_of_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import distilmarco.textio
    from distilmarco.cli import INTERNAL_ERROR, main

    def broken(*args: object, **kwargs: object) -> object:
        raise ValueError("a bug in the reader")

    monkeypatch.setattr(distilmarco.textio, "read_text_file", broken)
    caplog.set_level(logging.CRITICAL)
    assert main(["dedup", str(_texts(tmp_path))]) == INTERNAL_ERROR != 1
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "internal error" in record.getMessage()
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug in the reader"


def test_cli_exits_1_with_one_line_for_our_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import distilmarco.textio
    from distilmarco.cli import main

    def refused(*args: object, **kwargs: object) -> object:
        raise InputError("texts.txt: line 2 is not text")

    monkeypatch.setattr(distilmarco.textio, "read_text_file", refused)
    assert main(["dedup", str(_texts(tmp_path))]) == 1
    assert capsys.readouterr().err.strip() == "error: texts.txt: line 2 is not text"


def test_cli_exits_1_for_a_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distilmarco.cli import main

    sts = tmp_path / "sts.csv"
    sts.write_bytes(b"sentence1,sentence2,score\n\xff\xfe caf\xe9,b,1.0\n")
    assert main(["eval", "sts", str(sts), "-m", str(tmp_path / "no-model")]) == 1
    assert "not valid UTF-8" in capsys.readouterr().err
