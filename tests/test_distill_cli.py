"""``distilmarco distill``, ``eval translation`` and ``eval mse`` through the CLI on tiny models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from distilmarco.cli import main
from distilmarco.cli.distill import parse_layers
from distilmarco.errors import InputError

TORCH = ("--backend", "torch")  # no ONNX export of the tiny models
PAIRS = [
    ("The cat sleeps.", "Die Katze schläft."),
    ("I like tea.", "Me gusta el té."),
    ("Where is the station?", "Wo ist der Bahnhof?"),
    ("It is raining.", "Il pleut."),
]


@pytest.fixture()
def tatoeba(tmp_path: Path) -> Path:
    folder = tmp_path / "tatoeba"
    folder.mkdir()
    english = "".join(a + "\n" for a, _ in PAIRS)
    for lang in ("deu", "spa"):
        (folder / f"tatoeba.{lang}-eng.eng").write_text(english, encoding="utf-8")
        (folder / f"tatoeba.{lang}-eng.{lang}").write_text(
            "".join(f"{b} ({lang})\n" for _, b in PAIRS), encoding="utf-8"
        )
    return folder


def test_parse_layers() -> None:
    assert parse_layers("3") == 3
    assert parse_layers("1,3,5") == [1, 3, 5]
    assert parse_layers("4,") == [4]
    with pytest.raises(InputError, match="a count"):
        parse_layers("three")


@pytest.mark.slow
def test_distill_then_evaluate_through_the_cli(
    make_model: Callable[..., Path],
    tiny_model_dir: Path,
    tatoeba: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    teacher = make_model("cli-distill-teacher", layers=4)
    out = tmp_path / "student"
    code = main(
        [
            "distill", str(tatoeba), "--teacher", str(teacher), "--layers", "0,3", "-o", str(out),
            "--rows", "0:3", "--languages", "deu,spa", "--dev", str(tatoeba), "--dev-rows", "3:",
            "--eval-steps", "2", "--batch-size", "4", "--precision", "fp32",
            "--cache-dir", str(tmp_path / "cache"), "--json",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 3  # 2 languages x 3 rows x 2 texts, batches of 4
    assert set(report["evaluations"][0]["metrics"]) == {"negative_mse", "accuracy"}
    assert json.loads((out / "config.json").read_text())["n_layers"] == 2

    code = main(
        ["eval", "translation", str(tatoeba), "-m", str(out), "--rows", "1:", "--json", *TORCH]
    )
    assert code == 0
    sets = json.loads(capsys.readouterr().out)["sets"]
    assert [(s["name"], s["pairs"]) for s in sets] == [("deu", 3), ("spa", 3)]
    assert all(0 <= s["src2trg"] <= 1 for s in sets)

    code = main(["eval", "translation", str(tatoeba), "-m", str(out), "--languages", "spa", *TORCH])
    shown = capsys.readouterr().out
    assert code == 0 and "spa->eng" in shown and "eng->spa" in shown and "deu" not in shown

    code = main(["eval", "mse", str(tatoeba), "--teacher", str(teacher), "-m", str(out), "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["sets"]
    assert [r["sentences"] for r in rows] == [4, 4]
    assert all(r["translation_mse"] > 0 and r["source_mse"] >= 0 for r in rows)


def test_distill_cli_errors_name_the_problem(
    tiny_model_dir: Path, tatoeba: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["distill", str(tatoeba), "--teacher", str(tiny_model_dir), "-o", str(tmp_path / "o")]
    assert main([*base, "--layers", "2", "--languages", "fra"]) == 1
    assert "no Tatoeba pairs for fra; it has deu, spa" in capsys.readouterr().err
    assert main([*base, "--layers", "9"]) == 1
    assert "between 1 and 2 layers" in capsys.readouterr().err
    assert main([*base, "--layers", "1", "--rows", "5"]) == 1
    assert "START:STOP" in capsys.readouterr().err
