"""Behaviour of the index with the tiny random model: API, chunking, filters, errors, CLI, ingest.

Tests taking ``any_index`` or ``store`` run once on a SQLite file and once on a Milvus collection
(``milvus_fixtures.py``); the others check the SQLite file itself.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from milvus_fixtures import milvus_location, milvus_server, store

from distilmarco.errors import IndexStoreError, InputError, ModelMismatchError, NotFoundError
from distilmarco.index import Index
from distilmarco.index.chunking import ChunkConfig, chunk_spans
from distilmarco.index.model import IndexModel
from distilmarco.index.scoring import reciprocal_rank_fusion
from distilmarco.index.store import APPLICATION_ID, MIGRATIONS

FIXTURES = (
    milvus_location,
    milvus_server,
    store,
)  # pytest finds fixtures by their names in the module

DOCS = {
    "wing": "The wing of an aircraft generates lift as air flows over it.",
    "boat": "A boat floats because the water it displaces weighs as much as the boat.",
    "cat": "Cats purr when they are content, and sometimes when they are hurt.",
    "rocket": "Rockets carry their own oxidiser, so they work in the vacuum of space.",
    "bread": "Bread rises because yeast produces carbon dioxide in the dough.",
}
META = [
    {"lang": "en", "topic": "air", "year": 2001, "ok": True},
    {"lang": "en", "topic": "sea", "year": 2002, "ok": False},
    {"lang": "fr", "topic": "pets", "year": 2001, "ok": True},
    {"lang": "de", "topic": "air", "year": 2003, "ok": True},
    {"lang": "en", "topic": "food", "year": 2004, "ok": None},
]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def index(tmp_path: Path, tiny_encoder) -> Index:  # type: ignore[no-untyped-def]
    ix = Index(tmp_path / "t.db", tiny_encoder)
    ix.add(list(DOCS), list(DOCS.values()), META)
    yield ix
    ix.close()


@pytest.fixture
def any_index(store: str, tiny_encoder) -> Index:  # type: ignore[no-untyped-def]
    """The same five documents in each kind of storage."""
    ix = Index(store, tiny_encoder)
    ix.add(list(DOCS), list(DOCS.values()), META)
    yield ix
    ix.close()


def on_milvus(ix: Index) -> bool:
    return ix.store.location.startswith("milvus://")


def snapshot(ix: Index) -> tuple[int, ...]:
    c = ix.store.counts()
    return (c.seq, c.documents, c.chunks, c.vectors, c.fts)


def test_add_get_count_and_file_format(index: Index) -> None:
    assert index.count() == len(index) == 5
    doc = index.get("boat")
    assert doc.text == DOCS["boat"] and doc.metadata == META[1] and doc.chunks == 1
    assert "cat" in index and "dog" not in index
    assert index.ids() == list(DOCS)
    with pytest.raises(NotFoundError, match="'dog'"):
        index.get("dog")
    raw = sqlite3.connect(index.path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    raw.close()
    stats = index.stats()
    assert (stats.documents, stats.chunks, stats.vectors, stats.fts_rows) == (5, 5, 5, 5)
    assert (stats.dimension, stats.similarity) == (32, "cosine") and stats.seq == 1


def test_dense_scores_are_cosine_of_the_model(any_index: Index, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    query = "why do planes fly"
    hits = any_index.search(query, k=5)
    docs = unit(tiny_encoder.encode(list(DOCS.values())))
    expected = docs @ unit(tiny_encoder.encode([query])[0])
    order = np.argsort(-expected)
    assert [h.id for h in hits] == [list(DOCS)[i] for i in order]
    np.testing.assert_allclose([h.score for h in hits], expected[order], rtol=1e-5, atol=1e-6)
    for h in hits:
        assert (
            h.passage == DOCS[h.id][h.start : h.end] and h.metadata == META[list(DOCS).index(h.id)]
        )
    top = any_index.search(DOCS["cat"], k=1)[0]
    assert top.id == "cat" and top.score == pytest.approx(1.0, abs=1e-5)


def test_where_filters(any_index: Index) -> None:
    assert {h.id for h in any_index.search("anything", 10, where={"lang": "en"})} == {
        "wing",
        "boat",
        "bread",
    }
    assert {h.id for h in any_index.search("x", 10, where={"lang": ["fr", "de"]})} == {
        "cat",
        "rocket",
    }
    assert {h.id for h in any_index.search("x", 10, where={"year": 2001, "ok": True})} == {
        "wing",
        "cat",
    }
    assert {h.id for h in any_index.search("x", 10, where={"ok": False})} == {"boat"}
    assert {h.id for h in any_index.search("x", 10, where={"ok": None})} == {"bread"}
    assert {h.id for h in any_index.search("the", 10, where={"topic": "air"}, mode="bm25")} == {
        "wing",
        "rocket",
    }
    assert any_index.search("x", 10, where={"lang": "xx"}) == []
    known = "" if on_milvus(any_index) else ".*known keys: lang, ok, topic, year"
    with pytest.raises(InputError, match=r"'colour' is not a metadata key" + known):
        any_index.search("x", where={"colour": "red"})
    with pytest.raises(InputError, match="'colour' is not a metadata key"):
        any_index.search("x", where={"colour": "red"}, mode="hybrid")
    tricky = {'a"b\\c': 'x" or doc_id != "', "it's": "l'eau\n\t", "ünï": "😀"}
    any_index.upsert(["tricky"], ["a document with awkward metadata"], [tricky])
    assert [h.id for h in any_index.search("x", 10, where=dict(tricky))] == ["tricky"]
    for key, value in tricky.items():  # each value matches itself only, never more
        assert [h.id for h in any_index.search("x", 10, where={key: value})] == ["tricky"]
        assert any_index.search("x", 10, where={key: value + " "}) == []
    with pytest.raises(InputError, match="dict"):
        any_index.search("x", where={"lang": {"$ne": "en"}})


def test_bm25_and_hybrid(any_index: Index) -> None:
    hits = any_index.search("yeast dough", 3, mode="bm25")
    assert [h.id for h in hits] == ["bread"] and hits[0].score > 0
    assert any_index.search("!!! ???", 3, mode="bm25") == []
    query = "boat water displaces"
    dense = [h.id for h in any_index.search(query, 100)]
    lexical = [h.id for h in any_index.search(query, 100, mode="bm25")]
    fused = any_index.search(query, 3, mode="hybrid")
    expected = sorted(
        {
            i: sum(1 / (60 + r.index(i) + 1) for r in (dense, lexical) if i in r) for i in DOCS
        }.items(),
        key=lambda kv: (-kv[1], kv[0]),
    )[:3]
    assert [h.id for h in fused] == [i for i, _ in expected]
    # Milvus reports float32 scores
    np.testing.assert_allclose([h.score for h in fused], [s for _, s in expected], rtol=1e-6)
    assert {h.id for h in any_index.search(query, 10, mode="hybrid", where={"lang": "en"})} == {
        "wing",
        "boat",
        "bread",
    }
    assert reciprocal_rank_fusion([["a", "b"], ["b"]]) == [("b", 1 / 62 + 1 / 61), ("a", 1 / 61)]


def test_upsert_delete_and_add_conflict(any_index: Index) -> None:
    before = snapshot(any_index)
    with pytest.raises(InputError, match=r"already exist.*'cat'.*upsert"):
        any_index.add(["new", "cat"], ["a new one", "dup"])
    assert snapshot(any_index) == before and "new" not in any_index
    any_index.upsert(
        ["cat", "new"], ["Dogs bark at the postman.", "a new one"], [{"lang": "en"}, None]
    )
    assert any_index.get("cat").text == "Dogs bark at the postman." and any_index.get(
        "cat"
    ).metadata == {"lang": "en"}
    assert (
        any_index.count() == 6 and any_index.search("Dogs bark at the postman.", 1)[0].id == "cat"
    )
    assert any_index.delete(["cat", "nope", "cat"]) == 1
    assert "cat" not in any_index and all(h.id != "cat" for h in any_index.search("cat", 10))
    c = any_index.store.counts()
    assert c.chunks == c.vectors == c.fts == 5 and c.seq == before[0] + 2


def test_vectors_and_search_vector(any_index: Index, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    vecs = any_index.vectors(["rocket", "wing"])
    expected = unit(tiny_encoder.encode([DOCS["rocket"], DOCS["wing"]]))
    np.testing.assert_allclose(vecs, expected, atol=1e-6)
    like = any_index.search_vector(vecs[0], 3, exclude_ids=["rocket"])
    assert "rocket" not in [h.id for h in like] and len(like) == 3
    assert any_index.search_vector(vecs[0], 1)[0].id == "rocket"
    with pytest.raises(NotFoundError):
        any_index.vectors(["rocket", "ghost"])
    ids, everything = any_index.all_vectors()
    assert ids == list(DOCS)
    np.testing.assert_allclose(
        everything, unit(tiny_encoder.encode(list(DOCS.values()))), atol=1e-6
    )
    with pytest.raises(InputError, match="32 finite numbers"):
        any_index.search_vector(np.zeros(5), 3)


def test_long_documents_are_chunked_token_exactly(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    words = [f"w{i % 97}x" for i in range(700)] + ["zanzibar", "marmalade"]
    text = " ".join(words)
    with Index(tmp_path / "long.db", tiny_encoder, chunk_tokens=40, chunk_overlap=8) as ix:
        ix.add(["long"], [text])
        raw = sqlite3.connect(ix.path)
        spans = raw.execute("SELECT start, end FROM chunks ORDER BY ord").fetchall()
        raw.close()
        assert ix.get("long").chunks == len(spans) > 10
        mean = tiny_encoder.encode([text[s:e] for s, e in spans])
        mean = unit(unit(mean).mean(axis=0))
        np.testing.assert_allclose(ix.vectors(["long"])[0], mean, atol=1e-5)
        np.testing.assert_allclose(ix.all_vectors()[1][0], mean, atol=1e-5)
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        tok = tiny_encoder.tokenizer
        for (_, e0), (s1, _) in itertools.pairwise(spans):
            assert s1 < e0  # consecutive chunks overlap: no gap
        counts = tok.count([text[s:e] for s, e in spans])
        assert max(counts) <= 40 + 2  # window + [CLS] + [SEP]
        covered = sum(1 for c in counts) and set()
        for s, e in spans:
            covered |= set(range(s, e))
        assert covered >= {i for i, ch in enumerate(text) if not ch.isspace()}
        hit = ix.search("zanzibar marmalade", 1, mode="bm25")[0]  # past the model's 128-token limit
        assert "zanzibar" in hit.passage and hit.start > 0
        passage = text[spans[7][0] : spans[7][1]]
        dense = ix.search(passage, 1)[0]
        assert (dense.start, dense.end) == spans[7] and dense.score == pytest.approx(1.0, abs=1e-5)


def test_chunk_spans_pure() -> None:
    text = "aa bb cc dd ee ff gg hh"
    offsets = [(i * 3, i * 3 + 2) for i in range(8)]
    assert chunk_spans(offsets, len(text), ChunkConfig(8, 2)) == [(0, len(text))]
    spans = chunk_spans(offsets, len(text), ChunkConfig(4, 1))
    assert spans == [(0, 11), (9, 20), (18, 23)]
    with pytest.raises(InputError, match="between 8 and 126"):
        ChunkConfig.for_model(128, 500, None)
    with pytest.raises(InputError, match="overlap 30"):
        ChunkConfig.for_model(128, 40, 30)


BAD_DOCUMENTS = [
    (["a"], [""], None, "text 0 .* is empty"),
    (["a"], ["   \n"], None, "is empty"),
    (["a", "a"], ["x", "y"], None, "'a' appears more than once"),
    ([1], ["x"], None, "id 0 is int"),
    ([("a",)], ["x"], None, "id 0 is tuple"),
    ([""], ["x"], None, "empty string"),
    (["a"], [b"x"], None, "text 0 .* is bytes"),
    (["a", "b"], ["x"], None, "2 ids but 1 texts"),
    (["a"], ["x"], [{"k": {1, 2}}], "not JSON-serialisable"),
    (["a"], ["x"], [{"k": float("nan")}], "not JSON-serialisable"),
    (["a"], ["x"], [{1: "v"}], "key 1 that is not a string"),
    (["a"], ["x"], ["lang=en"], "must be a dict"),
    (["a"], ["x"], [{"k": object()}], "not JSON-serialisable"),
    ("abc", ["x"], None, "ids must be a list"),
    (["a"], ["x\ud800"], None, "lone surrogate"),
]


@pytest.mark.parametrize(("ids", "texts", "meta", "message"), BAD_DOCUMENTS)
def test_bad_documents_store_nothing(index: Index, ids, texts, meta, message) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(index)
    with pytest.raises(InputError, match=message):
        index.upsert(ids, texts, meta)
    assert snapshot(index) == before


def test_bad_documents_store_nothing_in_either_store(any_index: Index) -> None:
    before = snapshot(any_index)
    for ids, texts, meta, message in BAD_DOCUMENTS:
        with pytest.raises(InputError, match=message):
            any_index.upsert(ids, texts, meta)
    assert snapshot(any_index) == before


def test_bad_queries(any_index: Index) -> None:
    for kwargs, message in [
        ({"k": 0}, "k must be a positive integer"),
        ({"k": "3"}, "k must be"),
        ({"mode": "fuzzy"}, "mode 'fuzzy' is not one of dense, bm25, hybrid"),
    ]:
        with pytest.raises(InputError, match=message):
            any_index.search("x", **kwargs)
    with pytest.raises(InputError, match="non-empty"):
        any_index.search("  ")


def test_files_that_are_not_our_index(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    text = tmp_path / "notes.db"
    text.write_text("just some notes, not a database\n" * 100)
    with pytest.raises(IndexStoreError, match="not a usable distilmarco index"):
        Index(text)
    assert text.read_text().startswith("just some notes")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(IndexStoreError, match="not a distilmarco index"):
        Index(other)
    with pytest.raises(InputError, match="does not exist"):
        Index(tmp_path / "missing.db", create=False)
    with pytest.raises(InputError, match=r"folder .* does not exist"):
        Index(tmp_path / "no" / "such" / "x.db")
    newer = tmp_path / "newer.db"
    Index(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(IndexStoreError, match="schema version 99, newer"):
        Index(newer)


def test_model_mismatch_and_reindex(any_index: Index, make_model) -> None:  # type: ignore[no-untyped-def]
    from distilmarco import Encoder

    other = Encoder(make_model("tiny-other-48", hidden=48, seed=3))
    location = any_index.store.location
    any_index.close()
    with pytest.raises(ModelMismatchError, match=r"dimension '32' .* '48'"):
        Index(location, other)
    reopened = Index(location)  # no model given: the recorded one is loaded when needed
    assert reopened.search(DOCS["rocket"], 1)[0].id == "rocket"
    if on_milvus(reopened):  # a collection's vector field is fixed: no reindex in place
        with pytest.raises(IndexStoreError, match="cannot be re-embedded in place"):
            reopened.reindex(other)
        assert reopened.count() == 5 and reopened.get("cat").metadata == META[2]
        reopened.close()
        return
    assert reopened.reindex(other) == 5
    stats = reopened.stats()
    assert (stats.dimension, stats.documents, stats.chunks, stats.vectors) == (48, 5, 5, 5)
    top = reopened.search(DOCS["bread"], 1)[0]
    assert top.id == "bread" and top.score == pytest.approx(1.0, abs=1e-5)
    assert reopened.get("cat").metadata == META[2]  # metadata survives a reindex
    reopened.close()
    with Index(location, other) as again:
        assert again.vectors(["wing"]).shape == (1, 48)


def test_cli_commands(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.cli import main

    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(DOCS["wing"])
    (folder / "sub" / "b.md").write_text(DOCS["boat"])
    (folder / "c.html").write_text(f"<html><style>p {{}}</style><p>{DOCS['cat']}</p></html>")
    (folder / "t.jsonl").write_text(
        json.dumps({"id": "r1", "text": DOCS["rocket"], "lang": "de"})
        + "\n"
        + json.dumps({"id": "r2", "text": DOCS["bread"], "lang": "en"})
        + "\n"
    )
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    db = str(tmp_path / "cli.db")
    assert (
        main(["index", "add", str(folder), "--index", db, "-m", str(tiny_model_dir), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["files"], report["added"], report["unchanged"]) == (4, 5, 0)
    (folder / "a.txt").write_text(DOCS["wing"] + " Flaps add more lift.")
    assert main(["index", "add", str(folder), "--index", db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["updated"], report["unchanged"]) == (0, 1, 4)
    (folder / "sub" / "b.md").unlink()
    assert main(["index", "add", str(folder), "--index", db, "--sync", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 1

    assert main(["index", "search", DOCS["cat"], "--index", db, "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == str((folder / "c.html").resolve()) and hits[0]["passage"] == DOCS["cat"]
    assert (
        main(
            ["index", "search", "bread", "--index", db, "--mode", "bm25", "-w", "lang=en", "--json"]
        )
        == 0
    )
    assert [h["id"] for h in json.loads(capsys.readouterr().out)] == ["r2"]
    assert main(["index", "search", "lift", "--index", db]) == 0
    assert "a.txt" in capsys.readouterr().out
    rid = "r1"
    assert main(["index", "get", rid, "--index", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["lang"] == "de"
    assert main(["index", "delete", rid, "--index", db]) == 0
    assert "deleted 1 of 1" in capsys.readouterr().out
    assert main(["index", "stats", "--index", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 3
    assert main(["index", "get", rid, "--index", db]) == 1
    assert "no document with id" in capsys.readouterr().err
    assert main(["index", "search", "x", "--index", db, "-w", "nokey=1"]) == 1
    assert "not a metadata key" in capsys.readouterr().err
    assert main(["index", "add", str(tmp_path / "nowhere"), "--index", db]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["index", "search", "x", "--index", str(tmp_path / "none.db")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_optimize_prunes_tombstones_and_old_caches_rebuild(tmp_path: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "prune.db"
    ids = [f"d{i}" for i in range(20)]
    with Index(db, tiny_encoder) as first:
        first.add(ids, [f"document number {i} about topic {i % 4}" for i in range(20)])
        assert len(first.search("topic", 20)) == 20  # its matrix now covers sequence 1
        with Index(db, tiny_encoder) as second:
            assert second.delete(ids[:5]) == 5
            second.upsert(["d7"], ["rewritten document seven"])
            raw = sqlite3.connect(db)
            assert raw.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 6
            second.optimize()
            assert raw.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 0
            assert raw.execute("SELECT pruned, seq FROM state").fetchone() == (3, 3)
            raw.close()
        hits = first.search("topic", 20)  # older than the pruned tombstones: rebuilt, not replayed
        assert sorted(h.id for h in hits) == sorted(ids[5:])
        assert first.store.caches.matrix().live == 15
        assert first.search("rewritten document seven", 1)[0].id == "d7"


def test_float16_matrix_rescores_to_float32_results(index: Index, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    with Index(index.path, tiny_encoder, matrix_dtype="float16") as half:
        for query in ("why do planes fly", DOCS["boat"], "pets"):
            full, rescored = index.search(query, 3), half.search(query, 3)
            assert [h.id for h in rescored] == [h.id for h in full]
            np.testing.assert_allclose(
                [h.score for h in rescored], [h.score for h in full], rtol=1e-6
            )
        assert half.store.caches.matrix().matrix.dtype == np.float16
    with pytest.raises(InputError, match="matrix_dtype 'int4'"):
        Index(index.path, matrix_dtype="int4")  # type: ignore[arg-type]


def test_reindex_refuses_when_the_index_changed_meanwhile(
    index: Index, tiny_encoder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    embed = IndexModel.embed_documents

    def embed_then_someone_writes(self, ids, texts, metas):  # type: ignore[no-untyped-def]
        rows = embed(self, ids, texts, metas)
        if self is index.model:
            with Index(index.path, tiny_encoder) as other:
                other.add(["late"], ["written by another process during the reindex"])
        return rows

    monkeypatch.setattr(IndexModel, "embed_documents", embed_then_someone_writes)
    with pytest.raises(IndexStoreError, match="changed while it was being re-embedded"):
        index.reindex(tiny_encoder)
    monkeypatch.undo()
    c = index.store.counts()
    assert (c.documents, c.chunks, c.vectors, c.fts) == (6, 6, 6, 6)
    assert index.reindex(tiny_encoder) == 6
    assert index.search("written by another process during the reindex", 1)[0].id == "late"


def test_passages_keep_character_offsets_beyond_ascii(store: str, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    text = "Ünïcödé 漢字 テスト emoji 😀 café naïve " * 20 + " zanzibar"
    with Index(store, tiny_encoder, chunk_tokens=8, chunk_overlap=2) as ix:
        ix.add(["u"], [text])
        hits = ix.search("zanzibar", 3, mode="bm25") + ix.search("漢字 テスト 😀", 3)
        hits += ix.search_vector(ix.vectors(["u"])[0], 1, exact=False)
        assert len(hits) == 3
        for hit in hits:
            assert hit.passage == text[hit.start : hit.end] and hit.passage.strip()
        assert "zanzibar" in hits[0].passage
