"""``Index.search(rerank=...)`` and ``index search --rerank``: the first-stage hits' passages
re-scored by a cross-encoder, checked against sentence-transformers' ``CrossEncoder.predict``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cross_models import build_cross_encoder

from distilmarco import Index
from distilmarco.cli import main
from distilmarco.errors import InputError
from distilmarco.reranker import Reranker

DOCS = {
    "a": "Apples grow on trees in orchards across the valley.",
    "b": "An apple a day keeps the doctor away, people say.",
    "c": "Cherries are small red stone fruits picked in June.",
    "d": "Bananas and cherries make a sweet smoothie.",
    "e": "The durian smells strongly and is banned on some trains.",
    "f": "Orchards need bees to pollinate the apple blossom.",
}
QUERY = "where do apples grow"


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("index-rerank") / "ce", arch="bert")


@pytest.fixture(scope="module")
def index_path(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("index-rerank") / "docs.db"
    with Index(path, tiny_encoder) as index:
        index.add(list(DOCS), list(DOCS.values()))
    return path


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_rerank_rescores_the_first_hits_as_the_cross_encoder_does(  # type: ignore[no-untyped-def]
    index_path: Path, cross_dir: Path, tiny_encoder, mode: str
) -> None:
    from sentence_transformers import CrossEncoder

    with Index(index_path, tiny_encoder) as index:
        first = index.search(QUERY, 4, mode=mode)  # type: ignore[arg-type]
        hits = index.search(QUERY, 3, mode=mode, rerank=cross_dir, rerank_depth=4)  # type: ignore[arg-type]
        again = index.search(QUERY, 3, mode=mode, rerank=Reranker(cross_dir), rerank_depth=4)  # type: ignore[arg-type]
    want = CrossEncoder(str(cross_dir), device="cpu").predict([(QUERY, h.passage) for h in first])
    order = np.argsort(-np.asarray(want), kind="stable")[:3]
    assert [h.id for h in hits] == [first[i].id for i in order]
    np.testing.assert_allclose([h.score for h in hits], np.asarray(want)[order], atol=1e-5)
    by_id = {h.id: h for h in first}
    for hit in hits:  # the passage and its offsets are the first stage's
        kept = by_id[hit.id]
        assert (hit.passage, hit.start, hit.end, hit.metadata) == (
            kept.passage,
            kept.start,
            kept.end,
            kept.metadata,
        )
    assert [(h.id, round(h.score, 5)) for h in again] == [(h.id, round(h.score, 5)) for h in hits]


def test_depth_bounds_what_the_cross_encoder_sees(
    index_path: Path, cross_dir: Path, tiny_encoder
) -> None:  # type: ignore[no-untyped-def]
    with Index(index_path, tiny_encoder) as index:
        first = [h.id for h in index.search(QUERY, 6, mode="dense")]
        for depth in (1, 2, 3):
            hits = index.search(QUERY, 1, mode="dense", rerank=cross_dir, rerank_depth=depth)
            assert len(hits) == 1 and hits[0].id in first[:depth]
        # k above the depth: every one of the k first-stage hits is re-scored and returned
        assert len(index.search(QUERY, 4, mode="dense", rerank=cross_dir, rerank_depth=2)) == 4


def test_bad_rerank_arguments_are_refused(index_path: Path, cross_dir: Path, tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    with Index(index_path, tiny_encoder) as index:
        with pytest.raises(InputError, match="rerank_depth"):
            index.search(QUERY, 3, rerank=cross_dir, rerank_depth=0)
        with pytest.raises(InputError, match="rerank must be"):
            index.search(QUERY, 3, rerank=42)  # type: ignore[arg-type]


def test_cli_search_rerank_prints_what_the_library_returns(  # type: ignore[no-untyped-def]
    index_path: Path, cross_dir: Path, tiny_model_dir: Path, tiny_encoder, capsys
) -> None:
    with Index(index_path, tiny_encoder) as index:
        want = index.search(QUERY, 3, mode="hybrid", rerank=cross_dir, rerank_depth=5)
    code = main(
        ["index", "search", QUERY, "--index", str(index_path), "--mode", "hybrid", "-k", "3",
         "--rerank", str(cross_dir), "--rerank-depth", "5", "--json", "--backend", "torch"]
    )  # fmt: skip
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in got] == [h.id for h in want]
    np.testing.assert_allclose([h["score"] for h in got], [h.score for h in want], atol=1e-5)
