"""POST /rerank (TEI) and POST /v1/rerank (Cohere / Jina) through FastAPI's TestClient on a tiny
random cross-encoder: values against Reranker.rank, limits, auth and the bad inputs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from cross_models import build_cross_encoder
from fastapi.testclient import TestClient
from test_server_support import wait_ready

from distilmarco.reranker import Reranker
from distilmarco.server import ServerSettings, create_app

LIMITS = dict(max_inputs=8, max_input_chars=2000, max_body_bytes=20_000)
KEY = "s3cret-key-for-tests"
QUERY = "how long does it take to boil an egg"
DOCS = [
    "Boil the egg for nine minutes for a firm yolk.",
    "The Manhattan Project was a research effort during World War II.",
    "eggs",
    "A soft-boiled egg takes about six minutes in boiling water. " * 30,  # truncated
]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    folder = build_cross_encoder(
        tmp_path_factory.mktemp("rerank") / "ce", arch="bert", max_positions=64
    )
    return Reranker(folder)


def _client(tiny_encoder, reranker: Reranker, **settings: object) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(**settings), tiny_encoder, reranker=reranker)  # type: ignore[arg-type]
    with TestClient(app, base_url="http://127.0.0.1") as c:
        wait_ready(c.get)
        yield c


@pytest.fixture(scope="module")
def client(tiny_encoder, reranker: Reranker) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    yield from _client(tiny_encoder, reranker, **LIMITS)


def test_tei_rerank_equals_reranker(client: TestClient, reranker: Reranker) -> None:
    expected = reranker.rank(QUERY, DOCS)
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [b["index"] for b in body] == [e.index for e in expected]
    np.testing.assert_allclose([b["score"] for b in body], [e.score for e in expected], atol=1e-5)
    assert [b["text"] for b in body] == [DOCS[e.index] for e in expected]
    assert all(0.0 <= b["score"] <= 1.0 for b in body)  # sigmoid: one label, no stored activation
    raw = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    logits = {b["index"]: b["score"] for b in raw}
    for b in body:
        assert b["score"] == pytest.approx(1 / (1 + np.exp(-logits[b["index"]])), abs=1e-6)
    assert "text" not in raw[0]


def test_v1_rerank_cohere_shape(client: TestClient, reranker: Reranker) -> None:
    expected = reranker.rank(QUERY, DOCS)
    documents: list[object] = [DOCS[0], {"text": DOCS[1]}, DOCS[2], DOCS[3]]
    r = client.post(
        "/v1/rerank",
        json={
            "model": "rerank-english-v3.0",
            "query": QUERY,
            "documents": documents,
            "top_n": 2,
            "return_documents": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == [e.index for e in expected[:2]]
    np.testing.assert_allclose(
        [x["relevance_score"] for x in body["results"]], [e.score for e in expected[:2]], atol=1e-5
    )
    assert [x["document"]["text"] for x in body["results"]] == [DOCS[e.index] for e in expected[:2]]
    assert body["usage"]["total_tokens"] > 20 and isinstance(body["model"], str)
    plain = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()
    assert len(plain["results"]) == len(DOCS) and "document" not in plain["results"][0]


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/rerank", {"query": QUERY, "documents": []}, 422, "documents"),
        ("/v1/rerank", {"query": QUERY, "documents": ["d"] * 9}, 413, "at most 8"),
        ("/v1/rerank", {"documents": ["d"]}, 422, "query"),
        ("/v1/rerank", {"query": QUERY, "documents": ["d"], "top_n": 0}, 422, "top_n"),
        ("/v1/rerank", {"query": 3, "documents": ["d"]}, 422, "query"),
        ("/v1/rerank", {"query": "q" * 2001, "documents": ["d"]}, 413, "query"),
        ("/rerank", {"query": QUERY, "texts": []}, 422, "texts"),
        ("/rerank", {"query": QUERY, "texts": ["d"] * 9}, 413, "at most 8"),
        ("/rerank", {"texts": ["d"]}, 422, "query"),
        ("/rerank", {"query": QUERY, "texts": DOCS, "truncate": False}, 422, "texts[3]"),
    ],
)
def test_bad_inputs_are_clear_errors(
    client: TestClient, path: str, body: dict[str, object], status: int, needle: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert needle in message, message


def test_body_limit_and_api_key_apply(tiny_encoder, reranker: Reranker) -> None:  # type: ignore[no-untyped-def]
    limits = {**LIMITS, "max_body_bytes": 5000}
    for c in _client(tiny_encoder, reranker, api_key=KEY, **limits):
        body = {"query": QUERY, "texts": ["d"]}
        assert c.post("/rerank", json=body).status_code == 401
        ok = c.post("/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        big = {"query": QUERY, "texts": ["x" * 1900] * 8}
        r = c.post("/rerank", json=big, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 413 and "5000 bytes" in r.json()["error"]


def test_no_rerank_routes_without_a_model(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(**LIMITS), tiny_encoder)  # type: ignore[arg-type]
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.post("/rerank", json={"query": "q", "texts": ["d"]}).status_code == 404
