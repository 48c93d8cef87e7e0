"""``distilmarco rerank`` end to end, through ``cli.main``, on a tiny random cross-encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cross_models import build_cross_encoder

from distilmarco.cli import main
from distilmarco.reranker import Reranker

QUERY = "how do planes fly"
PASSAGES = ["Wings push air down, which lifts the plane.", "Cats sleep a lot.", "Jet engines."]


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("cli-rerank") / "ce", arch="distilbert")


def test_rerank_lines_json(
    cross_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "passages.txt"
    src.write_text("\n".join(PASSAGES[:2]) + "\n\n" + PASSAGES[2] + "\n")
    args = ["rerank", QUERY, str(src), "-m", str(cross_dir), "--backend", "torch", "--json"]
    assert main([*args, "-k", "2"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    expected = Reranker(cross_dir).rank(QUERY, PASSAGES, k=2)
    assert [r["index"] for r in rows] == [e.index for e in expected]
    assert [r["text"] for r in rows] == [PASSAGES[e.index] for e in expected]
    assert [r["score"] for r in rows] == pytest.approx([e.score for e in expected], abs=1e-6)
    assert "skipped 1 blank line" in captured.err


def test_rerank_jsonl_field_table(
    cross_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "passages.jsonl"
    src.write_text("".join(json.dumps({"body": p}) + "\n" for p in PASSAGES))
    args = ["rerank", QUERY, str(src), "--column", "body", "-m", str(cross_dir)]
    assert main([*args, "--backend", "torch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    best = Reranker(cross_dir).rank(QUERY, PASSAGES)
    assert len(lines) == 3
    assert f"[{best[0].index}]" in lines[0] and PASSAGES[best[0].index] in lines[0]
    assert lines[0].split()[0] == f"{best[0].score:.4f}"


def test_rerank_bad_model_and_file_are_named(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "p.txt"
    src.write_text("a passage\n")
    assert main(["rerank", QUERY, str(tmp_path / "missing.txt"), "-m", str(tiny_model_dir)]) == 1
    assert "does not exist" in capsys.readouterr().err
    # a sentence-embedding folder (Transformer, Pooling) is not a cross-encoder
    assert main(["rerank", QUERY, str(src), "-m", str(tiny_model_dir)]) == 1
    assert "exactly one Transformer module" in capsys.readouterr().err
