"""Retrieval evaluation end to end: the MS MARCO-format path on a generated sample with a
bag-of-words encoder whose rankings are known by hand, exact top-k across document chunks, and
Cranfield BM25 against an independent BM25 written here (FTS5's formula; SQLite's tokeniser)."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data

from distilmarco.cli import main
from distilmarco.evaluation import formats, ir
from distilmarco.evaluation.metrics import rank_run
from distilmarco.evaluation.msmarco import MsmarcoFiles, reproduce

VOCAB = ("apple", "banana", "cherry", "durian")


@dataclass
class _Stats:
    texts: int
    tokens: int
    truncated: int
    seconds: float


class BagOfWords:
    """A stand-in encoder: counts of four words, cosine similarity. Rankings follow by hand."""

    dimension = len(VOCAB)
    similarity = "cosine"
    max_seq_length = 512

    def encode_with_stats(self, texts: Iterable[str], **_: object) -> tuple[np.ndarray, _Stats]:
        texts = list(texts)
        out = np.array([[t.split().count(w) for w in VOCAB] for t in texts], dtype=np.float32)
        return out, _Stats(len(texts), sum(len(t.split()) for t in texts), 0, 1e-3)


PASSAGES = {"1": "apple banana", "2": "apple", "3": "cherry", "4": "banana cherry", "5": "durian"}


def _write(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _msmarco_sample(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "collection.tsv", [f"{p}\t{t}" for p, t in PASSAGES.items()])
    _write(folder / "queries.dev.small.tsv", ["1\tapple", "2\tcherry", "3\tbanana durian"])
    _write(folder / "qrels.dev.small.tsv", ["1\t0\t1\t1", "2\t0\t4\t1", "3\t0\t1\t1"])
    _write(folder / "msmarco-test2019-queries.tsv", ["100\tapple", "101\tcherry", "102\tdurian"])
    _write(folder / "2019qrels-pass.txt", ["100 0 1 3", "100 0 2 1", "101 0 3 2", "101 0 5 0"])
    top = [("100", "3"), ("100", "1"), ("100", "2"), ("101", "4"), ("101", "5"), ("102", "5")]
    queries = {"100": "apple", "101": "cherry", "102": "durian"}
    _write(
        folder / "msmarco-passagetest2019-top1000.tsv",
        [f"{q}\t{p}\t{queries[q]}\t{PASSAGES[p]}" for q, p in top],
    )
    return folder


def test_msmarco_reproduction_path_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ir, "DOC_CHUNK", 2)  # exact top-k merged across three document chunks
    files = MsmarcoFiles.in_folder(_msmarco_sample(tmp_path / "ms"))
    dev, dl19 = reproduce(BagOfWords(), files, dev_k=10)  # type: ignore[arg-type]
    # dev, full retrieval. q1 "apple": 2 (1.0), 1 (0.71), then 5, 4, 3 tied at 0 (id descending)
    # -> relevant 1 at rank 2. q2 "cherry": 3, 4 -> relevant 4 at rank 2. q3 "banana durian":
    # 5 (0.71), then 4 and 1 tied at 0.5 -> 4 first -> relevant 1 at rank 3.
    ranked = rank_run(dev.result.run)
    assert [d for d, _ in ranked["1"]] == ["2", "1", "5", "4", "3"]
    assert [d for d, _ in ranked["3"]][:3] == ["5", "4", "1"]
    assert dev.metric == "MRR@10" and dev.published == 0.3379
    assert dev.value == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3, abs=1e-12)
    # TREC DL 2019, re-ranking the top-1000 file. q100 "apple": 2 (gain 1), 1 (gain 3), 3 (0).
    # q101 "cherry": candidates 4, 5 only; the judged 3 (gain 2) was never a candidate.
    # q102 has no judgements: not re-ranked, not averaged.
    assert [d for d, _ in rank_run(dl19.result.run)["100"]] == ["2", "1", "3"]
    assert set(dl19.result.run) == {"100", "101"}
    ndcg_100 = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert dl19.result.scores.per_query["101"]["nDCG@10"] == 0.0
    assert dl19.value == pytest.approx((ndcg_100 + 0.0) / 2, abs=1e-12)
    assert dl19.result.scores.mean["MRR@10"] == pytest.approx((1 / 2 + 0) / 2, abs=1e-12)


def test_rerank_of_a_trec_run_and_run_file(tmp_path: Path) -> None:
    folder = _msmarco_sample(tmp_path / "ms")
    cands = _write(
        tmp_path / "bm25.trec",
        ["1 Q0 3 1 9.0 bm25", "1 Q0 1 2 8.0 bm25", "1 Q0 2 3 7.0 bm25", "3 Q0 2 1 1.0 bm25"],
    )
    data = formats.read_msmarco(
        folder / "collection.tsv",
        folder / "queries.dev.small.tsv",
        folder / "qrels.dev.small.tsv",
        candidates=cands,
    )
    (res,) = ir.evaluate_ir(BagOfWords(), data, modes=("rerank",), k=10, metrics="MRR@10")  # type: ignore[arg-type]
    # q1: 2, 1, 3 -> RR 1/2; q2 has no candidates -> 0; q3: only 2 -> 0
    assert res.scores.mean["MRR@10"] == pytest.approx(1 / 6, abs=1e-12)
    assert res.scores.coverage.not_retrieved == ("2",)
    path = tmp_path / "out.trec"
    ir.write_trec_run(path, res.run, "test tag")
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["1", "Q0", "2", "1", "1.000000", "test_tag"]
    assert [ln.split()[2] for ln in lines[:3]] == ["2", "1", "3"]


def test_exact_top_k_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    d = rng.standard_normal((103, 16)).astype(np.float32)
    idx, scores = ir.top_k_exact(q, iter(np.array_split(d, 9)), 10, "dot")
    full = q @ d.T
    expect = np.argsort(-full, axis=1, kind="stable")[:, :10]
    assert np.array_equal(idx, expect)
    assert np.allclose(scores, np.take_along_axis(full, expect, 1), atol=1e-5)


# --- Cranfield: dense, BM25 and hybrid through the CLI; BM25 checked independently -----------

K1, B = 1.2, 0.75  # FTS5's bm25() defaults


def index_tokenizer(tmp: Path, model: Path) -> str:
    """The ``tokenize=`` option the index gives its FTS5 table, read back from a fresh index file."""
    from distilmarco import Encoder
    from distilmarco.index import Index

    with Index(tmp / "probe.db", Encoder(model)) as index:
        index.add(["x"], ["probe"])
    sql = (
        sqlite3.connect(tmp / "probe.db")
        .execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'")
        .fetchone()[0]
    )
    match = re.search(r"tokenize\s*=\s*'([^']*)'", sql)
    assert match, sql
    return match.group(1)


def fts_terms(texts: list[str], tokenize: str) -> list[list[str]]:
    """The terms SQLite's FTS5 tokenizer ``tokenize`` makes of each text (via fts5vocab)."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize = '{tokenize}')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    db.executemany("INSERT INTO t (rowid, x) VALUES (?, ?)", list(enumerate(texts)))
    out: list[list[str]] = [[] for _ in texts]
    for term, doc, _ in db.execute("SELECT term, doc, offset FROM v ORDER BY doc, offset"):
        out[doc].append(term)
    return out


