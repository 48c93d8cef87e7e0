"""Training data readers (JSONL, TSV, BEIR) and the no-duplicates batch sampler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilmarco.errors import FormatError
from distilmarco.training.data import Example, Requirements, read_examples, summarize
from distilmarco.training.sampler import SamplerConfig, batches


def _ex(*texts: str) -> Example:
    return Example(tuple(texts), None, "t")


def test_jsonl_fields_become_columns_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {"query": "q", "positive": "p", "negatives": ["n1", "n2"], "score": [9.0, 2.0, 1.5]},
        {"anchor": "a", "positive": "p2", "negative": "n3", "margin": 0.5},
        {"sentence1": "s1", "sentence2": "s2", "score": 3},
        {"text": "t", "vector": [0.5, 1.0]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = list(read_examples(path))
    assert [e.texts for e in got] == [
        ("q", "p", "n1", "n2"),
        ("a", "p2", "n3"),
        ("s1", "s2"),
        ("t",),
    ]
    assert [e.label for e in got] == [(9.0, 2.0, 1.5), (0.5,), 3.0, ((0.5, 1.0),)]
    assert got[1].source == f"{path}:2"


def test_tsv_with_and_without_header(tmp_path: Path) -> None:
    plain = tmp_path / "a.tsv"
    plain.write_text('q1\tp1\tn1\nq2\t"p2"\tn2\n')
    assert [e.texts for e in read_examples(plain)] == [("q1", "p1", "n1"), ("q2", '"p2"', "n2")]
    header = tmp_path / "b.tsv"
    header.write_text("sentence1\tsentence2\tscore\na\tb\t4.5\nc\td\tx\n")
    it = read_examples(header)
    first = next(it)
    assert first.texts == ("a", "b") and first.label == 4.5
    with pytest.raises(FormatError, match=r"b.tsv:3: score 'x' is not a number"):
        next(it)


def test_beir_train_qrels_give_query_document_pairs(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "T", "text": "one"}\n{"_id": "d2", "text": "two"}\n'
    )
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n')
    (tmp_path / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n"
    )
    assert [e.texts for e in read_examples(tmp_path)] == [("first", "T one")]


def test_summarize_checks_every_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    good = {"query": "q", "positive": "p"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"query": "q", "positive": ""}) + "\n")
    need = Requirements("mnrl", 2, None, "none")
    with pytest.raises(FormatError, match=r"d.jsonl:2: positive is an empty text"):
        summarize(path, need)
    path.write_text(json.dumps(good) + "\n")
    assert summarize(path, need).examples == 1


def test_no_duplicates_sampler_never_repeats_a_text_in_a_batch() -> None:
    # 4 queries, each with 3 positives: pairs of the same query must go to different batches
    examples = [_ex(f"q{q}", f"p{q}-{k}") for q in range(4) for k in range(3)]
    cfg = SamplerConfig(batch_size=4, seed=0, shuffle_buffer=0)
    out = list(batches(examples, cfg, epoch=0))
    assert sorted(e.texts for b in out for e in b) == sorted(e.texts for e in examples)
    for batch in out:
        texts = [t for e in batch for t in e.texts]
        assert len(texts) == len(set(texts))
    assert [len(b) for b in out] == [4, 4, 4]
    # without the rule, file order puts a query's pairs together
    plain = list(batches(examples, SamplerConfig(4, 0, 0, no_duplicates=False), 0))
    assert [e.texts[0] for e in plain[0]] == ["q0", "q0", "q0", "q1"]


def test_sampler_is_seeded_per_epoch() -> None:
    examples = [_ex(f"q{i}", f"p{i}") for i in range(50)]
    cfg = SamplerConfig(batch_size=8, seed=5, shuffle_buffer=16)
    first = [[e.texts for e in b] for b in batches(examples, cfg, 0)]
    assert first == [[e.texts for e in b] for b in batches(examples, cfg, 0)]
    assert first != [[e.texts for e in b] for b in batches(examples, cfg, 1)]
    assert sorted(t for b in first for t in b) == sorted(e.texts for e in examples)
    assert [len(b) for b in first] == [8] * 6 + [2]
