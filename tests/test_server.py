"""HTTP server routes through FastAPI's TestClient on the tiny random model: shapes, values
against Encoder.encode, every limit and error case, auth, health, info and metrics."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_server_support import wait_ready

from distilmarco.index.identity import display_name
from distilmarco.server import ServerSettings, create_app

LIMITS = dict(max_inputs=8, max_input_chars=2000, max_body_bytes=20_000)
KEY = "s3cret-key-for-tests"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def client(tiny_encoder):  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(**LIMITS), tiny_encoder)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        wait_ready(c.get)
        yield c


@pytest.fixture(scope="module")
def keyed(tiny_encoder):  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(api_key=KEY, **LIMITS), tiny_encoder)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


TEXTS = [
    "how long does it take to boil an egg",
    "The Manhattan Project was a research effort during World War II.",
    "a",
    "",
]


# --- OpenAI ---------------------------------------------------------------------------------


def test_openai_embeddings_equal_encoder(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "whatever"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    assert body["model"] == display_name(tiny_encoder.model_id)
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert all(d["object"] == "embedding" for d in body["data"])
    got = np.array([d["embedding"] for d in body["data"]])
    want = tiny_encoder.encode(TEXTS)
    assert got.shape == (4, tiny_encoder.dimension)
    assert cosine_rows(got, want).min() >= 0.99999
    # cosine model: OpenAI-style unit vectors
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    tokens = sum(tiny_encoder.tokenizer.count(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_openai_base64_matches_float(client) -> None:  # type: ignore[no-untyped-def]
    floats = client.post("/v1/embeddings", json={"input": TEXTS[:2], "model": "m"}).json()
    b64 = client.post(
        "/v1/embeddings", json={"input": TEXTS[:2], "model": "m", "encoding_format": "base64"}
    ).json()
    for f, b in zip(floats["data"], b64["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(f["embedding"], dtype=np.float32))


def test_openai_single_string_and_dimensions(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    dim = tiny_encoder.dimension
    r = client.post("/v1/embeddings", json={"input": "hello", "model": "m", "dimensions": dim})
    assert r.status_code == 200
    assert len(r.json()["data"]) == 1 and len(r.json()["data"][0]["embedding"]) == dim
    r = client.post("/v1/embeddings", json={"input": "hello", "model": "m", "dimensions": 7})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["param"] == "dimensions" and "7" in err["message"]


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"input": [], "model": "m"}, 422, "input"),
        ({"model": "m"}, 422, "input"),
        ({"input": "x", "model": 7}, 422, "model"),  # optional, but a string when given
        ({"input": [1, 2, 3], "model": "m"}, 422, "input"),
        ({"input": "x", "model": "m", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"input": ["x"] * 9, "model": "m"}, 413, "input"),
        ({"input": ["y" * 2001], "model": "m"}, 413, "input"),
        ({"input": "bad \ud800 text", "model": "m"}, 422, "input"),
    ],
)
def test_openai_errors_have_openai_shape(client, payload, status, param) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps(payload, ensure_ascii=True)  # keeps a lone surrogate as \ud800
    r = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] is not None and err["param"].startswith(param)
    assert err["message"]


def test_invalid_utf8_is_422_and_bad_json_is_400(client) -> None:  # type: ignore[no-untyped-def]
    h = {"content-type": "application/json"}
    r = client.post("/v1/embeddings", content=b'{"input": "caf\xe9", "model": "m"}', headers=h)
    assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"]
    r = client.post("/embed", content=b'{"inputs": "\xff\xfe"}', headers=h)
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"
    r = client.post("/embed", content=b'{"inputs": ', headers=h)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = client.post("/embed", content=b'{"inputs": NaN}', headers=h)
    assert r.status_code == 422


# --- TEI ------------------------------------------------------------------------------------


def test_tei_embed_normalize_and_raw(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    raw = np.array(client.post("/embed", json={"inputs": TEXTS, "normalize": False}).json())
    np.testing.assert_allclose(raw, tiny_encoder.encode(TEXTS), atol=1e-5)
    unit = np.array(client.post("/embed", json={"inputs": TEXTS}).json())
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    one = client.post("/embed", json={"inputs": "just one"}).json()
    assert len(one) == 1 and len(one[0]) == tiny_encoder.dimension


def test_truncation_policy_and_metric(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    long = "word " * 300  # > 128 tokens of the tiny model
    before = _metric(client, "distilmarco_truncated_inputs_total")
    r = client.post("/embed", json={"inputs": [long, "short"], "truncate": False})
    assert r.status_code == 422
    assert "inputs[0]" in r.json()["error"] and "128" in r.json()["error"]
    r = client.post(
        "/embed", json={"inputs": [long, "short"], "truncate": True, "normalize": False}
    )
    assert r.status_code == 200
    want = tiny_encoder.encode([long, "short"], truncation="count")
    assert cosine_rows(np.array(r.json()), want).min() >= 0.99999
    # default policy (server truncates) applies to OpenAI requests
    assert client.post("/v1/embeddings", json={"input": long, "model": "m"}).status_code == 200
    assert _metric(client, "distilmarco_truncated_inputs_total") == before + 2


def test_tei_errors_have_tei_shape(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/embed", json={"inputs": ["x"] * 9})
    assert r.status_code == 413
    assert set(r.json()) == {"error", "error_type"} and "at most 8" in r.json()["error"]
    r = client.post("/embed", json={"inputs": "x", "truncation_direction": "Left"})
    assert r.status_code == 422


def test_similarity_matches_cosine(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    src, others = "planes fly with wings", ["birds fly", "the cat sleeps", "planes fly with wings"]
    r = client.post("/similarity", json={"inputs": {"source_sentence": src, "sentences": others}})
    assert r.status_code == 200
    v = tiny_encoder.encode([src, *others])
    want = cosine_rows(np.repeat(v[:1], 3, axis=0), v[1:])
    np.testing.assert_allclose(r.json(), want, atol=1e-5)
    assert abs(r.json()[2] - 1.0) < 1e-5
    bad = client.post("/similarity", json={"inputs": {"source_sentence": src, "sentences": []}})
    assert bad.status_code == 422


# --- limits ---------------------------------------------------------------------------------


def test_body_size_limit_declared_and_chunked(client) -> None:  # type: ignore[no-untyped-def]
    big = json.dumps({"inputs": ["z" * 1000] * 30}).encode()
    assert len(big) > 20_000
    r = client.post("/embed", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "20000 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while reading
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    r = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/embeddings", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_unknown_route_and_method(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error_type"] == "NotFound"
    r = client.get("/v1/embeddings")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert client.post("/search", json={"query": "x"}).status_code == 404  # no index attached


# --- service routes ---------------------------------------------------------------------------


def test_health_info_page(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["dimension"] == tiny_encoder.dimension == 32
    assert info["max_seq_length"] == 128
    assert info["backend"] == "torch" and info["precision"] == "fp32"
    assert info["similarity"] == "cosine"
    assert info["limits"]["max_inputs"] == 8 and info["limits"]["max_body_bytes"] == 20_000
    assert info["index"] is None
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<input" in page.text


def test_metrics_count_requests_batches_and_errors(client) -> None:  # type: ignore[no-untyped-def]
    before = _metric(
        client, 'distilmarco_http_requests_total{method="POST",route="/embed",status="200"}'
    )
    inputs_before = _metric(client, "distilmarco_inputs_total")
    client.post("/embed", json={"inputs": ["one", "two", "three"]})
    client.post("/embed", json={"inputs": ["x"] * 9})
    text = client.get("/metrics").text
    assert (
        _metric(
            client, 'distilmarco_http_requests_total{method="POST",route="/embed",status="200"}'
        )
        == before + 1
    )
    assert _metric(client, "distilmarco_inputs_total") == inputs_before + 3
    assert 'distilmarco_errors_total{type="413"}' in text
    assert "distilmarco_batch_tokens_bucket" in text
    assert "distilmarco_http_request_duration_seconds_bucket" in text
    assert "distilmarco_queue_depth 0.0" in text
    assert "distilmarco_ready 1.0" in text


def _metric(client, name: str) -> float:  # type: ignore[no-untyped-def]
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- auth -----------------------------------------------------------------------------------


def test_auth_required_when_key_set(keyed) -> None:  # type: ignore[no-untyped-def]
    payload = {"input": "hi", "model": "m"}
    r = keyed.post("/v1/embeddings", json=payload)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["code"] == "invalid_api_key"
    r = keyed.post(
        "/v1/embeddings", json=payload, headers={"Authorization": "Bearer wrong-key-123"}
    )
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    r = keyed.post("/embed", json={"inputs": "hi"}, headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401 and r.json()["error_type"] == "Unauthorized"
    for path in ("/info", "/metrics"):
        assert keyed.get(path).status_code == 401
        assert keyed.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    ok = keyed.post("/v1/embeddings", json=payload, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert keyed.get("/health").status_code in (200, 503)  # open for probes
    assert keyed.get("/").status_code == 200


def test_auth_off_by_default(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/embed", json={"inputs": "hi"}, headers={"Authorization": "Bearer anything"})
    assert r.status_code == 200


def test_cors_off_unless_configured(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    h = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    r = client.options("/embed", headers=h)
    assert "access-control-allow-origin" not in r.headers
    app = create_app(ServerSettings(cors_origins=("https://example.org",)), tiny_encoder)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.options("/embed", headers=h)
        assert r.headers["access-control-allow-origin"] == "https://example.org"


def test_settings_are_validated(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.errors import InputError

    with pytest.raises(InputError, match="max_inputs"):
        create_app(ServerSettings(max_inputs=0), tiny_encoder)
    with pytest.raises(InputError, match="max_queue_tokens"):
        create_app(ServerSettings(max_batch_tokens=1000, max_queue_tokens=10), tiny_encoder)
    with pytest.raises(InputError, match="api_key"):
        create_app(ServerSettings(api_key="short"), tiny_encoder)


def test_stopping_server_answers_503(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    app = create_app(ServerSettings(), tiny_encoder)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        wait_ready(c.get)
        app.state.service.stop()
        r = c.post("/embed", json={"inputs": "late"})
        assert r.status_code == 503 and r.json()["error_type"] == "Unavailable"
        assert int(r.headers["retry-after"]) >= 1
        r = c.post("/v1/embeddings", json={"input": "late", "model": "m"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
        assert c.get("/health").json() == {"status": "stopping"}


def test_non_finite_vectors_never_reach_json(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from test_server_support import EncoderProxy

    class NaNBackend:
        name, precision, device = "torch", "fp32", "cpu"

        def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return np.full((len(ids), 32), np.nan, dtype=np.float32)

    app = create_app(ServerSettings(warmup=False), EncoderProxy(tiny_encoder, NaNBackend()))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        for path, body in (
            ("/embed", {"inputs": "x"}),
            ("/v1/embeddings", {"input": "x", "model": "m"}),
        ):
            r = c.post(path, json=body)
            assert r.status_code == 422  # that input cannot be embedded here: no retry helps
            parsed = json.loads(r.text)  # strict JSON, no NaN token
            assert "non-finite" in json.dumps(parsed)
            assert "NaN" not in r.text


def test_openapi_and_docs(client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get("/openapi.json").json()
    assert {"/v1/embeddings", "/embed", "/similarity", "/health", "/info", "/metrics"} <= set(
        spec["paths"]
    )
    assert client.get("/docs").status_code == 200


def test_a_taken_group_runs_in_the_encoders_batch_budget(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    from distilmarco.backends.torch_backend import CPU_BATCH_TOKENS

    settings = ServerSettings(warmup=False)
    batcher = create_app(settings, tiny_encoder).state.service.batcher
    # up to 16,384 tokens are taken from the queue at once, run 2,048 at a time (torch on CPU)
    assert batcher.max_batch_tokens == settings.max_batch_tokens == 16384
    assert batcher.run_tokens == tiny_encoder.batch_tokens == CPU_BATCH_TOKENS == 2048