def independent_bm25(
    chunks: dict[str, list[str]], queries: dict[str, str], k: int, tokenize: str
) -> dict:
    """BM25 as FTS5 defines it (idf = ln((N - n + 0.5) / (n + 0.5)), floored at 1e-6), one row per
    passage; a document scores as its best passage. Only the tokenisation is SQLite's."""
    owners = [doc for doc, ps in chunks.items() for _ in ps]
    terms = fts_terms([p for ps in chunks.values() for p in ps], tokenize)
    rows = [Counter(t) for t in terms]
    lengths = [len(t) for t in terms]
    avgdl = sum(lengths) / len(rows)
    df = Counter(t for c in rows for t in c)
    n = len(rows)
    run = {}
    for qid, text in queries.items():
        # The index asks FTS5 for each distinct word as a phrase, OR-ed; FTS5 sums BM25 over the
        # phrases, so two words with one stem ("flow", "flows") count that stem twice.
        words = list(dict.fromkeys(re.findall(r"\w+", text.lower())))
        phrases = fts_terms(words, tokenize)
        assert all(len(p) == 1 for p in phrases), (qid, phrases)  # one term per word here
        qterms = [p[0] for p in phrases]
        best: dict[str, float] = {}
        for doc, c, dl in zip(owners, rows, lengths, strict=True):
            s = 0.0
            for t in qterms:
                tf = c.get(t, 0)
                if tf:
                    idf = max(math.log((n - df[t] + 0.5) / (df[t] + 0.5)), 1e-6)
                    s += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))
            if s > 0:
                best[doc] = max(best.get(doc, 0.0), s)
        run[qid] = dict(sorted(best.items(), key=lambda it: -it[1])[:k])
    return run


