"""Fast by default (issue 26 item 9): every command that embeds takes the same engine options and
DISTILMARCO_MODEL; an index is built on the ``auto`` backend at exact fp32 unless told otherwise,
records its engine, and embeds queries the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distilmarco import Encoder
from distilmarco.cli import main

ENGINE_OPTIONS = ("--backend", "--precision", "--device", "--batch-tokens", "--model")
EMBEDDING_COMMANDS = (
    ("embed",),
    ("index", "add"),
    ("index", "search"),
    ("index", "reindex"),
    ("similar",),
    ("dedup",),
    ("cluster",),
    ("recommend",),
    ("classify", "train"),
    ("classify", "predict"),
    ("classify", "zero-shot"),
    ("map",),
    ("eval", "ir"),
    ("eval", "sts"),
    ("eval", "classify"),
    ("eval", "cluster"),
    ("eval", "msmarco"),
)


def _help(capsys, *command: str) -> str:  # type: ignore[no-untyped-def]
    assert main([*command, "--help"]) == 0
    return str(capsys.readouterr().out)


@pytest.mark.parametrize("command", EMBEDDING_COMMANDS, ids=" ".join)
def test_every_embedding_command_takes_the_engine_options(capsys, command: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    shown = _help(capsys, *command)
    missing = [option for option in ENGINE_OPTIONS if option not in shown]
    assert not missing, f"{' '.join(command)} lacks {missing}"


def test_model_from_the_environment(
    tiny_model_dir: Path, tiny_encoder, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DISTILMARCO_MODEL", str(tiny_model_dir))
    lines = tmp_path / "in.txt"
    lines.write_text("wings make lift\nboats float\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    assert main(["embed", str(lines), "-o", str(out), "--backend", "torch"]) == 0
    np.testing.assert_allclose(
        np.load(out), tiny_encoder.encode(["wings make lift", "boats float"]), atol=1e-6
    )
    assert main(["cluster", str(lines), "--clusters", "2", "--backend", "torch"]) == 0


def test_index_add_runs_auto_fp32_and_records_it(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index import Index

    docs = tmp_path / "d.jsonl"
    docs.write_text(
        '{"id": "w", "text": "Wings make lift."}\n{"id": "b", "text": "Boats float."}\n'
    )
    db = tmp_path / "x.db"
    assert main(["index", "add", str(docs), "--index", str(db), "-m", str(tiny_model_dir)]) == 0
    capsys.readouterr()
    auto = Encoder(tiny_model_dir, backend="auto").backend.name
    assert main(["index", "stats", "--index", str(db), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["backend"], stats["precision"]) == (auto, "fp32")
    with Index(db) as ix:  # queries: the recorded model, auto at fp32 again
        assert (ix.encoder.backend.name, ix.encoder.backend.precision) == (auto, "fp32")
        stored = ix.vectors(["w"])[0]
    # fp32-exact: the stored vector is the torch reference's, whatever backend made it
    want = Encoder(tiny_model_dir).encode(["Wings make lift."], normalize=True)[0]
    assert float(stored @ want) > 0.99999


def test_int8_on_request_is_recorded_and_used_for_queries(
    tiny_model_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    from distilmarco.index import Index

    docs = tmp_path / "d.jsonl"
    docs.write_text(
        '{"id": "w", "text": "Wings make lift."}\n{"id": "b", "text": "Boats float."}\n'
    )
    db = tmp_path / "x.db"
    args = ["index", "add", str(docs), "--index", str(db), "-m", str(tiny_model_dir)]
    assert main([*args, "--backend", "onnx", "--precision", "int8"]) == 0
    capsys.readouterr()
    with Index(db) as ix:
        assert (ix.stats().backend, ix.stats().precision) == ("onnx", "int8")
        assert (ix.encoder.backend.name, ix.encoder.backend.precision) == ("onnx", "int8")
    assert main(["index", "search", "Wings make lift.", "--index", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "w"
    query = ["index", "search", "lift", "--index", str(db), "--precision", "fp32"]
    assert main(query) == 1
    assert "embedded with onnx int8" in capsys.readouterr().err
    served: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.append(app))
    assert main(["serve", "--index", str(db), "-m", str(tiny_model_dir)]) == 0
    service = served[0].state.service  # type: ignore[attr-defined]
    assert (service.encoder.backend.name, service.encoder.backend.precision) == ("onnx", "int8")
