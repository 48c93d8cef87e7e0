"""The ``distilmarco eval`` commands: published all-MiniLM-L6-v2 figures reproduced through the CLI,
``--compare`` across backends, plots, clustering, the msmarco command, and clean errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import read_banking77, shared_data

from distilmarco.cli import main


def _eval(args: list[str], tmp_path: Path, name: str = "report") -> dict:
    path = tmp_path / f"{name}.json"
    assert main(["eval", *args, "--report", str(path)]) == 0
    return json.loads(path.read_text())


@pytest.mark.slow
def test_sts_benchmark_spearman_matches_published(minilm_dir: Path, tmp_path: Path) -> None:
    report = _eval(
        ["sts", str(shared_data("stsbenchmark")), "-m", str(minilm_dir), "--backend", "torch"],
        tmp_path,
    )
    (row,) = report["rows"]
    assert row["metrics"]["spearman"] == pytest.approx(0.8203, abs=0.002)
    assert report["details"]["torch/fp32"]["pairs"] == 1379


@pytest.mark.slow
def test_banking77_mteb_accuracy_matches_published(minilm_dir: Path, tmp_path: Path) -> None:
    report = _eval(
        ["classify", str(shared_data("banking77")), "-m", str(minilm_dir), "--backend", "torch"],
        tmp_path,
    )
    (row,) = report["rows"]
    assert row["metrics"]["accuracy"] == pytest.approx(0.8004, abs=0.01)
    detail = report["details"]["torch/fp32"]
    assert detail["n_experiments"] == 10 and detail["samples_per_label"] == 8
    assert detail["train_size"] == 77 * 8 and detail["test_size"] == 3080


def test_compare_reports_deltas_throughput_and_unavailable(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sts = tmp_path / "sts.csv"
    lines = (shared_data("stsbenchmark") / "sts-dev.csv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines[:200]]
    with open(sts, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence1", "sentence2", "score"])
        w.writerows([r[5], r[6], r[4]] for r in rows)
    plot = tmp_path / "compare.png"
    report = _eval(
        ["sts", str(sts), "-m", str(tiny_model_dir), "--compare", "onnx:fp32,onnx:int8,torch:fp16",
         "--plot", str(plot)],
        tmp_path,
    )  # fmt: skip
    got = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert list(got) == [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("torch", "fp16")]
    base = got["torch", "fp32"]
    assert base["delta_vs_torch_fp32"]["spearman"] == 0.0
    assert base["texts_per_second"] > 0
    onnx = got["onnx", "fp32"]
    assert onnx["error"] is None  # the ONNX export of the same weights: same scores
    assert onnx["metrics"]["spearman"] == pytest.approx(base["metrics"]["spearman"], abs=1e-4)
    assert onnx["delta_vs_torch_fp32"]["spearman"] == pytest.approx(
        onnx["metrics"]["spearman"] - base["metrics"]["spearman"], abs=1e-12
    )
    int8 = got["onnx", "int8"]
    assert int8["error"] is None and int8["tokens_per_second"] > 0
    assert abs(int8["delta_vs_torch_fp32"]["spearman"]) < 0.05
    # fp16 on a CPU is not offered: the row is there, with the reason
    fp16 = got["torch", "fp16"]
    assert fp16["error"] and fp16["error"].startswith("unavailable") and fp16["metrics"] == {}
    printed = capsys.readouterr()
    assert "torch/fp16: unavailable" in printed.err
    assert "Δ" in printed.out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 2000


def test_cluster_v_measure(minilm_dir: Path, tmp_path: Path) -> None:
    texts, labels = read_banking77("test")
    keep = ["card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed", "age_limit"]
    chosen = [(t, y) for t, y in zip(texts, labels, strict=True) if y in keep]
    path = tmp_path / "five.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(chosen)
    report = _eval(
        ["cluster", str(path), "-m", str(minilm_dir), "--runs", "2", "--backend", "torch"], tmp_path
    )
    (row,) = report["rows"]
    # five clearly different intents: a real sentence model separates them well
    assert row["metrics"]["v_measure"] > 0.6
    assert report["details"]["torch/fp32"]["clusters"] == 5


def test_msmarco_command_on_a_generated_sample(tiny_model_dir: Path, tmp_path: Path) -> None:
    from test_eval_ir import _msmarco_sample

    folder = _msmarco_sample(tmp_path / "ms")
    run = tmp_path / "run.trec"
    report = _eval(
        [
            "msmarco",
            str(folder),
            "-m",
            str(tiny_model_dir),
            "--run",
            str(run),
            "--backend",
            "torch",
        ],
        tmp_path,
    )
    (row,) = report["rows"]
    # MRR@10 recomputed here from the written run file and the qrels
    qrels = {"1": "1", "2": "4", "3": "1"}
    ranks: dict[str, list[str]] = {}
    for line in (tmp_path / "run.msmarco-dev.trec").read_text().splitlines():
        q, _, d, _, _, _ = line.split()
        ranks.setdefault(q, []).append(d)
    mrr = (
        sum(
            next((1 / (i + 1) for i, d in enumerate(ranks[q][:10]) if d == rel), 0.0)
            for q, rel in qrels.items()
        )
        / 3
    )
    assert row["metrics"]["msmarco-dev MRR@10"] == pytest.approx(mrr, abs=1e-12)
    dev = report["details"]["torch/fp32"]["msmarco-dev"]
    assert dev["published"] == 0.3379
    assert "trec-dl-2019 nDCG@10" in row["metrics"]


def test_bad_input_is_one_clear_error(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "collection.tsv").write_text("1\tsome text\n")
    (tmp_path / "queries.tsv").write_text("1\tquery\n2\tother\n")
    (tmp_path / "qrels.txt").write_text("1 0 1 1\n2 0 1\n")
    args = ["eval", "ir", "--collection", str(tmp_path / "collection.tsv"),
            "--queries", str(tmp_path / "queries.tsv"), "--qrels", str(tmp_path / "qrels.txt"),
            "-m", str(tiny_model_dir)]  # fmt: skip
    assert main(args) == 1
    assert "qrels.txt:2: expected 'query 0 document relevance'" in capsys.readouterr().err
    # unknown documents and unjudged queries are reported; --strict turns them into an error
    (tmp_path / "qrels.txt").write_text("1 0 1 1\n1 0 99 1\n")
    assert main([*args, "-k", "10", "--metrics", "MRR@10"]) == 0
    printed = capsys.readouterr().err
    assert "1 judgement(s) name documents not in the corpus (e.g. 99)" in printed
    assert "1 quer(y/ies) have no judgement (e.g. 2)" in printed
    assert main([*args, "--strict"]) == 1
    assert "(--strict)" in capsys.readouterr().err
    assert main(["eval", "ir", str(tmp_path), "-m", str(tiny_model_dir)]) == 1
    assert "neither a BEIR folder" in capsys.readouterr().err
