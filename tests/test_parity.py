"""Our encoder against sentence-transformers on the same folders: max |diff| <= 1e-5 per element."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import read_sts

from distilmarco import Encoder

TOL = 1e-5


def varied_sentences(n: int = 320, long_every: int = 40, long_parts: int = 60) -> list[str]:
    """Real STS sentences of all lengths, plus some far longer than any model's limit."""
    rows = read_sts("test") + read_sts("dev")
    sentences = sorted({s for a, b, _ in rows for s in (a, b)}, key=len)
    step = max(1, len(sentences) // n)
    picked = sentences[::step][:n]
    longs = [" ".join(picked[i : i + long_parts]) for i in range(0, n, long_every)]
    return picked + longs + ["", "   ", "A"]


def reference(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    return st.encode(texts, batch_size=16, convert_to_numpy=True)


TINY_MODELS = {
    "distilbert-mean": dict(arch="distilbert", pooling="mean"),
    "bert-cls-normalize": dict(arch="bert", pooling="cls", normalize=True),
    "distilbert-mean-dense": dict(arch="distilbert", pooling="mean", dense=24),
    "distilbert-max-meansqrt": dict(arch="distilbert", pooling=("max", "mean_sqrt_len_tokens")),
}


@pytest.mark.parametrize("layout", ["st2", "st6"])
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_random_models_match_reference(
    make_model: Callable[..., Path], name: str, layout: str
) -> None:
    folder = make_model(f"parity-{name}-{layout}", layout=layout, seed=7, **TINY_MODELS[name])
    texts = varied_sentences()
    ours = Encoder(folder).encode(texts, truncation="count")
    ref = reference(folder, texts)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.slow
def test_full_size_msmarco_architecture_matches_reference(make_model: Callable[..., Path]) -> None:
    folder = make_model("full-size-distilbert", full_size=True, max_seq_length=512, layout="st2")
    enc = Encoder(folder)
    info = enc.info
    assert (info.layers, info.hidden_size, info.attention_heads, info.dimension) == (
        6,
        768,
        12,
        768,
    )
    assert info.max_seq_length == 512 and info.pooling == ("mean",) and info.similarity == "cosine"
    texts = varied_sentences(n=300, long_every=100, long_parts=120)
    ours, stats = enc.encode_with_stats(texts, truncation="count")
    assert stats.truncated >= 3  # the concatenated texts pass 512 tokens
    assert np.abs(ours - reference(folder, texts)).max() <= TOL


def test_real_minilm_matches_reference(minilm_encoder: Encoder, minilm_dir: Path) -> None:
    texts = varied_sentences(long_parts=40)
    ours, stats = minilm_encoder.encode_with_stats(texts, truncation="count")
    assert stats.truncated >= 3  # MiniLM's limit is 256 tokens
    assert np.abs(ours - reference(minilm_dir, texts)).max() <= TOL
