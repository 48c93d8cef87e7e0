"""OpenVINO static int8 (NNCF) and bf16 on the tiny random model: the cache, the calibration, the
precision reported, and ``auto``'s measured choice (with stand-in backends, so it is exact)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import distilmarco.backends as backends
from distilmarco import Encoder
from distilmarco.backends import auto, create_backend
from distilmarco.backends.openvino_backend import OpenVinoBackend
from distilmarco.backends.static_int8 import (
    DEFAULT_CALIBRATION,
    calibration_fingerprint,
    default_calibration_texts,
    static_int8_model,
)
from distilmarco.errors import BackendError, InputError
from distilmarco.model.st_format import SentenceModelSpec
from distilmarco.tokenizer import Tokenizer

pytest.importorskip("nncf")
CALIBRATION = [f"calibration sentence number {i} about {w}" for i, w in enumerate("abcdefghij")]


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.fixture(scope="module")
def tiny_spec(tiny_model_dir: Path) -> SentenceModelSpec:
    return SentenceModelSpec.from_folder(tiny_model_dir)


@pytest.fixture(scope="module")
def int8_cache(tiny_spec: SentenceModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One static int8 model of the tiny model, calibrated on ``CALIBRATION``."""
    cache = tmp_path_factory.mktemp("ov")
    static_int8_model(tiny_spec, CALIBRATION, cache)
    return cache


def test_default_calibration_is_fixed_mixed_length_prose(tiny_model_dir: Path) -> None:
    texts = default_calibration_texts()
    assert len(texts) == DEFAULT_CALIBRATION == 300
    assert texts == default_calibration_texts()  # the same texts, so the same cache key
    tok = Tokenizer.from_folder(tiny_model_dir, 512, True)
    lengths = tok.encode(texts).lengths
    assert (lengths < 48).mean() > 0.3 and (lengths > 100).mean() > 0.3 and lengths.max() > 300
    assert all(t == " ".join(t.split()) and t for t in texts)


def test_fingerprint_tells_calibration_sets_apart() -> None:
    assert calibration_fingerprint(["ab", "c"]) != calibration_fingerprint(["a", "bc"])
    assert calibration_fingerprint(CALIBRATION) == calibration_fingerprint(list(CALIBRATION))
    assert calibration_fingerprint(CALIBRATION) != calibration_fingerprint(CALIBRATION[::-1])


