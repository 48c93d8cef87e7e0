"""Encoder behaviour: batching, order, truncation accounting and every kind of bad input."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_sts

from distilmarco import Encoder
from distilmarco.batching import plan_batches
from distilmarco.errors import BackendError, InputError, TruncationError


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    rows = read_sts("test")[:100]
    return [s for a, b, _ in rows for s in (a, b)]


def test_batch_of_one_equals_packed_batches(minilm_encoder: Encoder, sentences: list[str]) -> None:
    texts = sentences[:80]
    packed, stats = minilm_encoder.encode_with_stats(texts, batch_tokens=64 * 64)
    assert stats.batches < len(texts) // 8  # really packed: many rows per batch
    single = np.vstack([minilm_encoder.encode(t) for t in texts])
    assert cosine_rows(packed, single).min() >= 0.99999


def test_order_is_preserved_whatever_the_lengths(
    tiny_encoder: Encoder, sentences: list[str]
) -> None:
    forward = tiny_encoder.encode(sentences)
    backward = tiny_encoder.encode(sentences[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-6)
    # Distinct token sequences give distinct rows, so a mix-up could not go unnoticed.
    distinct = {tuple(ids) for ids in tiny_encoder.tokenizer.encode(sentences).ids}
    assert len({r.tobytes() for r in forward}) == len(distinct) > 150


def test_output_type_and_normalize(tiny_encoder: Encoder) -> None:
    one = tiny_encoder.encode("a single string")
    assert one.shape == (1, tiny_encoder.dimension) and one.dtype == np.float32
    empty = tiny_encoder.encode([])
    assert empty.shape == (0, tiny_encoder.dimension)
    unit = tiny_encoder.encode(["hello there", "general kenobi"], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)


def test_batches_respect_the_token_budget(tiny_encoder: Encoder) -> None:
    seen: list[tuple[int, int]] = []
    embed = tiny_encoder.backend.embed

    def spy(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        seen.append(ids.shape)
        return embed(ids, mask)

    tiny_encoder.backend.embed = spy  # type: ignore[method-assign]
    try:
        texts = [("word " * (i % 100)).strip() for i in range(3000)]
        out, stats = tiny_encoder.encode_with_stats(texts, batch_tokens=1024)
    finally:
        del tiny_encoder.backend.embed
    assert out.shape == (3000, tiny_encoder.dimension)
    assert max(b * t for b, t in seen) <= 1024
    assert stats.padding_fraction < 0.05  # length-sorted batches waste little on padding
    assert stats.tokens == sum(len(t.split()) + 2 for t in texts)


def test_plan_batches_covers_every_row_once() -> None:
    lengths = np.array([5, 300, 17, 17, 512, 2, 90])
    batches = list(plan_batches(lengths, budget=600))
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    assert all(len(b) * lengths[b].max() <= 600 for b in batches)


def test_hundred_thousand_inputs_in_one_call(tiny_encoder: Encoder) -> None:
    texts = [f"item number {i}" for i in range(100_000)]
    out, stats = tiny_encoder.encode_with_stats(texts)
    assert out.shape == (100_000, tiny_encoder.dimension)
    assert stats.texts == 100_000 and np.isfinite(out).all()
    picks = [0, 4242, 99_999]
    np.testing.assert_allclose(
        out[picks], tiny_encoder.encode([texts[i] for i in picks]), atol=1e-5
    )


def test_truncation_is_counted_warned_or_refused(
    tiny_encoder: Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    long = "token " * 500  # the tiny model's limit is 128 tokens
    texts = ["short", long, "also short", long]
    with caplog.at_level(logging.WARNING):
        _, stats = tiny_encoder.encode_with_stats(texts)
    assert stats.truncated == 2
    assert "2 of 4 input(s) were longer than 128 tokens" in caplog.text
    with pytest.raises(TruncationError, match="input 1 is longer than 128 tokens"):
        tiny_encoder.encode(texts, truncation="error")
    with pytest.raises(InputError, match="truncation 'cut'"):
        tiny_encoder.encode(texts, truncation="cut")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["", "   \t\n ", "\x00\x01\x02", "\u200b\u200c\u200d\ufeff", "\U0001f600" * 3]
)
def test_degenerate_strings_embed_like_the_reference(
    tiny_model_dir: Path, tiny_encoder: Encoder, text: str
) -> None:
    from sentence_transformers import SentenceTransformer

    ours = tiny_encoder.encode([text])
    ref = SentenceTransformer(str(tiny_model_dir), device="cpu").encode([text])
    assert np.isfinite(ours).all()
    assert np.abs(ours - ref).max() <= 1e-5


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["ok", None, "ok"], TypeError, "input 1 is NoneType, expected str"),
        (["ok", "ok", 3.5], TypeError, "input 2 is float, expected str"),
        (["ok", b"bytes"], TypeError, "input 1 is bytes, expected str"),
        (None, TypeError, "texts must be a string or an iterable of strings"),
        (b"raw bytes", TypeError, "texts must be a string or an iterable of strings"),
        (["fine", "bad \ud800 text"], InputError, r"input 1 contains a lone surrogate \(U\+D800\)"),
    ],
)
def test_bad_inputs_name_the_offending_item(
    tiny_encoder: Encoder, texts: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tiny_encoder.encode(texts)  # type: ignore[arg-type]


def test_huge_string_without_spaces_is_bounded(tiny_model_dir: Path) -> None:
    """5 MB with no spaces: characters are capped before tokenising; memory stays bounded."""
    script = f"""
import resource, numpy as np
from distilmarco import Encoder
enc = Encoder({str(tiny_model_dir)!r})
enc.encode(["warm up"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out, stats = enc.encode_with_stats(["x" * 5_000_000, "y" * 5_000_000 + " tail"], truncation="count")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(out.shape[0], int(np.isfinite(out).all()), stats.tokens, (after - before) // 1024)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    rows, finite, tokens, grown_mb = map(int, result.stdout.split())
    assert (rows, finite) == (2, 1)
    assert tokens == 3 + 3  # [CLS] [UNK] [SEP] twice: the long word is capped, not expanded
    assert grown_mb < 150


def test_non_finite_output_is_never_returned(tiny_encoder: Encoder) -> None:
    embed = tiny_encoder.backend.embed

    def broken(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = embed(ids, mask)
        out[-1, 0] = np.nan
        return out

    tiny_encoder.backend.embed = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(BackendError, match="non-finite values for 1 input"):
            tiny_encoder.encode(["a", "b"])
    finally:
        del tiny_encoder.backend.embed


def test_invalid_options_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(InputError, match="backend 'jax' is not one of"):
        Encoder(tiny_model_dir, backend="jax")
    with pytest.raises(InputError, match="precision 'fp8' is not one of"):
        Encoder(tiny_model_dir, precision="fp8")
    with pytest.raises(InputError, match="fp16 needs a GPU"):
        Encoder(tiny_model_dir, precision="fp16")
    with pytest.raises(InputError, match="max_seq_length 4096 must be between 2 and 128"):
        Encoder(tiny_model_dir, max_seq_length=4096)
    with pytest.raises(InputError, match="device 'tpu'"):
        Encoder(tiny_model_dir, device="tpu")


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model_dir: Path, tiny_encoder: Encoder) -> None:
    texts = ["the quick brown fox", "jumps over the lazy dog", ""]
    bf16 = Encoder(tiny_model_dir, precision="bf16").encode(texts)
    assert bf16.dtype == np.float32
    assert cosine_rows(bf16, tiny_encoder.encode(texts)).min() > 0.99
