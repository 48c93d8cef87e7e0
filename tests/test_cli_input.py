"""Data arrives as the user gave it (issue 26 items 1-7): ids and fields kept, options that do not
apply refused, malformed input named by file and line, blank lines skipped and counted, skipped
files reported, destinations checked first, standard input, and no console markup in output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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
    assert main(["index", "add", str(data), "--index", db, "-m", str(tiny_model_dir)]) == 0
    capsys.readouterr()
    assert main(["index", "get", "cran-1", "--index", db, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["id"] == "cran-1"
    assert doc["metadata"] == {
        "source": "journal",
        "year": 1962,
        "distilmarco:source": str(data.resolve()),
        "distilmarco:row": 1,
    }
    assert main(["index", "get", "cran-2", "--index", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["tags"] == ["a", "b"]


def test_index_add_id_column_and_reserved_fields(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "t.csv"
    data.write_text("key,body\nk1,first text\nk2,second text\n", encoding="utf-8")
    db = str(tmp_path / "x.db")
    args = ["index", "add", str(data), "--index", db, "-m", str(tiny_model_dir)]
    assert main([*args, "--field", "body", "--id-column", "key"]) == 0
    capsys.readouterr()
    assert main(["index", "get", "k2", "--index", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "second text"
    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "x", "text": "t", "distilmarco:source": "me"}])
    assert main(["index", "add", str(bad), "--index", db]) == 1
    assert "reserved" in capsys.readouterr().err
    dup = _jsonl(tmp_path / "dup.jsonl", [{"key": "k1", "body": "again"}])
    more = ["--field", "body", "--id-column", "key"]
    assert main(["index", "add", str(data), str(dup), "--index", db, *more]) == 1
    message = capsys.readouterr().err
    assert "'k1' occurs twice" in message and "dup.jsonl" in message


# --- 2: an option that does not apply is an error, never ignored --------------------------------


def test_text_column_option_applies_to_csv_and_is_refused_for_plain_text(
    tiny_model_dir: Path, tiny_encoder, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data.csv"
    data.write_text("text,category\nhello there,greeting\nbye now,farewell\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    model = ["-m", str(tiny_model_dir)]
    assert main(["embed", str(data), "--field", "category", "-o", str(out), *model]) == 0
    np.testing.assert_allclose(
        np.load(out), tiny_encoder.encode(["greeting", "farewell"]), atol=1e-6
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("one\ntwo\n", encoding="utf-8")
    assert main(["embed", str(notes), "--column", "body", "-o", str(out), *model]) == 1
    assert "applies to tables" in capsys.readouterr().err


def test_model_is_checked_and_column_refused_with_an_index(
    tiny_encoder, make_model, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index import Index

    db = tmp_path / "x.db"
    with Index(db, tiny_encoder) as ix:
        ix.add(["a", "b"], ["wings make lift", "boats float"])
    other = str(make_model("tiny-distilbert-seed1", seed=1))
    base = ["similar", "lift", "--index", str(db)]
    assert main([*base, "-m", other]) == 1  # used and checked, not ignored
    assert "built with another model" in capsys.readouterr().err
    assert main(["recommend", "--index", str(db), "--like", "a", "--column", "x"]) == 1
    assert "--column cannot be used with --index" in capsys.readouterr().err
    assert main(["dedup", "--index", str(db), "-m", other]) == 1
    assert "built with another model" in capsys.readouterr().err
    assert main(["dedup", "--index", str(db), "--column", "x"]) == 1
    assert "cannot be used with --index" in capsys.readouterr().err
    assert main(["index", "search", "lift", "--index", str(db), "--mode", "bm25", "--ann"]) == 2
    assert "bm25" in capsys.readouterr().err


# --- 3: malformed input fails with file and line ------------------------------------------------

BAD_CSV = 'text,label\nfine,a\n"never closed,b\nworld,c\nfoo,d\n'


@pytest.mark.parametrize(
    ("content", "line"),
    [(BAD_CSV, 3), ("text,label\nfine,a\ntoo,many,fields\n", 3)],
)
def test_malformed_csv_names_file_and_line(
    tiny_model_dir: Path, tmp_path: Path, capsys, content: str, line: int
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "bad.csv"
    data.write_text(content, encoding="utf-8")
    model = ["-m", str(tiny_model_dir)]
    assert main(["embed", str(data), "-o", str(tmp_path / "v.npy"), *model]) == 1
    assert f"bad.csv:{line}:" in capsys.readouterr().err
    assert main(["index", "add", str(data), "--index", str(tmp_path / "x.db"), *model]) == 1
    assert f"bad.csv:{line}:" in capsys.readouterr().err


# --- 4: blank lines are not texts ---------------------------------------------------------------


def test_blank_lines_are_skipped_and_counted(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    lines = tmp_path / "lines.txt"
    lines.write_text("a cat sat\n\n   \nthe dog ran\n\n", encoding="utf-8")
    assert main(["dedup", str(lines), "-m", str(tiny_model_dir), "--threshold", "0.9999"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == ""  # no duplicate groups: the blanks are gone
    assert "skipped 3 blank line(s)" in captured.err and "2 texts" in captured.err
    out = tmp_path / "v.npy"
    assert main(["embed", str(lines), "-o", str(out), "-m", str(tiny_model_dir)]) == 0
    assert np.load(out).shape[0] == 2


# --- 5: files left out are reported; --include / --exclude --------------------------------------


def test_index_add_reports_skipped_files_and_takes_globs(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    (src / "tests").mkdir(parents=True)
    (src / "a.py").write_text("def lift():\n    return 'wings'\n", encoding="utf-8")
    (src / "b.py").write_text("def float_():\n    return 'boats'\n", encoding="utf-8")
    (src / "tests" / "test_a.py").write_text("assert True\n", encoding="utf-8")
    (src / "Makefile").write_text("all:\n", encoding="utf-8")
    db = str(tmp_path / "x.db")
    args = ["index", "add", str(src), "--index", db, "-m", str(tiny_model_dir)]
    assert main(args) == 1
    message = capsys.readouterr().err
    assert "skipped 4 file(s)" in message and "3 .py" in message and "1 (no suffix)" in message
    assert "--include '*.py'" in message
    assert main([*args, "--include", "*.py", "--exclude", "tests/*", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["files"], report["added"]) == (2, 2)
    assert report["skipped"] == {"": 1}
    assert "1 (no suffix)" in captured.err
    assert main(["index", "get", str((src / "a.py").resolve()), "--index", db, "--json"]) == 0
    assert "wings" in json.loads(capsys.readouterr().out)["text"]


# --- 6: destinations checked first; no empty index left behind; - is standard input --------------


def test_missing_output_folder_fails_before_any_work(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import distilmarco.encoder

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must not be loaded before the destination is checked")

    monkeypatch.setattr(distilmarco.encoder.Encoder, "__init__", no_model)
    lines = tmp_path / "in.txt"
    lines.write_text("a\nb\n", encoding="utf-8")
    assert main(["embed", str(lines), "-o", str(tmp_path / "out" / "x.npy")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["cluster", str(lines), "-o", str(tmp_path / "out" / "c.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["dedup", str(lines), "--keep", str(tmp_path / "out" / "u.txt")]) == 1
    assert "--keep" in capsys.readouterr().err


def test_failed_first_add_leaves_no_file(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\nnot json\n', encoding="utf-8")
    db = tmp_path / "new.db"
    assert main(["index", "add", str(bad), "--index", str(db), "-m", str(tiny_model_dir)]) == 1
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_dash_reads_standard_input(
    tiny_model_dir: Path, tiny_encoder, tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("wings make lift\n\nboats float\n"))
    out = tmp_path / "v.npy"
    assert main(["embed", "-", "-o", str(out), "-m", str(tiny_model_dir)]) == 0
    np.testing.assert_allclose(
        np.load(out), tiny_encoder.encode(["wings make lift", "boats float"]), atol=1e-6
    )
    rows = '{"id": "w", "text": "wings make lift", "lang": "en"}\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(rows))
    db = str(tmp_path / "x.db")
    assert main(["index", "add", "-", "--index", db, "-m", str(tiny_model_dir)]) == 0
    capsys.readouterr()
    assert main(["index", "get", "w", "--index", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["lang"] == "en"


# --- 7: user text is never console markup -------------------------------------------------------


def test_plain_output_keeps_bracketed_text(tiny_encoder, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index import Index

    db = tmp_path / "x.db"
    text = "* [npm publish](/commands/npm-publish) puts a [bold]package[/bold] on the registry"
    with Index(db, tiny_encoder) as ix:
        ix.add(["[red]doc"], [text])
    assert main(["index", "search", "publish package", "--index", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "[npm publish](/commands/npm-publish)" in shown
    assert "[bold]package[/bold]" in shown and "[red]doc" in shown
    assert main(["index", "get", "[red]doc", "--index", str(db)]) == 0
    assert text in capsys.readouterr().out
    assert main(["embed", str(tmp_path / "[bold]in.txt"), "-o", str(tmp_path / "v.npy")]) == 1
    assert "[bold]in.txt does not exist" in capsys.readouterr().err


def test_options_of_other_methods_and_formats_are_refused(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    lines = tmp_path / "t.txt"
    lines.write_text("".join(f"text {i}\n" for i in range(12)), encoding="utf-8")
    model = ["-m", str(tiny_model_dir), "--backend", "torch"]
    assert main(["cluster", str(lines), "--threshold", "0.3", *model]) == 1
    assert "--threshold do not apply to --method kmeans" in capsys.readouterr().err
    assert main(["cluster", str(lines), "--method", "hdbscan", "--clusters", "3", *model]) == 1
    assert "--clusters do not apply to --method hdbscan" in capsys.readouterr().err
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("wings make lift", encoding="utf-8")
    args = ["index", "add", str(docs), "--index", str(tmp_path / "x.db"), *model]
    assert main([*args, "--column", "body"]) == 1
    assert "--column 'body' applies to tables" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
