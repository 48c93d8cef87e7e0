"""The ``distilmarco eval`` commands: the library's STS and MTEB scores reproduced through the CLI,
``--compare`` across backends, plots, clustering, the msmarco command, and clean errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import Banking77, StsVectors, read_banking77, shared_data

from distilmarco.cli import main


def _eval(args: list[str], tmp_path: Path, name: str = "report") -> dict:
    path = tmp_path / f"{name}.json"
    assert main(["eval", *args, "--report", str(path)]) == 0
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.xdist_group("sts_minilm")
def test_sts_command_scores_as_the_library_does(
    minilm_dir: Path, sts_minilm: StsVectors, tmp_path: Path
) -> None:
    """``eval sts`` on a folder holding the first 200 pairs of the real sts-test.csv gives the
    Spearman correlation of those pairs' cosines from the session's STS vectors (whose score on
    all 1,379 pairs test_quality.py holds to the published 0.8203)."""
    from scipy.stats import spearmanr

    n = 200
    lines = (shared_data("stsbenchmark") / "sts-test.csv").read_text(encoding="utf-8")
    (tmp_path / "sts").mkdir()
    (tmp_path / "sts" / "sts-test.csv").write_text(
        "".join(lines.splitlines(keepends=True)[:n]), encoding="utf-8"
    )
    report = _eval(
        ["sts", str(tmp_path / "sts"), "-m", str(minilm_dir), "--backend", "torch"], tmp_path
    )
    (row,) = report["rows"]
    gold = [score for _, _, score in sts_minilm.pairs[:n]]
    want = spearmanr(sts_minilm.cosines()[:n], gold).statistic
    assert row["metrics"]["spearman"] == pytest.approx(want, abs=1e-4)
    assert 0.75 < want < 0.95  # a real correlation, not a degenerate one
    assert report["details"]["torch/fp32"]["pairs"] == n


def _labelled(path: Path, texts: list[str], labels: list[str], rows: list[int]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        w.writerows([texts[i], labels[i]] for i in rows)


@pytest.mark.slow
@pytest.mark.xdist_group("banking77")
def test_classify_command_runs_the_mteb_protocol_as_the_library_does(
    minilm_dir: Path, banking77: Banking77, tmp_path: Path
) -> None:
    """``eval classify`` on 12 Banking77 intents (24 train and 20 test rows each) gives the
    accuracy of the library's MTEB protocol on the session's vectors of the same rows (whose
    score on all of Banking77 test_apps_banking77.py holds to the published 0.8004)."""
    from distilmarco.apps.classify import mteb_protocol

    kinds = sorted(set(banking77.test_y))[::6][:12]
    assert len(kinds) == 12

    def rows(labels: list[str], per_label: int) -> list[int]:
        return [i for k in kinds for i in [i for i, y in enumerate(labels) if y == k][:per_label]]

    train, test = rows(banking77.train_y, 24), rows(banking77.test_y, 20)
    (tmp_path / "b77").mkdir()
    _labelled(tmp_path / "b77" / "train.csv", banking77.train_texts, banking77.train_y, train)
    _labelled(tmp_path / "b77" / "test.csv", banking77.test_texts, banking77.test_y, test)
    report = _eval(
        ["classify", str(tmp_path / "b77"), "-m", str(minilm_dir), "--backend", "torch"], tmp_path
    )
    want = mteb_protocol(
        banking77.train_x[train],
        [banking77.train_y[i] for i in train],
        banking77.test_x[test],
        [banking77.test_y[i] for i in test],
    )
    (row,) = report["rows"]
    assert row["metrics"]["accuracy"] == pytest.approx(want.accuracy, abs=0.005)
    assert 0.6 < want.accuracy < 1.0 and len(set(want.accuracies)) > 1
    detail = report["details"]["torch/fp32"]
    assert detail["n_experiments"] == 10 and detail["samples_per_label"] == 8
    assert detail["train_size"] == 12 * 8 and detail["test_size"] == 12 * 20


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
