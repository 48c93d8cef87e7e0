"""The Milvus store: addresses, filter compilation, writes that are safe to retry, ``index push``
from an embeddings folder, and ``index search`` / ``serve`` on a ``milvus://`` index.

Runs against ``milvus-lite server`` on loopback (``milvus_fixtures.py``), or against the real
Milvus that ``DISTILMARCO_MILVUS_URI`` names. The shared behaviour tests (filters, deletes,
hybrid, model mismatch, bad input) run on both stores in ``test_index.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from milvus_fixtures import URI_ENV, milvus_location, milvus_server

from distilmarco.errors import (
    FormatError,
    IndexStoreError,
    InputError,
    MissingExtraError,
    ModelMismatchError,
)
from distilmarco.index import Index
from distilmarco.index.milvus.address import MilvusAddress
from distilmarco.index.milvus.filters import MAX_VALUES, compile_where, literal, quote

pytestmark = pytest.mark.xdist_group("milvus")

FIXTURES = (milvus_location, milvus_server)  # pytest finds fixtures by their names in the module

DOCS = {
    "wing": "The wing of an aircraft generates lift as air flows over it.",
    "boat": "A boat floats because the water it displaces weighs as much as the boat.",
    "cat": "Cats purr when they are content, and sometimes when they are hurt.",
}
LONG = " ".join(f"w{i % 31}q" for i in range(120)) + " zanzibar marmalade"


def test_addresses() -> None:
    a = MilvusAddress.parse("milvus://10.0.0.5:19530/passages")
    assert (a.host, a.port, a.collection, a.uri) == (
        "10.0.0.5",
        19530,
        "passages",
        "http://10.0.0.5:19530",
    )
    assert str(MilvusAddress.parse(Path("milvus://h:1/c"))) == "milvus://h:1/c"  # a Path folds //
    assert MilvusAddress.parse("milvus+https://h.example:443/c").uri == "https://h.example:443"
    for bad, message in [
        ("milvus://host/c", "not a Milvus address"),
        ("milvus://h:19530/", "not a Milvus address"),
        ("milvus://h:19530/a/b", "not a Milvus address"),
        ("milvus://h:19530/1abc", "must start with a letter"),
        ("milvus://h:70000/c", "not a TCP port"),
    ]:
        with pytest.raises(InputError, match=message):
            MilvusAddress.parse(bad)


def test_filters_escape_every_value() -> None:
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert [literal(v) for v in (True, False, 7, -2.5, "x")] == [
        "true",
        "false",
        "7",
        "-2.5",
        '"x"',
    ]
    f = compile_where({"lang": ["en", 'x" or true or "'], "ok": None}, lambda k: True)
    assert (
        f.template
        == '(metadata["lang"] == {p0} or metadata["lang"] == {p1}) and (metadata["ok"] is null)'
    )
    assert f.params == {"p0": "en", "p1": 'x" or true or "'}
    assert f.literal == (
        '(metadata["lang"] == "en" or metadata["lang"] == "x\\" or true or \\"") '
        'and (metadata["ok"] is null)'
    )
    assert f.search_args(True) == {"filter": f.template, "filter_params": f.params}
    assert f.search_args(False) == {"filter": f.literal}
    excluded = compile_where(None, lambda k: True, exclude_docs=("a", 'b"'))
    assert excluded.literal == 'doc_id not in ["a", "b\\""]'
    with pytest.raises(InputError, match="'colour' is not a metadata key"):
        compile_where({"colour": "red"}, lambda k: k != "colour")
    with pytest.raises(InputError, match=f"more than {MAX_VALUES} values"):
        compile_where({"n": list(range(MAX_VALUES + 1))}, lambda k: True)
    with pytest.raises(InputError, match="must be finite"):
        compile_where({"n": float("inf")}, lambda k: True)
    with pytest.raises(InputError, match="use a string, number"):
        compile_where({"n": {"$gt": 1}}, lambda k: True)


def test_without_pymilvus_the_error_names_the_extra(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(MissingExtraError, match=r"distilmarco\[milvus\]"):
        Index("milvus://127.0.0.1:1/c")


def rows_of(location: str, doc_id: str) -> list[str]:
    """The passage keys the collection holds for one document, read with a client of our own."""
    from pymilvus import MilvusClient

    address = MilvusAddress.parse(location)
    client = MilvusClient(uri=address.uri)
    try:
        found = client.query(
            address.collection, filter=f"doc_id == {quote(doc_id)}", output_fields=["id"]
        )
        return sorted(r["id"] for r in found)
    finally:
        client.close()


def test_replacing_a_document_never_leaves_it_missing(
    milvus_location: str, tiny_encoder, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index.milvus.storage import MilvusStorage

    with Index(milvus_location, tiny_encoder, chunk_tokens=16, chunk_overlap=4) as ix:
        ix.add(["long", "wing"], [LONG, DOCS["wing"]], [{"v": 1}, None])
        before = ix.get("long").chunks
        assert before > 3 and len(rows_of(milvus_location, "long")) == before
        seen = []
        delete = MilvusStorage._delete_where

        def look_then_delete(self, doc_ids, extra=""):  # type: ignore[no-untyped-def]
            seen.append((ix.get("long").text, ix.search("short now", 1, where={"v": 2})[0].id))
            delete(self, doc_ids, extra)

        monkeypatch.setattr(MilvusStorage, "_delete_where", look_then_delete)
        ix.upsert(["long"], ["short now"], [{"v": 2}])  # one passage replaces several
        assert seen == [("short now", "long")]  # the new version was there before the old went
        monkeypatch.undo()
        assert rows_of(milvus_location, "long") == ["long#0"]
        assert ix.get("long").chunks == 1 and ix.count() == 2
        assert ix.search("zanzibar marmalade", 5, mode="bm25") == []
        assert [d.id for d in ix.documents()] == ["long", "wing"]  # a replaced one keeps its place
        with pytest.raises(InputError, match="holds 66000 bytes of text; a Milvus text field"):
            ix.add(["huge"], ["é" * 33_000])
        assert ix.count() == 2 and ix.store.sequence() == 2
        with pytest.raises(InputError, match="exact search is not available"):
            ix.search("lift", 1, exact=True)
    with pytest.raises(InputError, match="server chooses"):
        Index(milvus_location, tiny_encoder, ann="never")


def test_retried_writes_never_duplicate(milvus_location: str, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    with Index(milvus_location, tiny_encoder) as ix:
        rows = ix.prepare(list(DOCS), list(DOCS.values()))
        for _ in range(3):  # a client retrying the same write
            assert ix.write(rows, replace=True) == 3
        assert ix.write([rows[0], rows[1], rows[0]], replace=True) == 2  # named twice: once
        c = ix.store.counts()
        assert (c.documents, c.chunks) == (3, 3) and c.seq == 4
        assert sorted(h.id for h in ix.search("boat", 10)) == sorted(DOCS)


def test_unreachable_server_is_named(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from milvus_fixtures import free_port

    with pytest.raises(IndexStoreError, match=r"milvus://127\.0\.0\.1:\d+/c"):
        Index(f"milvus://127.0.0.1:{free_port()}/c", tiny_encoder, busy_timeout=1)


def write_embeddings(
    folder: Path, encoder, docs: dict[str, str], meta_rows: dict[str, dict], *, chunk=None
) -> None:  # type: ignore[no-untyped-def]
    """An embeddings folder exactly as the contract (``embed --ray``) writes it, built here with
    the index's own chunking: two shards, rows shuffled across them."""
    from distilmarco.index.identity import Engine, model_meta
    from distilmarco.index.model import IndexModel

    model = IndexModel(lambda: {}, Engine(), *(chunk or (None, None)))
    model.use(encoder)
    rows = []
    for doc_id, text in docs.items():
        spans = model.spans(text)
        vectors = encoder.encode([text[s:e] for s, e in spans])  # raw, not normalised
        for n, ((s, e), v) in enumerate(zip(spans, vectors, strict=True)):
            rows.append({
                "id": f"{doc_id}#{n}", "doc_id": doc_id, "passage": n, "passages": len(spans),
                "start": s, "end": e, "text": text[s:e], "document": text if n == 0 else None,
                "metadata": json.dumps(meta_rows.get(doc_id, {})), "vector": v.tolist(),
                "tokens": 5, "truncated": False,
            })  # fmt: skip
    order = np.random.default_rng(0).permutation(len(rows))
    rows = [rows[i] for i in order]
    dim = encoder.dimension
    schema = pa.schema([
        ("id", pa.string()), ("doc_id", pa.string()), ("passage", pa.int32()),
        ("passages", pa.int32()), ("start", pa.int32()), ("end", pa.int32()),
        ("text", pa.string()), ("document", pa.string()), ("metadata", pa.string()),
        ("vector", pa.list_(pa.float32(), dim)), ("tokens", pa.int32()), ("truncated", pa.bool_()),
    ])  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    half = len(rows) // 2
    files = []
    for i, part in enumerate((rows[:half], rows[half:])):
        name = f"part-{i}.parquet"
        pq.write_table(pa.Table.from_pylist(part, schema=schema), folder / name)
        files.append({"path": name, "rows": len(part)})
    manifest = {
        "format": "distilmarco-embeddings/1", "model": encoder.model_id, "revision": None,
        "backend": encoder.backend.name, "precision": encoder.backend.precision,
        "dimension": dim, "similarity": encoder.similarity, "normalized": False,
        "model_meta": model.meta() if chunk else model_meta(encoder),
        "chunking": {"window": model.chunking.window, "overlap": model.chunking.overlap} if chunk else None,
        "input": {"path": "docs.jsonl", "fingerprint": "sha256:0", "rows": len(docs)},
        "files": files, "rows": len(rows), "documents": len(docs),
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_push_then_search_and_serve(
    milvus_location: str, tmp_path: Path, tiny_encoder, tiny_model_dir: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from distilmarco.cli import main

    docs = {**DOCS, "long": LONG}
    meta = {"wing": {"lang": "en"}, "cat": {"lang": "fr"}, "long": {"lang": "en"}}
    folder = tmp_path / "vectors"
    write_embeddings(folder, tiny_encoder, docs, meta, chunk=(16, 4))
    for _ in range(2):  # pushing again overwrites the same rows
        assert (
            main(
                [
                    "index",
                    "push",
                    str(folder),
                    "--to",
                    milvus_location,
                    "--json",
                    "--batch-rows",
                    "3",
                ]
            )
            == 0
        )
        report = json.loads(capsys.readouterr().out)
        assert (
            report["documents"] == 4
            and report["rows"] == json.loads((folder / "manifest.json").read_text())["rows"]
        )
    with Index(tmp_path / "local.db", tiny_encoder, chunk_tokens=16, chunk_overlap=4) as local:
        local.add(list(docs), list(docs.values()), [meta.get(i) for i in docs])
        with Index(milvus_location, tiny_encoder) as remote:
            assert remote.count() == 4 and remote.get("long").chunks == local.get("long").chunks > 1
            assert remote.get("cat").metadata == {"lang": "fr"} and remote.get("long").text == LONG
            assert remote.content_hashes(["long"]) == local.content_hashes(["long"])
            for mode in ("dense", "bm25", "hybrid"):
                ours = remote.search("why do boats float on water", 4, mode=mode)
                theirs = local.search("why do boats float on water", 4, mode=mode)
                assert [h.id for h in ours] == [h.id for h in theirs], mode
                assert all(h.passage == docs[h.id][h.start : h.end] for h in ours)
                if mode != "hybrid":  # hybrid shows a passage from either ranking
                    assert [(h.start, h.end) for h in ours] == [(h.start, h.end) for h in theirs]
                if mode == "dense":  # the same vectors, normalised on push: the same cosines
                    np.testing.assert_allclose(
                        [h.score for h in ours], [h.score for h in theirs], atol=1e-5
                    )
    args = ["index", "search", "boats float", "--index", milvus_location, "-m", str(tiny_model_dir)]
    assert main([*args, "--json", "-w", "lang=en"]) == 0
    assert {h["id"] for h in json.loads(capsys.readouterr().out)} == {"wing", "long"}

    assert main(["index", "stats", "--index", milvus_location, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["documents"], stats["dimension"], stats["path"]) == (4, 32, milvus_location)
    assert main(["index", "delete", "cat", "nope", "--index", milvus_location]) == 0
    assert "deleted 1 of 2" in capsys.readouterr().out

    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.setdefault("app", app))
    assert main(["serve", "-m", str(tiny_model_dir), "--index", milvus_location]) == 0
    with TestClient(served["app"], base_url="http://127.0.0.1") as client:
        got = client.post("/search", json={"query": "purring cats", "k": 2, "mode": "hybrid"})
        assert got.status_code == 200, got.text
        assert len(got.json()["results"]) == 2
        put = client.put(
            "/documents/dog", json={"text": "Dogs bark at the postman.", "metadata": {"lang": "en"}}
        )
        assert put.status_code == 200, put.text
        assert client.get("/documents/dog").json()["metadata"] == {"lang": "en"}


def test_push_refuses_bad_folders_before_writing(
    milvus_location: str, tmp_path: Path, tiny_encoder, make_model, capsys
) -> None:  # type: ignore[no-untyped-def]
    from distilmarco import Encoder
    from distilmarco.cli import main
    from distilmarco.index.milvus.push import push

    folder = tmp_path / "v"
    write_embeddings(folder, tiny_encoder, DOCS, {})
    with pytest.raises(InputError, match=r"holds no manifest\.json"):
        push(tmp_path, milvus_location)
    assert main(["index", "push", str(tmp_path), "--to", milvus_location]) == 1
    assert "holds no manifest.json" in capsys.readouterr().err
    assert main(["index", "push", str(folder), "--to", "milvus://nowhere/x"]) == 1
    assert "not a Milvus address" in capsys.readouterr().err
    manifest = json.loads((folder / "manifest.json").read_text())
    for change, error, message in [
        ({"format": "other/9"}, FormatError, "format 'other/9'"),
        ({"rows": 99}, FormatError, "the manifest says 99"),
        (
            {"files": [{"path": "gone.parquet", "rows": 3}]},
            FormatError,
            "'gone.parquet' is missing",
        ),
        ({"files": [{"path": "../x.parquet", "rows": 3}]}, FormatError, "outside"),
        (
            {"dimension": 48, "model_meta": {**manifest["model_meta"], "dimension": "48"}},
            InputError,
            "fixed_size_list<float>\\[48\\]",
        ),
    ]:
        (folder / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(error, match=message):
            push(folder, milvus_location)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        push(folder, milvus_location)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    other = Encoder(make_model("tiny-other-48", hidden=48, seed=3))
    with Index(milvus_location, other) as ix:
        ix.add(["x"], ["another model's document"])
    with pytest.raises(ModelMismatchError, match=r"dimension '48' .* '32'"):
        push(folder, milvus_location)
    with Index(milvus_location) as ix:
        assert ix.ids() == ["x"] and ix.store.counts().chunks == 1


def test_filter_values_travel_as_parameters_where_the_server_takes_them(
    milvus_location: str, tiny_encoder
) -> None:  # type: ignore[no-untyped-def]
    """Milvus 2.5+ gets template parameters; Milvus Lite (no templates) escaped literals. With
    ``DISTILMARCO_MILVUS_URI`` naming a real Milvus this checks the templated path."""
    with Index(milvus_location, tiny_encoder) as ix:
        ix.add(["q", "r"], ["quoted", "plain"], [{"k": 'a"b\\'}, {"k": "ab"}])
        real = bool(os.environ.get(URI_ENV))
        assert ix.store.col.templates() is real  # type: ignore[attr-defined]
        assert [h.id for h in ix.search("x", 3, where={"k": 'a"b\\'})] == ["q"]
        assert [h.id for h in ix.search("x", 3, where={"k": ["ab", "zz"]}, mode="hybrid")] == ["r"]
        odd = 'id "with" \\ quotes, in [brackets]'
        ix.upsert([odd], ["an awkward id"])
        assert ix.get(odd).text == "an awkward id" and ix.vectors([odd]).shape == (1, 32)
        assert ix.search_vector(ix.vectors(["q"])[0], 3, exclude_ids=[odd, "r"])[0].id == "q"
        assert ix.delete([odd, "nope"]) == 1 and ix.count() == 2


def test_pushing_a_newer_folder_removes_surplus_passages(
    milvus_location: str, tmp_path: Path, tiny_encoder
) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.index.milvus.push import push

    write_embeddings(
        tmp_path / "a", tiny_encoder, {"long": LONG, "wing": DOCS["wing"]}, {}, chunk=(16, 4)
    )
    write_embeddings(tmp_path / "b", tiny_encoder, {"long": "short now"}, {}, chunk=(16, 4))
    assert push(tmp_path / "a", milvus_location).documents == 2
    assert len(rows_of(milvus_location, "long")) > 3
    assert push(tmp_path / "b", milvus_location).rows == 1
    assert rows_of(milvus_location, "long") == ["long#0"]
    with Index(milvus_location, tiny_encoder) as ix:
        assert ix.get("long").text == "short now" and ix.count() == 2


def test_cli_add_and_sync_into_a_collection(
    milvus_location: str, tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.cli import main

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text(DOCS["wing"])
    (folder / "b.txt").write_text(DOCS["boat"])
    add = ["index", "add", str(folder), "--index", milvus_location, "--json"]
    assert main([*add, "-m", str(tiny_model_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 2
    (folder / "b.txt").unlink()
    (folder / "a.txt").write_text(DOCS["wing"] + " Flaps add more lift.")
    assert main([*add, "--sync"]) == 0  # the recorded model, only changed content embedded
    report = json.loads(capsys.readouterr().out)
    assert (report["updated"], report["deleted"], report["added"]) == (1, 1, 0)
    with Index(milvus_location) as ix:
        (doc,) = list(ix.documents())
        assert doc.text.endswith("Flaps add more lift.") and doc.id.endswith("a.txt")