@pytest.mark.parametrize(
    ("calibration", "needle"),
    [
        ("one string", "sequence of strings, got str"),
        (["fine"] * 7, "has 7 text(s); static int8 needs at least 8"),
        (["fine"] * 8 + [""], "calibration text 8 is ''"),
        (["fine"] * 8 + [None], "calibration text 8 is None"),
    ],
)
def test_bad_calibration_is_named(
    tiny_spec: SentenceModelSpec, tmp_path: Path, calibration: object, needle: str
) -> None:
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        create_backend(tiny_spec, "openvino", "int8", calibration=calibration, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert not list(tmp_path.rglob("*.xml"))


@pytest.mark.parametrize(("backend", "precision"), [("openvino", "fp32"), ("onnx", "int8")])
def test_calibration_only_for_openvino_int8(
    tiny_spec: SentenceModelSpec, tmp_path: Path, backend: str, precision: str
) -> None:
    with pytest.raises(InputError, match="precision 'int8' on the openvino backend"):
        create_backend(tiny_spec, backend, precision, calibration=CALIBRATION, cache_dir=tmp_path)


@pytest.mark.slow
def test_static_int8_runs_quantised_and_stays_close(
    tiny_model_dir: Path, tiny_spec: SentenceModelSpec, int8_cache: Path
) -> None:
    import openvino as ov

    backend = create_backend(
        tiny_spec, "openvino", "int8", cache_dir=int8_cache, calibration=CALIBRATION
    )
    assert isinstance(backend, OpenVinoBackend)
    assert (backend.name, backend.precision, backend.path.suffix) == ("openvino", "int8", ".xml")
    ops = {op.get_type_name() for op in ov.Core().read_model(backend.path).get_ops()}
    assert "FakeQuantize" in ops  # static scales: the form OpenVINO's int8 kernels run
    fp32 = create_backend(tiny_spec, "openvino", "fp32", cache_dir=int8_cache)
    enc = Encoder(tiny_model_dir)
    tok = enc.tokenizer.encode(CALIBRATION)
    width = int(tok.lengths.max())
    ids = np.zeros((len(tok.ids), width), np.int64)
    mask = np.zeros_like(ids)
    for r, row in enumerate(tok.ids):
        ids[r, : len(row)], mask[r, : len(row)] = row, 1
    a, b = backend.embed(ids, mask), fp32.embed(ids, mask)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_static_int8_cache_is_keyed_and_validated(
    tiny_spec: SentenceModelSpec, int8_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "c"
    shutil.copytree(int8_cache, cache)
    first = static_int8_model(tiny_spec, CALIBRATION, cache)
    manifest = json.loads((first.parent / "manifest.json").read_text())
    assert manifest["calibration"] == calibration_fingerprint(CALIBRATION)
    assert manifest["calibration_texts"] == len(CALIBRATION)
    assert first.parent.name == f"openvino-int8-{manifest['calibration'][:16]}"
    import distilmarco.backends.static_int8 as static

    calls: list[int] = []
    real = static.quantize
    monkeypatch.setattr(static, "quantize", lambda *a: calls.append(1) or real(*a))
    assert static_int8_model(tiny_spec, CALIBRATION, cache) == first and not calls  # reused
    other = static_int8_model(tiny_spec, CALIBRATION[1:], cache)  # other texts: own folder
    assert other != first and other.parent.parent == first.parent.parent and len(calls) == 1
    data = bytearray((first.parent / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (first.parent / "model.bin").write_bytes(bytes(data))  # same size, wrong content
    assert static_int8_model(tiny_spec, CALIBRATION, cache) == first and len(calls) == 2
    leftovers = [p.name for p in first.parent.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_bf16_reports_what_the_cpu_runs(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILMARCO_CACHE", str(tmp_path))
    fp32 = Encoder(tiny_model_dir, backend="openvino", precision="fp32")
    assert fp32.backend.runs() == "f32" and fp32.info.precision == "fp32"  # type: ignore[attr-defined]
    bf16 = Encoder(tiny_model_dir, backend="openvino", precision="bf16")
    texts = [f"text {i} " * (1 + i % 9) for i in range(40)]
    a, b = bf16.encode(texts), fp32.encode(texts)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    if cpu_has_bf16():
        assert bf16.info.precision == "bf16" and bf16.backend.runs() == "bf16"  # type: ignore[attr-defined]
        assert cos.min() > 0.99 and not np.allclose(a, b, atol=1e-4)
    else:
        assert bf16.info.precision == "fp32"
        np.testing.assert_allclose(a, b, atol=1e-6)
    # a CPU whose plugin falls back to f32: the backend says fp32, never bf16
    monkeypatch.setattr(OpenVinoBackend, "runs", lambda self: "f32")
    assert Encoder(tiny_model_dir, backend="openvino", precision="bf16").info.precision == "fp32"


# --- auto: measured once, remembered, never another precision -----------------------------------


class Fake:
    def __init__(self, name: str, precision: str, delay: float) -> None:
        self.name, self.precision, self.delay = name, precision, delay
        self.device, self.batch_tokens, self.calls = "cpu", 512, 0

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import time

        self.calls += 1
        time.sleep(self.delay)
        return np.zeros((len(ids), 4), np.float32)


def test_auto_measures_once_then_remembers(tiny_spec: SentenceModelSpec, tmp_path: Path) -> None:
    built: list[str] = []
    delays = {"onnx": 0.004, "openvino": 0.001, "torch": 0.002}

    def build(name: str) -> Fake:
        built.append(name)
        return Fake(name, "fp32", delays[name])

    first = auto.fastest(tiny_spec, "fp32", build, 2, tmp_path)
    assert isinstance(first, Fake) and first.name == "openvino"
    assert built == ["onnx", "openvino", "torch"] and first.calls > 0
    saved = json.loads((tmp_path / auto.CACHE_FILE).read_text())
    (entry,) = saved.values()
    assert entry["backend"] == "openvino" and set(entry["tokens_per_s"]) == set(delays)
    assert (
        entry["tokens_per_s"]["openvino"]
        > entry["tokens_per_s"]["torch"]
        > entry["tokens_per_s"]["onnx"]
    )
    assert entry["cpu"] == auto.cpu_model()
    built.clear()
    again = auto.fastest(tiny_spec, "fp32", build, 2, tmp_path)
    assert isinstance(again, Fake) and again.name == "openvino"
    assert built == ["openvino"] and again.calls == 0  # read, not measured
    # another thread count or precision is another key: measured again
    auto.fastest(tiny_spec, "fp32", build, 1, tmp_path)
    assert len(json.loads((tmp_path / auto.CACHE_FILE).read_text())) == 2


def test_auto_never_picks_another_precision(tiny_spec: SentenceModelSpec, tmp_path: Path) -> None:
    def build(name: str) -> Fake:
        if name == "onnx":
            raise BackendError("not here")
        # this engine runs int8 whatever is asked: never a candidate for fp32
        return Fake(
            name, "int8" if name == "openvino" else "fp32", 0.0 if name == "openvino" else 0.003
        )

    chosen = auto.fastest(tiny_spec, "fp32", build, 2, tmp_path)
    assert isinstance(chosen, Fake) and (chosen.name, chosen.precision) == ("torch", "fp32")
    with pytest.raises(BackendError, match="no backend could run precision 'int8'"):
        auto.fastest(tiny_spec, "int8", lambda n: Fake(n, "fp32", 0.0), 2, tmp_path)
    assert auto.CANDIDATES["fp32"] == ("onnx", "openvino", "torch")
    assert auto.CANDIDATES["int8"] == ("onnx", "openvino")


def test_auto_survives_a_damaged_cache_file(tiny_spec: SentenceModelSpec, tmp_path: Path) -> None:
    (tmp_path / auto.CACHE_FILE).write_text('{"k": {"backend": 3}, ')
    chosen = auto.fastest(tiny_spec, "fp32", lambda n: Fake(n, "fp32", 0.0), 2, tmp_path)
    assert isinstance(chosen, Fake)
    assert len(json.loads((tmp_path / auto.CACHE_FILE).read_text())) == 1


@pytest.mark.slow
def test_auto_on_real_backends_picks_a_measured_one_and_says_so(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILMARCO_CACHE", str(tmp_path))
    monkeypatch.delenv("DISTILMARCO_AUTO", raising=False)
    enc = Encoder(tiny_model_dir, backend="auto", precision="fp32", threads=1)
    (entry,) = json.loads((tmp_path / auto.CACHE_FILE).read_text()).values()
    assert (
        enc.info.backend
        == entry["backend"]
        == max(entry["tokens_per_s"], key=entry["tokens_per_s"].get)
    )
    assert set(entry["tokens_per_s"]) == {"onnx", "openvino", "torch"}
    assert enc.info.precision == "fp32"
    # turned off: the fixed preference, nothing measured
    monkeypatch.setenv("DISTILMARCO_AUTO", "static")
    monkeypatch.setattr(auto, "measure", lambda *a, **k: pytest.fail("measured"))
    assert Encoder(
        tiny_model_dir, backend="auto", threads=1
    ).info.backend == backends.choose_backend("fp32", "cpu")


@pytest.mark.slow
def test_server_info_reports_the_precision_run(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient
    from test_server_support import wait_ready

    from distilmarco.server import ServerSettings, create_app

    monkeypatch.setenv("DISTILMARCO_CACHE", str(tmp_path))
    monkeypatch.setattr(OpenVinoBackend, "runs", lambda self: "f32")  # a CPU without bf16
    enc = Encoder(tiny_model_dir, backend="openvino", precision="bf16", threads=1)
    with TestClient(
        create_app(ServerSettings(warmup=False), enc), base_url="http://127.0.0.1"
    ) as client:
        wait_ready(client.get)
        info = client.get("/info").json()
    assert (info["backend"], info["precision"]) == ("openvino", "fp32")
