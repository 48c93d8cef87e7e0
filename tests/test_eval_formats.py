"""Readers of BEIR, MS MARCO/TREC and SMART files: real data parsed as documented, bad input reported
with file and line, odd-but-readable data counted rather than dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_data

from distilmarco.errors import FormatError, InputError
from distilmarco.evaluation import formats


def test_cranfield_numbering_and_gains() -> None:
    data = formats.read_cranfield(shared_data("cranfield"))
    assert len(data.corpus) == 1400
    assert len(data.queries) == 225
    assert sum(len(d) for d in data.qrels.values()) == 1837
    # cran.qry .I 002 is query 2, but .I 004 (the third record) is query 3
    assert data.queries["3"].startswith("what problems of heat conduction in composite slabs")
    assert data.qrels["1"]["184"] == 3  # code 2 -> gain 3
    assert data.qrels["225"]["1188"] == 0  # code -1 -> not relevant
    assert data.corpus["1"].title.startswith("experimental investigation of the aerodynamics")
    assert sum(1 for d in data.corpus.values() if not d.text) == 2  # the two empty .W records
    chk = formats.check(data)
    assert chk.unknown_documents == 0 and chk.unknown_queries == 0 and chk.unjudged_queries == 0


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_qrels_line_names_file_and_line(tmp_path: Path) -> None:
    bad = _write(tmp_path / "qrels.txt", "1 0 d1 1\n1 0 d2\n")
    with pytest.raises(FormatError, match=r"qrels\.txt:2: expected 'query 0 document relevance'"):
        formats.read_qrels(bad)
    bad = _write(tmp_path / "qrels2.txt", "1 0 d1 1\n\n2 0 d2 high\n")
    with pytest.raises(FormatError, match=r"qrels2\.txt:3: relevance 'high' is not an integer"):
        formats.read_qrels(bad)


def test_malformed_run_collection_and_smart(tmp_path: Path) -> None:
    run = _write(tmp_path / "run.trec", "1 Q0 d1 1 2.5 x\n1 Q0 d2 2 oops x\n")
    with pytest.raises(FormatError, match=r"run\.trec:2: score 'oops' is not a number"):
        formats.read_run(run)
    run = _write(tmp_path / "run2.trec", "1 Q0 d1 1 2.5 x\n1 d2 2 3 4\n")
    with pytest.raises(FormatError, match=r"run2\.trec:2: expected a TREC run line"):
        formats.read_run(run)
    coll = _write(tmp_path / "collection.tsv", "0\tfirst passage\n1 second passage\n")
    with pytest.raises(FormatError, match=r"collection\.tsv:2: expected 'id<TAB>passage'"):
        formats.read_id_texts(coll, "passage")
    smart = _write(tmp_path / "docs.all", ".I 1\n.W\ntext\n.I\n.W\nmore\n")
    with pytest.raises(FormatError, match=r"docs\.all:4: '\.I' without a record id"):
        formats.read_smart(smart)
    smart = _write(tmp_path / "docs2.all", "stray text\n.I 1\n")
    with pytest.raises(FormatError, match=r"docs2\.all:1: text outside a field"):
        formats.read_smart(smart)


def test_cranfield_bad_code(tmp_path: Path) -> None:
    folder = tmp_path / "cran"
    _write(folder / "cran.all.1400", ".I 1\n.T\ntitle\n.W\nbody\n")
    _write(folder / "cran.qry", ".I 001\n.W\nquery\n")
    _write(folder / "cranqrel", "1 1 2\n1 1 7\n")
    with pytest.raises(FormatError, match=r"cranqrel:2: relevance code 7 is not one of"):
        formats.read_cranfield(folder)


def _beir(folder: Path) -> Path:
    docs = [
        {"_id": "d1", "title": "Lift", "text": "Wings make lift."},
        {"_id": "d2", "title": "", "text": "Engines make thrust."},
    ]
    _write(folder / "corpus.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": "q1", "text": "how do wings work"}, {"_id": "q2", "text": "thrust"}]
    _write(folder / "queries.jsonl", "".join(json.dumps(q) + "\n" for q in queries))
    _write(
        folder / "qrels" / "test.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\nq3\td2\t1\n",
    )
    return folder


def test_beir_unknown_documents_queries_and_unjudged_are_counted(tmp_path: Path) -> None:
    data = formats.load(_beir(tmp_path / "beir"))
    assert data.corpus["d1"].full_text == "Lift Wings make lift."
    assert data.corpus["d2"].full_text == "Engines make thrust."
    assert data.queries == {"q1": "how do wings work"}  # q2 is not judged in this split
    assert any("1 quer(y/ies) of queries.jsonl are not judged" in n for n in data.notes)
    chk = formats.check(data)
    assert chk.unknown_documents == 1 and chk.unknown_document_examples == ("d9",)
    assert chk.unknown_queries == 1 and chk.unknown_query_examples == ("q3",)
    text = " ".join(chk.warnings())
    assert "1 judgement(s) name documents not in the corpus (e.g. d9)" in text
    assert "1 judged quer(y/ies) have no text (e.g. q3)" in text


def test_beir_bad_json_and_missing_split(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "beir")
    with pytest.raises(
        InputError, match=r"qrels[/\\]dev\.tsv does not exist; splits here: \['test'\]"
    ):
        formats.load(folder, split="dev")
    _write(folder / "corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": 5.5}\n')
    with pytest.raises(
        FormatError, match=r"corpus\.jsonl:2: field 'text' is missing or not a string"
    ):
        formats.load(folder)
    _write(folder / "corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2",\n')
    with pytest.raises(FormatError, match=r"corpus\.jsonl:2: not valid JSON"):
        formats.load(folder)


def test_msmarco_queries_without_judgements_are_reported(tmp_path: Path) -> None:
    coll = _write(tmp_path / "collection.tsv", "0\talpha\n1\tbeta\n")
    queries = _write(tmp_path / "queries.tsv", "10\tq one\n11\tq two\n12\tq three\n")
    qrels = _write(tmp_path / "qrels.tsv", "10\t0\t1\t1\n")
    data = formats.read_msmarco(coll, queries, qrels)
    chk = formats.check(data)
    assert chk.unjudged_queries == 2 and chk.unjudged_query_examples == ("11", "12")
    assert "2 quer(y/ies) have no judgement (e.g. 11, 12); they are not evaluated" in chk.warnings()


def test_candidates_naming_unknown_passages_fail(tmp_path: Path) -> None:
    coll = _write(tmp_path / "collection.tsv", "0\talpha\n1\tbeta\n")
    queries = _write(tmp_path / "queries.tsv", "10\tq one\n")
    qrels = _write(tmp_path / "qrels.tsv", "10 0 1 1\n")
    run = _write(tmp_path / "run.tsv", "10 1 1\n10 7 2\n")
    with pytest.raises(
        InputError, match=r"1 candidate passage\(s\) are not in the collection, e\.g\. 7"
    ):
        formats.read_msmarco(coll, queries, qrels, candidates=run)


def test_unknown_folder_layout(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a BEIR folder"):
        formats.load(tmp_path)


def test_sts_and_labelled_readers(tmp_path: Path) -> None:
    from distilmarco.evaluation.classify import read_labelled
    from distilmarco.evaluation.sts import read_pairs

    pairs = read_pairs(shared_data("stsbenchmark"))  # the folder means sts-test.csv
    assert len(pairs) == 1379
    assert all(0.0 <= p.score <= 5.0 for p in pairs)
    bad = _write(tmp_path / "sts.tsv", "g\tf\t2012\t1\t4.0\ta\tb\ng\tf\t2012\t2\tx\ta\tb\n")
    with pytest.raises(FormatError, match=r"sts\.tsv:2: score 'x' is not a number"):
        read_pairs(bad)
    short = _write(tmp_path / "short.tsv", "g\tf\t2012\t1\t4.0\ta\n")
    with pytest.raises(FormatError, match=r"short\.tsv:1: expected at least 7 TAB-separated"):
        read_pairs(short)
    rows = read_labelled(shared_data("banking77") / "test.csv")
    assert len(rows.texts) == 3080 and len(set(rows.labels)) == 77
    nolabel = _write(tmp_path / "x.csv", "text,topic\nhello,a\n")
    with pytest.raises(InputError, match=r"none of the label columns label, category"):
        read_labelled(nolabel)
    jl = _write(tmp_path / "x.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(InputError, match=r"x\.jsonl:2"):
        read_labelled(jl)
