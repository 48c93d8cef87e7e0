"""``eval ir --rerank``: each first-stage run's top hits re-scored by a cross-encoder, checked
against Reranker.score on the same passages and against the metrics recomputed from the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cross_models import build_cross_encoder

from distilmarco.cli import main
from distilmarco.errors import InputError
from distilmarco.evaluation.formats import Document, IRDataset
from distilmarco.evaluation.metrics import evaluate, parse_metrics
from distilmarco.evaluation.rerank import cross_encoder_run
from distilmarco.reranker import Reranker

PASSAGES = {
    "1": "Apples grow on trees in orchards.",
    "2": "An apple a day keeps the doctor away.",
    "3": "Cherries are small red stone fruits.",
    "4": "Bananas and cherries make a smoothie.",
    "5": "The durian smells strongly.",
}
QUERIES = {"1": "where do apples grow", "2": "what colour are cherries"}
QRELS = {"1": {"1": 1}, "2": {"3": 1, "4": 1}}


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("eval-rerank") / "ce", arch="bert")


def dataset() -> IRDataset:
    corpus = {d: Document("", t) for d, t in PASSAGES.items()}
    return IRDataset("sample", corpus, dict(QUERIES), {q: dict(r) for q, r in QRELS.items()})


def test_top_depth_is_rescored_and_the_rest_dropped(cross_dir: Path) -> None:
    first = {
        "1": {"5": 0.9, "2": 0.8, "1": 0.7, "3": 0.1},
        "2": {"4": 0.5, "3": 0.4, "1": 0.3},
        "9": {"1": 1.0},  # a query without text: left out
    }
    rr = Reranker(cross_dir)
    run, spent = cross_encoder_run(rr, dataset(), first, depth=3)
    assert set(run) == {"1", "2"}
    for q, top in (("1", ["5", "2", "1"]), ("2", ["4", "3", "1"])):
        expected = rr.score(QUERIES[q], [PASSAGES[d] for d in top])
        assert list(run[q]) == top
        assert [run[q][d] for d in top] == pytest.approx(expected.tolist(), abs=1e-6)
    assert spent.texts == 6 and spent.tokens > 6
    with pytest.raises(InputError, match="depth"):
        cross_encoder_run(rr, dataset(), first, depth=0)


def test_eval_ir_rerank_cli_report(cross_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "collection.tsv").write_text("".join(f"{d}\t{t}\n" for d, t in PASSAGES.items()))
    (tmp_path / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    (tmp_path / "qrels.txt").write_text(
        "".join(f"{q} 0 {d} {r}\n" for q, rel in QRELS.items() for d, r in rel.items())
    )
    args = ["eval", "ir", "--collection", str(tmp_path / "collection.tsv"),
            "--queries", str(tmp_path / "queries.tsv"), "--qrels", str(tmp_path / "qrels.txt"),
            "-m", str(tiny_model_dir), "--backend", "torch", "-k", "5", "--metrics",
            "nDCG@3,MRR@5", "--rerank", str(cross_dir), "--rerank-depth", "3",
            "--run", str(tmp_path / "run.trec"), "--report", str(tmp_path / "r.json")]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    (row,) = report["rows"]
    assert {"dense nDCG@3", "dense+cross-encoder nDCG@3"} <= set(row["metrics"])
    runs = {}
    for mode in ("dense", "dense+cross-encoder"):
        path = tmp_path / f"run.{mode}.torch-fp32.trec"
        runs[mode] = {}
        for line in path.read_text().splitlines():
            q, _, d, _, s, _ = line.split()
            runs[mode].setdefault(q, {})[d] = float(s)
    rr = Reranker(cross_dir)
    for q, ranking in runs["dense"].items():
        top = sorted(ranking, key=lambda d: (-ranking[d], d))[:3]
        assert set(runs["dense+cross-encoder"][q]) == set(top)
        scores = rr.score(QUERIES[q], [PASSAGES[d] for d in top])
        got = [runs["dense+cross-encoder"][q][d] for d in top]
        assert got == pytest.approx(scores.tolist(), abs=1e-5)
    expected = evaluate(QRELS, runs["dense+cross-encoder"], parse_metrics("nDCG@3,MRR@5"))
    for name, value in expected.mean.items():
        assert row["metrics"][f"dense+cross-encoder {name}"] == pytest.approx(value, abs=1e-5)
