"""Re-ranking backends against our torch fp32 on a real-ish cross-encoder: all-MiniLM-L6-v2's
pretrained BERT under a random classifier, scoring STS Benchmark sentence pairs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import read_sts
from cross_models import minilm_cross_encoder

from distilmarco.errors import InputError
from distilmarco.reranker import Reranker

QUERIES = 20
PASSAGES_PER_QUERY = 15


@pytest.fixture(scope="module")
def cross_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cross-exports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILMARCO_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def minilm_cross(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return minilm_cross_encoder(tmp_path_factory.mktemp("minilm-cross") / "model")


@pytest.fixture(scope="module")
def sts_pairs() -> tuple[list[str], list[str]]:
    """20 STS sentences as queries, each with 15 other STS sentences as its passages."""
    rows = read_sts("test")[: QUERIES * PASSAGES_PER_QUERY]
    return [a for a, _, _ in rows[::PASSAGES_PER_QUERY]], [b for _, b, _ in rows]


def score_pairs(rr: Reranker, queries: list[str], passages: list[str]) -> np.ndarray:
    """The scores of every query's block of passages, concatenated (300 pairs)."""
    n = PASSAGES_PER_QUERY
    return np.concatenate(
        [rr.score(q, passages[i * n : (i + 1) * n]) for i, q in enumerate(queries)]
    )


@pytest.fixture(scope="module")
def reference(minilm_cross: Path, sts_pairs: tuple[list[str], list[str]]) -> np.ndarray:
    return score_pairs(Reranker(minilm_cross), *sts_pairs)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_fp32_backends_match_torch(
    minilm_cross: Path,
    cross_cache: Path,
    sts_pairs: tuple[list[str], list[str]],
    reference: np.ndarray,
    backend: str,
) -> None:
    rr = Reranker(minilm_cross, backend=backend, threads=1)
    assert rr.backend.name == backend and rr.backend.precision == "fp32"
    out = score_pairs(rr, *sts_pairs)
    assert np.ptp(reference) > 0.2  # the scores vary with the pair
    # The encoder's fp32 contract, for scalar scores: relative error 1e-5 of the score range.
    np.testing.assert_allclose(out, reference, atol=1e-5 * np.abs(reference).max(), rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_keeps_the_order_of_fp32(
    minilm_cross: Path,
    cross_cache: Path,
    sts_pairs: tuple[list[str], list[str]],
    reference: np.ndarray,
    backend: str,
    record_property: Callable[[str, object], None],
) -> None:
    out = score_pairs(Reranker(minilm_cross, backend=backend, precision="int8"), *sts_pairs)
    rho = spearman(out, reference)
    record_property(f"{backend}_int8_spearman", rho)
    assert rho >= 0.95, f"Spearman of {backend} int8 scores to fp32: {rho:.4f}"
    assert np.abs(out - reference).max() > 1e-4  # it really is quantised


def test_batched_scores_equal_one_at_a_time(
    minilm_cross: Path, sts_pairs: tuple[list[str], list[str]]
) -> None:
    """Length-sorted padded batches give each pair the score it gets alone, in input order."""
    queries, passages = sts_pairs
    rr = Reranker(minilm_cross, batch_tokens=512)
    batched = rr.score(queries[0], passages[:40])
    alone = np.array([rr.score(queries[0], [p])[0] for p in passages[:40]])
    assert (np.diff(rr.tokenizer.encode_pairs(queries[0], passages[:40]).lengths) != 0).any()
    np.testing.assert_allclose(batched, alone, atol=2e-5, rtol=0)


def test_bad_backend_choices_are_named(minilm_cross: Path) -> None:
    with pytest.raises(InputError, match="tensorflow"):
        Reranker(minilm_cross, backend="tensorflow")
    with pytest.raises(InputError, match="int8"):
        Reranker(minilm_cross, backend="torch", precision="int8")
    with pytest.raises(InputError, match="fp16"):
        Reranker(minilm_cross, backend="onnx", precision="fp16")
