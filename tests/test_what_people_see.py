"""What people see (issue 26 item 11): the server answers the README's first curl and serves its
API docs offline; plots show every mode and the differences; clustering reports noise and whole
words; map colours are distinct; classifiers report validation and accuracy, and zero-shot can
say "none of these"; the search page heads hits by title, marks only query words and has a
shareable ?q= address."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from distilmarco.server import ServerSettings, create_app


@pytest.fixture(scope="module")
def client(tiny_encoder):  # type: ignore[no-untyped-def]
    with TestClient(create_app(ServerSettings(), tiny_encoder)) as c:
        yield c


def test_embeddings_request_without_model(client, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    reply = client.post("/v1/embeddings", json={"input": ["how do planes fly?"]})
    assert reply.status_code == 200, reply.text
    got = np.array(reply.json()["data"][0]["embedding"])
    want = tiny_encoder.encode(["how do planes fly?"], normalize=True)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_docs_are_served_from_local_files(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.findall(r"https?://", page.text)  # nothing from a CDN
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text)
    assert len(assets) == 3
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 500