@pytest.fixture(scope="module")
def cranfield_cli(make_model, tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[no-untyped-def]
    """One CLI run over Cranfield with a tiny 512-token model: dense, BM25 and hybrid."""
    folder = shared_data("cranfield")
    model = make_model("tiny-512", max_seq_length=512)
    out = tmp_path_factory.mktemp("cran")
    start = time.perf_counter()
    rc = main(
        ["eval", "ir", str(folder), "-m", str(model), "--backend", "torch", "--mode", "dense,bm25,hybrid",
         "--run", str(out / "cran.trec"), "--report", str(out / "cran.json"), "-k", "100"]
    )  # fmt: skip
    assert rc == 0
    return {
        "model": model,
        "out": out,
        "report": json.loads((out / "cran.json").read_text()),
        "seconds": time.perf_counter() - start,
    }


def _read_trec(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        run.setdefault(q, {})[d] = float(s)
    return run


@pytest.mark.slow
def test_cranfield_bm25_equals_independent_bm25(cranfield_cli: dict, tmp_path: Path) -> None:
    from distilmarco import Encoder
    from distilmarco.index.chunking import ChunkConfig, chunk_spans

    data = formats.read_cranfield(shared_data("cranfield"))
    enc = Encoder(cranfield_cli["model"])
    config = ChunkConfig.for_model(enc.max_seq_length, None, None)
    chunks = {}
    for doc_id, doc in data.corpus.items():
        text = doc.full_text
        spans = chunk_spans(enc.tokenizer.offsets(text), len(text), config)
        chunks[doc_id] = [text[s:e] for s, e in spans if text[s:e].strip()]
    tokenize = index_tokenizer(tmp_path, cranfield_cli["model"])
    expected = independent_bm25(chunks, data.queries, 100, tokenize)
    got = _read_trec(cranfield_cli["out"] / "cran.bm25.torch-fp32.trec")
    assert set(got) == {q for q in expected if expected[q]}
    for qid, docs in got.items():
        ref = expected[qid]
        assert len(docs) == len(ref)
        floor = min(ref.values())
        for doc, score in docs.items():
            if doc in ref:
                assert score == pytest.approx(ref[doc], rel=1e-5, abs=1e-5), (qid, doc)
            else:  # only a tie at the cut-off may differ
                assert score == pytest.approx(floor, rel=1e-5), (qid, doc)


def test_cranfield_figures_are_reported(cranfield_cli: dict) -> None:
    report = cranfield_cli["report"]
    (row,) = report["rows"]
    assert row["backend"] == "torch" and row["precision"] == "fp32" and row["error"] is None
    for mode in ("dense", "bm25", "hybrid"):
        detail = report["details"]["torch/fp32"][mode]
        assert detail["queries"]["scored"] == 225  # every query has a relevant document
        assert detail["data"]["judgements"] == 1837
        for name in ("nDCG@10", "MRR@10", "Recall@100", "MAP", "P@10"):
            assert 0.0 <= row["metrics"][f"{mode} {name}"] <= 1.0
    # BM25 on Cranfield is a well-known baseline: nDCG@10 about 0.3-0.45 depending on stemming
    assert 0.25 < row["metrics"]["bm25 nDCG@10"] < 0.5
    # a random 2-layer model is far below BM25; the fusion must land between or above the two
    assert row["metrics"]["dense nDCG@10"] < row["metrics"]["bm25 nDCG@10"]
    assert row["metrics"]["hybrid nDCG@10"] > row["metrics"]["dense nDCG@10"]
