"""``distilmarco embed`` and ``distilmarco info`` end to end, through ``cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distilmarco import Encoder
from distilmarco.cli import main

TEXTS = ["first line", "second, with a comma", 'third "quoted" line']


def test_embed_text_lines_to_npy(
    tiny_model_dir: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    assert main(["embed", str(src), "-o", str(tmp_path / "v.npy"), "-m", str(tiny_model_dir)]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), tiny_encoder.encode(TEXTS), atol=1e-6)


def test_embed_jsonl_field_to_jsonl(
    tiny_model_dir: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = tmp_path / "v.jsonl"
    args = ["embed", str(src), "--column", "body", "-o", str(out), "-m", str(tiny_model_dir)]
    assert main([*args, "--normalize"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    expected = tiny_encoder.encode(TEXTS, normalize=True)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6)


def test_embed_csv_column_to_parquet(
    tiny_model_dir: Path, tiny_encoder: Encoder, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    src = tmp_path / "in.csv"
    src.write_text('id,body\n1,first line\n2,"second, with a comma"\n3,"third ""quoted"" line"\n')
    out = tmp_path / "v.parquet"
    assert (
        main(["embed", str(src), "--column", "body", "-o", str(out), "-m", str(tiny_model_dir)])
        == 0
    )
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == TEXTS
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors, tiny_encoder.encode(TEXTS), atol=1e-6)


def test_embed_parquet_input(tiny_model_dir: Path, tiny_encoder: Encoder, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "in.parquet")
    out = tmp_path / "v.npy"
    assert (
        main(["embed", str(tmp_path / "in.parquet"), "-o", str(out), "-m", str(tiny_model_dir)])
        == 0
    )
    np.testing.assert_allclose(np.load(out), tiny_encoder.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ('{"text": "ok"}\nnot json\n', ["--column", "text"], "in.jsonl:2: not valid JSON"),
        ('{"body": "ok"}\n', [], "in.jsonl:1: no field 'text'"),
    ],
)
def test_embed_errors_are_one_line(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    args: list[str],
    message: str,
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    code = main(
        ["embed", str(src), "-o", str(tmp_path / "v.npy"), "-m", str(tiny_model_dir), *args]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v.npy").exists()


def test_embed_missing_input_and_bad_output_suffix(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", str(tmp_path / "absent.txt"), "-o", str(tmp_path / "v.npy")]) == 1
    assert "absent.txt does not exist" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("x\n")
    assert main(["embed", str(tmp_path / "in.txt"), "-o", str(tmp_path / "v.csv")]) == 2
    assert "must end in .npy, .parquet or .jsonl" in capsys.readouterr().err


def test_info_json(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tiny_model_dir), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["architecture"] == "distilbert"
    assert (facts["dimension"], facts["max_seq_length"], facts["pooling"]) == (32, 128, ["mean"])
    assert facts["similarity"] == "cosine" and "model.safetensors" in facts["files"]


def test_info_for_a_missing_model_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["info", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err
