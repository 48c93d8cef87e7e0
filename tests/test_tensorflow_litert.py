"""The ``litert`` backend (litert-torch export, ai-edge-litert interpreter) against our torch fp32
vectors on real STS sentences: fp32 parity, int8 closeness and STS quality."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="needs the 'litert' extra (ai-edge-litert)")
pytest.importorskip(
    "litert_torch",
    reason="needs litert-torch: pip install --no-deps 'litert-torch==0.10.*' 'litert-converter==0.5.*'",
)

from distilmarco import Encoder
from distilmarco.backends.export import is_valid
from distilmarco.backends.litert_backend import LiteRTBackend
from distilmarco.backends.litert_export import litert_model, signatures
from distilmarco.model.st_format import SentenceModelSpec

STS_PAIRS = 300
# One worker runs every test that converts all-MiniLM-L6-v2 (these and the README's `export
# --format tflite`) with one export cache, so its fp32 and int8 conversions are each made once.
MINILM_LITERT = pytest.mark.xdist_group("minilm_litert")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def sts_sentences(sts_test: list[tuple[str, str, float]], n: int) -> list[str]:
    return list(dict.fromkeys(s for pair in sts_test for s in pair[:2]))[:n]


def long_texts(sts_test: list[tuple[str, str, float]]) -> list[str]:
    """Texts far over 512 tokens (truncated to the limit) and one just under it."""
    words = " ".join(s for pair in sts_test[:400] for s in pair[:2]).split()
    return [" ".join(words[:2000]), " ".join(words[500:2500]), " ".join(words[:380])]


@pytest.fixture()
def litert_cache(export_cache: Path) -> Path:
    """The session's export cache ($DISTILMARCO_CACHE, conftest.py): a conversion made here or by
    the README's ``export --format tflite`` serves both."""
    assert os.environ["DISTILMARCO_CACHE"] == str(export_cache)
    return export_cache


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def sts_score(encoder: Encoder, pairs: list[tuple[str, str, float]]) -> float:
    left = encoder.encode([p[0] for p in pairs])
    right = encoder.encode([p[1] for p in pairs])
    return spearman(cosines(left, right), np.array([p[2] for p in pairs]))


@pytest.mark.slow
@MINILM_LITERT
def test_litert_fp32_and_int8_on_sts(
    minilm_dir: Path,
    minilm_encoder: Encoder,
    sts_test: list[tuple[str, str, float]],
    litert_cache: Path,
) -> None:
    pairs = sts_test[:STS_PAIRS]
    texts = [s for p in pairs for s in p[:2]]
    reference = minilm_encoder.encode(texts)
    fp32 = Encoder(minilm_dir, backend="litert")
    int8 = Encoder(minilm_dir, backend="litert", precision="int8")
    assert (fp32.info.backend, int8.info.precision) == ("litert", "int8")
    cos32 = cosines(fp32.encode(texts), reference)
    assert cos32.min() >= 0.99999, (cos32.argmin(), cos32.min())
    cos8 = cosines(int8.encode(texts), reference)
    assert cos8.mean() >= 0.995, cos8.mean()
    s32, s8 = sts_score(fp32, pairs), sts_score(int8, pairs)
    assert s32 > 0.75  # all-MiniLM-L6-v2 on STS-B test: about 0.82 on all pairs
    assert abs(s8 - s32) <= 0.01, (s8, s32)


@pytest.mark.slow
def test_litert_full_size_distilbert_with_512_tokens(
    make_model: Callable[..., Path],
    sts_test: list[tuple[str, str, float]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTILMARCO_CACHE", str(tmp_path))
    folder = make_model("full-size-distilbert", full_size=True, max_seq_length=512, layout="st2")
    texts = sts_sentences(sts_test, 300) + long_texts(sts_test)
    reference = Encoder(folder).encode(texts)
    encoder = Encoder(folder, backend="litert")
    cos = cosines(encoder.encode(texts), reference)
    assert cos.min() >= 0.99999, (cos.argmin(), cos.min())
    assert max(encoder.tokenizer.encode(texts).lengths) == 512


def test_signatures_cover_every_length_up_to_the_limit() -> None:
    shapes = signatures(256)
    assert [(s.name, s.batch, s.length) for s in shapes] == [
        ("len32", 64, 32),
        ("len32x1", 1, 32),
        ("len64", 32, 64),
        ("len64x1", 1, 64),
        ("len128", 16, 128),
        ("len128x1", 1, 128),
        ("len256", 8, 256),
        ("len256x1", 1, 256),
    ]
    assert [s.length for s in signatures(384) if s.batch > 1] == [32, 64, 128, 256, 384]
    assert [(s.name, s.batch) for s in signatures(512)][-2:] == [("len512", 4), ("len512x1", 1)]


@pytest.mark.slow
@MINILM_LITERT
def test_litert_cache_reused_and_batches_split_and_padded(
    minilm_dir: Path, minilm_encoder: Encoder, litert_cache: Path
) -> None:
    spec = SentenceModelSpec.from_folder(minilm_dir)
    path = litert_model(spec, "fp32", litert_cache)  # built by the STS test, or here
    assert is_valid(path)
    stamp = path.stat().st_mtime_ns
    assert litert_model(spec, "fp32", litert_cache) == path and path.stat().st_mtime_ns == stamp
    backend = LiteRTBackend.from_spec(spec, cache_dir=litert_cache)
    # 70 texts: more rows than the len32 signature's batch of 64: one batched call, then the
    # 6 rows left one by one through len32x1.
    texts = [f"text number {i} " + "word " * (i % 9) for i in range(70)]
    ids = minilm_encoder.tokenizer.encode(texts).ids
    width = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
    got = backend.embed(input_ids, (input_ids != 0).astype(np.int64))
    assert backend.signature_for(width).name == "len32"
    assert backend.signature_for(33).name == "len64"
    reference = minilm_encoder.encode(texts)
    assert cosines(got, reference).min() >= 0.99999
    one = backend.embed(input_ids[:1, :9], (input_ids[:1, :9] != 0).astype(np.int64))
    assert cosines(one, reference[:1]).min() >= 0.99999


def test_damaged_litert_export_is_not_valid(tmp_path: Path) -> None:
    from distilmarco.backends.export import manifest_path, publish

    tmp = tmp_path / "x.tmp"
    tmp.write_bytes(b"a tflite file")
    path = publish(tmp, tmp_path / "model.tflite", "fp32")
    assert is_valid(path) and manifest_path(path).is_file()
    path.write_bytes(b"a tflite filE")  # same size, other bytes
    assert not is_valid(path)


@pytest.mark.slow
@MINILM_LITERT
def test_cli_export_tflite(minilm_dir: Path, litert_cache: Path, tmp_path: Path) -> None:
    from distilmarco.cli import main

    out = tmp_path / "m.int8.tflite"
    args = ["export", "--format", "tflite", "--precision", "int8", "-m", str(minilm_dir)]
    assert main([*args, "-o", str(out)]) == 0
    cached = litert_model(SentenceModelSpec.from_folder(minilm_dir), "int8", litert_cache)
    assert out.read_bytes() == cached.read_bytes()
    assert main([*args, "-o", str(out)]) == 2  # never overwrites
