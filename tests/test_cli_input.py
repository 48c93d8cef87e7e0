"""Data arrives as the user gave it (issue 26 items 1-7): ids and fields kept, options that do not
apply refused, malformed input named by file and line, blank lines skipped and counted, skipped
files reported, destinations checked first, standard input, and no console markup in output."""

from __future__ import annotations

import json
from pathlib import Path

from distilmarco.cli import main


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- 1: user ids and fields are kept; provenance has keys of its own ----------------------------


def test_index_add_keeps_row_ids_and_fields(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _jsonl(
        tmp_path / "data.jsonl",
        [
            {"id": "cran-1", "text": "wings make lift", "source": "journal", "year": 1962},
            {"id": "cran-2", "text": "boats float on water", "source": "book", "tags": ["a", "b"]},
        ],
    )
    db = str(tmp_path / "x.db")
    assert main(["index", "add", str(data), "--db", db, "-m", str(tiny_model_dir)]) == 0
    capsys.readouterr()
    assert main(["index", "get", "cran-1", "--db", db, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["id"] == "cran-1"
    assert doc["metadata"] == {
        "source": "journal",
        "year": 1962,
        "distilmarco:source": str(data.resolve()),
        "distilmarco:row": 1,
    }
    assert main(["index", "get", "cran-2", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["tags"] == ["a", "b"]


def test_index_add_id_column_and_reserved_fields(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "t.csv"
    data.write_text("key,body\nk1,first text\nk2,second text\n", encoding="utf-8")
    db = str(tmp_path / "x.db")
    args = ["index", "add", str(data), "--db", db, "-m", str(tiny_model_dir)]
    assert main([*args, "--field", "body", "--id-column", "key"]) == 0
    capsys.readouterr()
    assert main(["index", "get", "k2", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "second text"
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "x", "text": "t", "distilmarco:source": "me"}])
    assert main(["index", "add", str(bad), "--db", db]) == 1
    assert "reserved" in capsys.readouterr().err
    dup = _jsonl(tmp_path / "dup.jsonl", [{"key": "k1", "body": "again"}])
    more = ["--field", "body", "--id-column", "key"]
    assert main(["index", "add", str(data), str(dup), "--db", db, *more]) == 1
    message = capsys.readouterr().err
    assert "'k1' occurs twice" in message and "dup.jsonl" in message
