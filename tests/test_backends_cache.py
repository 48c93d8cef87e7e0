"""The export cache: built once, validated on every load, rebuilt when missing or damaged."""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from distilmarco import Encoder
from distilmarco.backends.export import (
    EXPORTER_VERSION,
    export_dir,
    is_valid,
    manifest_path,
    onnx_model,
    quantize_int8,
    sha256_file,
)
from distilmarco.backends.onnx_backend import OnnxBackend
from distilmarco.backends.openvino_backend import bucket_width, pad_to
from distilmarco.model.st_format import SentenceModelSpec
from distilmarco.model.transformer import Packing


@pytest.fixture(scope="module")
def tiny_spec(tiny_model_dir: Path) -> SentenceModelSpec:
    return SentenceModelSpec.from_folder(tiny_model_dir)


@pytest.fixture(scope="module")
def built(tiny_spec: SentenceModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fp32 export of the tiny model; tests copy it instead of exporting again."""
    cache = tmp_path_factory.mktemp("cache")
    onnx_model(tiny_spec, "fp32", cache)
    return cache


@pytest.fixture
def cache(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built cache (same key: the model folder is unchanged)."""
    import shutil

    shutil.copytree(built, tmp_path / "c")
    return tmp_path / "c"


def rebuilt(spec: SentenceModelSpec, cache: Path, damage: Callable[[Path], None]) -> Path:
    path = onnx_model(spec, "fp32", cache)
    before = path.stat().st_mtime_ns
    damage(path)
    assert not is_valid(path)
    again = onnx_model(spec, "fp32", cache)
    assert again == path and is_valid(path)
    assert path.stat().st_mtime_ns != before
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, different content


def drop_manifest(path: Path) -> None:
    manifest_path(path).unlink()


def garble_manifest(path: Path) -> None:
    manifest_path(path).write_text("{not json")


def old_exporter(path: Path) -> None:
    m = json.loads(manifest_path(path).read_text())
    m["exporter"] = EXPORTER_VERSION - 1
    manifest_path(path).write_text(json.dumps(m))


@pytest.mark.parametrize(
    "damage", [truncate, flip_a_byte, drop_manifest, garble_manifest, old_exporter]
)
def test_damage_is_detected(
    tiny_spec: SentenceModelSpec, cache: Path, damage: Callable[[Path], None]
) -> None:
    path = export_dir(tiny_spec, cache) / "model.onnx"
    assert is_valid(path)
    damage(path)
    assert not is_valid(path)


@pytest.mark.parametrize("damage", [truncate, flip_a_byte])
def test_damaged_export_is_rebuilt_not_loaded(
    tiny_spec: SentenceModelSpec, cache: Path, damage: Callable[[Path], None]
) -> None:
    path = rebuilt(tiny_spec, cache, damage)
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["sha256"] == sha256_file(path)
    assert manifest["bytes"] == path.stat().st_size
    OnnxBackend(path, "fp32", threads=1)  # loads
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_valid_export_is_reused(tiny_spec: SentenceModelSpec, cache: Path) -> None:
    path = onnx_model(tiny_spec, "fp32", cache)
    stamp = path.stat().st_mtime_ns
    assert onnx_model(tiny_spec, "fp32", cache) == path
    assert path.stat().st_mtime_ns == stamp


def test_key_follows_the_model_files(tiny_spec: SentenceModelSpec, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_spec.folder, copy)
    spec = SentenceModelSpec.from_folder(copy)
    first = export_dir(spec, tmp_path)
    assert export_dir(spec, tmp_path) == first
    weights = next(copy.rglob("model.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert export_dir(spec, tmp_path) != first
    assert first.parent == tmp_path / "exports"


@pytest.mark.slow
def test_int8_export_and_onnx_encoder_match_torch(
    tiny_model_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILMARCO_CACHE", str(cache))
    texts = ["a", "a longer sentence with more words in it", "mid length text here", ""]
    ref = Encoder(tiny_model_dir).encode(texts)
    out = Encoder(tiny_model_dir, backend="onnx", threads=1).encode(texts)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    q = Encoder(tiny_model_dir, backend="onnx", precision="int8", threads=1)
    folder = export_dir(q.spec, cache)
    assert is_valid(folder / "model.fused.onnx") and is_valid(folder / "model.fused.int8.onnx")
    assert q.encode(texts).shape == ref.shape
    # ONNX Runtime runs the fused graph: its own attention kernels, int8 attention in int8.
    fp32_ops = op_counts(folder / "model.fused.onnx")
    int8_ops = op_counts(folder / "model.fused.int8.onnx")
    layers = q.spec.transformer.num_layers
    assert fp32_ops["Attention"] == layers and fp32_ops["SkipLayerNormalization"] == 2 * layers
    assert int8_ops["QAttention"] == layers and int8_ops["MatMulInteger"] > 0


def op_counts(path: Path) -> collections.Counter[str]:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_packing_round_trip_and_equivalence(tiny_model_dir: Path) -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    p = Packing(mask)
    x = torch.randn(3, 4, 5)
    packed = p.pack(x)
    assert packed.shape == (8, 5)
    back = p.unpack(packed)
    assert torch.equal(back[mask.bool()], x[mask.bool()])
    assert torch.count_nonzero(back[~mask.bool()]) == 0

    from distilmarco.backends.torch_backend import TorchBackend

    spec = SentenceModelSpec.from_folder(tiny_model_dir)
    ids = torch.randint(1000, 2000, (3, 4)) * mask
    with torch.inference_mode():
        plain = TorchBackend.from_spec(spec, packed=False).embed(ids.numpy(), mask.numpy())
        fast = TorchBackend.from_spec(spec, packed=True).embed(ids.numpy(), mask.numpy())
    np.testing.assert_allclose(fast, plain, atol=1e-6)


def test_openvino_buckets_sequence_lengths() -> None:
    assert [bucket_width(w) for w in (1, 16, 17, 100, 512)] == [16, 16, 32, 112, 512]
    ids = np.array([[101, 7, 102]])
    mask = np.ones_like(ids)
    pids, pmask = pad_to(ids, mask, 16)
    assert pids.shape == pmask.shape == (1, 16)
    assert pids[0, :3].tolist() == [101, 7, 102] and pids[0, 3:].sum() == 0
    assert pmask.sum() == 3


def test_batches_cap_padding_for_mixed_lengths() -> None:
    from distilmarco.batching import plan_batches

    lengths = np.array([500, 12, 480, 9, 100, 95, 11, 450, 10, 90])
    batches = list(plan_batches(lengths, budget=16384))
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    for rows in batches:
        real, slots = lengths[rows].sum(), lengths[rows].max() * len(rows)
        assert 1 - real / slots <= 0.2
    # the three documents, the three passages, the four queries
    assert [sorted(lengths[b].tolist()) for b in batches] == [
        [450, 480, 500],
        [90, 95, 100],
        [9, 10, 11, 12],
    ]
    # one budget-sized batch, as before the cap, when padding is allowed
    assert len(list(plan_batches(lengths, budget=16384, max_padding=1.0))) == 1


def test_onnx_export_carries_pooling_modes_dense_and_normalize(
    make_model: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BERT with token types, cls + max + mean pooling, a Dense head and Normalize: all in-graph."""
    folder = make_model(
        "tiny-bert-heads", arch="bert", pooling=("cls", "max", "mean"), dense=24, normalize=True
    )
    monkeypatch.setenv("DISTILMARCO_CACHE", str(tmp_path))
    texts = ["short", "a somewhat longer text, with punctuation!", "", "x " * 60]
    ref = Encoder(folder).encode(texts)
    out = Encoder(folder, backend="onnx", threads=1).encode(texts)
    assert out.shape == ref.shape == (4, 24)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_quantiser_messages_stay_out_of_the_root_logger(
    built: Path, tiny_spec: SentenceModelSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ONNX Runtime's quantiser logs through the root logger (a warning and INFO lines per
    export); they become DEBUG records of ours, and an unconfigured root logger stays so."""
    src = export_dir(tiny_spec, built) / "model.onnx"
    with caplog.at_level(logging.DEBUG):
        quantize_int8(src, tmp_path / "q.onnx")
    assert is_valid(src) and (tmp_path / "q.onnx").stat().st_size > 0
    assert [r.getMessage() for r in caplog.records if r.name == "root"] == []
    ours = [r for r in caplog.records if r.name == "distilmarco.backends.export"]
    assert any(r.levelno == logging.DEBUG and "pre-processing" in r.getMessage() for r in ours)
    code = (
        "import logging, sys; from pathlib import Path;"
        "from distilmarco.backends.export import quantize_int8;"
        "quantize_int8(Path(sys.argv[1]), Path(sys.argv[2]));"
        "print(len(logging.getLogger().handlers))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(src), str(tmp_path / "q2.onnx")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "0"
    assert "WARNING:root" not in proc.stderr and "INFO:root" not in proc.stderr
