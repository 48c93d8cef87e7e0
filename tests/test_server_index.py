"""Search and document routes of the server with an index attached (tiny random model), and the
search page driven in headless Chromium against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_server_support import running, wait_ready, wait_ready_url

from distilmarco.index import Index
from distilmarco.server import ServerSettings, create_app

DOCS = [
    (
        "planes",
        "Planes fly because their wings push air down and the air pushes the wings up.",
        {"topic": "air"},
    ),
    (
        "eggs",
        "Boil an egg for nine minutes for a firm yolk; cool it in cold water.",
        {"topic": "food"},
    ),
    ("cats", "Cats sleep for most of the day and hunt at dusk.", {"topic": "animals"}),
]


@pytest.fixture()
def index(tiny_encoder, tmp_path: Path):  # type: ignore[no-untyped-def]
    idx = Index(tmp_path / "docs.db", encoder=tiny_encoder)
    idx.add([d[0] for d in DOCS], [d[1] for d in DOCS], [d[2] for d in DOCS])
    yield idx
    idx.close()


@pytest.fixture()
def client(tiny_encoder, index):  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(max_inputs=4, max_k=50), tiny_encoder, index)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        wait_ready(c.get)
        yield c


def test_search_matches_library(client, index) -> None:  # type: ignore[no-untyped-def]
    for mode in ("dense", "bm25", "hybrid"):
        r = client.post("/search", json={"query": "why do planes fly", "k": 2, "mode": mode})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mode"] == mode and body["query"] == "why do planes fly"
        want = index.search("why do planes fly", 2, mode=mode)
        assert [h["id"] for h in body["results"]] == [h.id for h in want]
        for got, hit in zip(body["results"], want, strict=True):
            assert got["score"] == pytest.approx(hit.score, abs=1e-6)
            assert (got["passage"], got["start"], got["end"]) == (hit.passage, hit.start, hit.end)
            assert got["metadata"] == hit.metadata
            assert "text" not in got


def test_search_filter_and_full_text(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post(
        "/search",
        json={"query": "animals", "k": 3, "where": {"topic": "food"}, "include_text": True},
    )
    hits = r.json()["results"]
    assert [h["id"] for h in hits] == ["eggs"]
    assert hits[0]["text"] == DOCS[1][1]
    assert hits[0]["text"][hits[0]["start"] : hits[0]["end"]] == hits[0]["passage"]


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"query": ""}, 422),
        ({"query": "x", "k": 0}, 422),
        ({"query": "x", "k": 51}, 422),
        ({"query": "x", "mode": "fuzzy"}, 422),
        ({"query": "x", "where": {"topic": {"$gt": 1}}}, 422),
        ({"query": "x", "where": {"\ud800": 1}}, 422),
        ({"query": "q" * 40000}, 413),
    ],
)
def test_search_errors(client, payload, status) -> None:  # type: ignore[no-untyped-def]
    import json

    r = client.post(
        "/search",
        content=json.dumps(payload, ensure_ascii=True),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "error_type"}


def test_document_routes(client, index) -> None:  # type: ignore[no-untyped-def]
    r = client.put(
        "/documents/notes/1", json={"text": "Trains run on rails.", "metadata": {"n": 1}}
    )
    assert r.status_code == 200 and r.json() == {"ids": ["notes/1"], "count": 1}
    assert index.get("notes/1").text == "Trains run on rails."
    r = client.get("/documents/notes/1")
    assert r.json() == {"id": "notes/1", "text": "Trains run on rails.", "metadata": {"n": 1}}
    r = client.put("/documents/notes/1", json={"text": "Trains run on steel rails."})
    assert r.status_code == 200 and index.get("notes/1").text == "Trains run on steel rails."
    assert client.delete("/documents/notes/1").json() == {"ids": ["notes/1"], "count": 1}
    r = client.get("/documents/notes/1")
    assert r.status_code == 404 and r.json()["error_type"] == "NotFound"
    assert "docs.db" not in r.json()["error"]  # no server paths in answers
    assert client.delete("/documents/notes/1").status_code == 404
    assert client.put("/documents/x", json={"text": "t", "extra": 1}).status_code == 422
    assert client.put("/documents/x", json={"text": "   "}).status_code == 422
    assert index.count() == 3


def test_batch_add_conflict_and_upsert(client, index) -> None:  # type: ignore[no-untyped-def]
    docs = [{"id": "d1", "text": "first"}, {"id": "d2", "text": "second", "metadata": {"a": "b"}}]
    r = client.post("/documents", json={"documents": docs})
    assert r.status_code == 201 and r.json() == {"ids": ["d1", "d2"], "count": 2}
    r = client.post("/documents", json={"documents": [{"id": "d1", "text": "again"}]})
    assert r.status_code == 409 and "d1" in r.json()["error"]
    assert index.get("d1").text == "first"  # nothing written
    r = client.post(
        "/documents", json={"documents": [{"id": "d1", "text": "again"}], "upsert": True}
    )
    assert r.status_code == 201 and index.get("d1").text == "again"
    r = client.post(
        "/documents", json={"documents": [{"id": f"n{i}", "text": "t"} for i in range(5)]}
    )
    assert r.status_code == 413
    r = client.post(
        "/documents", json={"documents": [{"id": "x", "text": "t"}, {"id": "x", "text": "u"}]}
    )
    assert r.status_code == 422
    assert client.get("/info").json()["index"] == {"documents": 5}


def test_search_page_in_chromium(tiny_encoder, index, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian chromium (/usr/bin/chromium) is needed for the search page test")
    from playwright.sync_api import sync_playwright

    app = create_app(ServerSettings(), tiny_encoder, index)
    with running(app) as (url, _), sync_playwright() as pw:
        wait_ready_url(url)
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_function(
                "document.getElementById('model').textContent.includes('3 documents')"
            )
            page.fill("#q", "why do planes fly")
            page.select_option("#mode", "bm25")
            page.click("#go")
            page.wait_for_selector("li.hit")
            hits = page.locator("li.hit")
            assert hits.count() >= 1
            first = hits.first.inner_text()
            assert "planes" in first and "score" in first
            # only the query's words are marked, not the whole passage
            marked = [m.lower() for m in page.locator("li.hit mark").all_inner_texts()]
            assert marked and set(marked) <= {"why", "planes", "plane", "fly"}
            assert "result" in page.inner_text("#status")
            assert "?q=why+do+planes+fly&mode=bm25" in page.url  # a shareable address
            page.goto(url + "/?q=why+do+planes+fly&mode=bm25&k=1")
            page.wait_for_selector("li.hit")  # the address alone runs the search
            assert page.locator("li.hit").count() == 1
            assert page.input_value("#q") == "why do planes fly"
            shot = tmp_path / "search-page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000
            assert errors == []
        finally:
            browser.close()
