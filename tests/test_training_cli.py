"""``distilmarco train`` and ``distilmarco mine`` end to end, through ``cli.main``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from distilmarco import Encoder, Index
from distilmarco.cli import main


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


DOCS = [
    f"document {i} about {w}"
    for i, w in enumerate(["wings", "rotors", "rice", "pasta", "sky", "sea"])
]


def _pairs(path: Path) -> Path:
    rows = [{"query": f"what about {d.split()[-1]}", "positive": d} for d in DOCS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mine_then_train_from_the_command_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = _pairs(tmp_path / "pairs.jsonl")
    with Index(tmp_path / "i.db", Encoder(tiny_model_dir)) as index:
        index.add([str(i) for i in range(len(DOCS))], DOCS)
    mined = tmp_path / "mined.jsonl"
    code = main(
        ["mine", str(pairs), "--index", str(tmp_path / "i.db"), "-o", str(mined),
         "--negatives", "2", "--range-max", "6", "--json"]
    )  # fmt: skip
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["pairs"] == 6 and stats["written"] == 6
    rows = [json.loads(x) for x in mined.read_text().splitlines()]
    assert all(len(r["negatives"]) == 2 and r["positive"] not in r["negatives"] for r in rows)
    out = tmp_path / "model"
    code = main(
        ["train", str(mined), "-m", str(tiny_model_dir), "-o", str(out), "--loss", "mnrl",
         "--batch-size", "3", "--lr", "1e-3", "--max-seq-length", "32", "--seed", "1", "--json"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    # the mined negatives are other pairs' positives: the sampler keeps them in other batches
    assert result["steps"] == result["total_steps"] > 2 and result["output"] == str(out)
    vectors = Encoder(out).encode(DOCS)
    assert vectors.shape == (6, 32) and not np.allclose(
        vectors, Encoder(tiny_model_dir).encode(DOCS)
    )


def test_train_errors_are_one_line_with_file_and_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"query": "a", "positive": "b"}\n{"query": "c", "positive": 3}\n')
    code = main(["train", str(data), "-m", str(tiny_model_dir), "-o", str(tmp_path / "o")])
    assert code == 1
    assert f"{data}:2: field 'positive' must be a string" in capsys.readouterr().err
    assert main(["mine", str(data), "--index", str(tmp_path / "none.db"), "-o", "x"]) == 1
    assert "none.db does not exist" in capsys.readouterr().err
