"""Backends against our torch fp32 on the real all-MiniLM-L6-v2, over STS Benchmark sentences.

The MiniLM export is built once per session into a temp cache; every backend reads it from there.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import read_sts, shared_data

import distilmarco.backends as backends
from distilmarco import Encoder
from distilmarco.backends import choose_backend, create_backend
from distilmarco.backends.torch_backend import TorchBackend
from distilmarco.errors import InputError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec

PARITY_SENTENCES = 400  # the first 400 sentences of STS test (200 pairs)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="session")
def sts_sentences() -> list[str]:
    rows = read_sts("test")
    return [s for a, b, _ in rows[: PARITY_SENTENCES // 2] for s in (a, b)]


@pytest.fixture(scope="session")
def reference(minilm_dir: Path, sts_sentences: list[str]) -> np.ndarray:
    """Our torch fp32, unpacked: the plain padded forward, the path parity-tested against ST."""
    enc = Encoder(minilm_dir)
    enc.backend = TorchBackend.from_spec(enc.spec, packed=False)
    return enc.encode(sts_sentences)


def encoder_for(
    minilm_dir: Path, export_cache: Path, backend: str, precision: str, threads: int = 1
) -> Encoder:
    assert os.environ["DISTILMARCO_CACHE"] == str(export_cache)
    return Encoder(minilm_dir, backend=backend, precision=precision, threads=threads)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "precision"), [("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32")]
)
def test_fp32_matches_torch_on_every_sts_row(
    minilm_dir: Path,
    export_cache: Path,
    sts_sentences: list[str],
    reference: np.ndarray,
    backend: str,
    precision: str,
) -> None:
    enc = encoder_for(minilm_dir, export_cache, backend, precision)
    assert enc.backend.name == backend and enc.backend.precision == precision
    out = enc.encode(sts_sentences)
    assert out.shape == reference.shape == (PARITY_SENTENCES, 384)
    cos = cosines(out, reference)
    assert cos.min() >= 0.99999, f"worst row {int(cos.argmin())}: cosine {cos.min():.7f}"
    np.testing.assert_allclose(out, reference, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_stays_close_to_fp32(
    minilm_dir: Path,
    export_cache: Path,
    sts_sentences: list[str],
    reference: np.ndarray,
    backend: str,
) -> None:
    out = encoder_for(minilm_dir, export_cache, backend, "int8").encode(sts_sentences)
    cos = cosines(out, reference)
    assert cos.mean() >= 0.995, f"mean cosine {cos.mean():.5f}"
    assert cos.min() >= 0.98, f"worst row {int(cos.argmin())}: cosine {cos.min():.5f}"
    assert cos.mean() < 0.99999  # it really is quantised, not the fp32 graph


@pytest.mark.slow
def test_outlier_split_is_exact_in_fp32_and_finds_the_big_channels_of_real_text(
    minilm_dir: Path, export_cache: Path, sts_sentences: list[str]
) -> None:
    import onnx
    import onnxruntime as ort

    from distilmarco.backends.outliers import (
        OUTLIER_CHANNELS,
        channel_peaks,
        ffn_output_projections,
        split_outliers,
    )

    enc = encoder_for(minilm_dir, export_cache, "onnx", "fp32")
    model = onnx.load(str(enc.backend.path))
    inputs = [n.input[0] for n in ffn_output_projections(model)]
    assert len(inputs) == 6  # one per layer
    # the peaks of every channel on real text (STS sentences), not the vocabulary calibration
    real = channel_peaks(model, inputs, sts_sentences, enc.tokenizer)
    fp32_matmuls = split_outliers(model, enc.tokenizer)
    assert len(fp32_matmuls) == 6
    chosen = {
        n.input[0]: numpy_helper_array(model, n.input[1])
        for n in model.graph.node
        if n.name.endswith("/outliers/Gather")
    }
    drops = []
    for tensor, peak in zip(inputs, real, strict=True):
        picked = chosen[tensor]
        assert len(picked) == OUTLIER_CHANNELS
        drops.append(peak.max() / np.delete(peak, picked).max())  # int8 scale: before / after
        if peak.max() > 10 * np.median(peak):  # outliers on real text: the biggest is split off
            assert int(np.argmax(peak)) in picked
    # measured: 4.3 / 3.4 / 2.9 / 2.6 / 1.0 / 1.3 (the last two layers have no outliers)
    assert min(drops[:4]) > 2.4 and max(drops) == drops[0], drops
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    split = Encoder(minilm_dir, backend="onnx", precision="fp32", threads=1)
    split.backend.session = session
    np.testing.assert_allclose(
        split.encode(sts_sentences[:100]), enc.encode(sts_sentences[:100]), atol=1e-5
    )


def numpy_helper_array(model, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    from onnx import numpy_helper

    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def sts_spearman(enc: Encoder, rows: list[tuple[str, str, float]]) -> float:
    from scipy.stats import spearmanr

    unique = sorted({s for a, b, _ in rows for s in (a, b)})
    vectors = enc.encode(unique, normalize=True)
    where = {s: i for i, s in enumerate(unique)}
    a = vectors[[where[r[0]] for r in rows]]
    b = vectors[[where[r[1]] for r in rows]]
    return float(spearmanr((a * b).sum(1), [r[2] for r in rows]).statistic)


@pytest.fixture(scope="session")
def sts_fp32_spearman(minilm_dir: Path, export_cache: Path) -> float:
    return sts_spearman(
        encoder_for(minilm_dir, export_cache, "onnx", "fp32", threads=2), read_sts("test")
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_sts_spearman_within_001_of_fp32(
    minilm_dir: Path, export_cache: Path, sts_fp32_spearman: float, backend: str
) -> None:
    rows = read_sts("test")
    int8 = sts_spearman(encoder_for(minilm_dir, export_cache, backend, "int8", threads=2), rows)
    # all-MiniLM-L6-v2 on STS Benchmark test: 0.8203 published (MTEB)
    assert sts_fp32_spearman == pytest.approx(0.8203, abs=0.002)
    assert abs(int8 - sts_fp32_spearman) <= 0.01, f"fp32 {sts_fp32_spearman:.4f}, int8 {int8:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_cranfield_top10_overlap_with_fp32(
    minilm_dir: Path,
    export_cache: Path,
    backend: str,
    record_property: Callable[[str, object], None],
) -> None:
    """Cranfield titles and queries, exact cosine search: how many of fp32's top 10 int8 keeps."""
    from test_index_cranfield import clean, parse_smart

    folder = shared_data("cranfield")
    docs = [clean(r.get("T", "")) for r in parse_smart(folder / "cran.all.1400")]
    docs = [d for d in docs if d]
    queries = [clean(r["W"]) for r in parse_smart(folder / "cran.qry")]
    tops = []
    for precision in ("fp32", "int8"):
        enc = encoder_for(minilm_dir, export_cache, backend, precision, threads=2)
        d, q = enc.encode(docs, normalize=True), enc.encode(queries, normalize=True)
        tops.append(np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :10])
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*tops, strict=True)]))
    record_property("cranfield_top10_overlap", overlap)
    logging.getLogger(__name__).warning(
        "%s int8 Cranfield top-10 overlap with fp32: %.3f", backend, overlap
    )
    assert len(queries) == 225 and overlap >= 0.85, overlap


@pytest.mark.slow
def test_openvino_bf16_stays_close_and_says_what_it_ran(
    minilm_dir: Path, export_cache: Path, sts_sentences: list[str], reference: np.ndarray
) -> None:
    enc = encoder_for(minilm_dir, export_cache, "openvino", "bf16", threads=2)
    out = enc.encode(sts_sentences)
    cos = cosines(out, reference)
    assert (
        enc.info.precision
        == enc.backend.precision
        == ("bf16" if enc.backend.runs() == "bf16" else "fp32")
    )  # type: ignore[attr-defined]
    assert cos.min() >= 0.998, f"worst row {int(cos.argmin())}: cosine {cos.min():.5f}"
    if enc.info.precision == "bf16":  # really reduced precision: fp32 backends agree to 2e-5
        assert np.abs(out - reference).max() > 1e-4


def test_bf16_on_cpu_stays_close(
    minilm_dir: Path, sts_sentences: list[str], reference: np.ndarray
) -> None:
    enc = Encoder(minilm_dir, precision="bf16")
    out = enc.encode(sts_sentences[:100])
    cos = cosines(out, reference[:100])
    assert cos.min() >= 0.999 and cos.mean() < 0.999999
    assert enc.info.precision == "bf16" and out.dtype == np.float32


@pytest.mark.slow
def test_auto_without_measuring_prefers_onnx_and_says_so(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILMARCO_CACHE", str(tmp_path))
    monkeypatch.setenv("DISTILMARCO_AUTO", "static")
    spec = SentenceModelSpec.from_folder(tiny_model_dir)
    assert choose_backend("fp32", "cpu") == "onnx"
    assert choose_backend("int8", "cpu") == "onnx"
    assert choose_backend("bf16", "cpu") == "torch"
    assert choose_backend("fp16", "cuda") == "torch"
    backend = create_backend(spec, "auto", "fp32", cache_dir=tmp_path)
    assert (backend.name, backend.precision, backend.device) == ("onnx", "fp32", "cpu")
    enc = Encoder(tiny_model_dir, backend="auto", precision="int8")
    assert enc.info.backend == "onnx" and enc.info.precision == "int8"
    # without ONNX Runtime, OpenVINO; without ONNX, torch (fp32) or a clear error (int8)
    for missing, fp32, int8 in (("onnxruntime", "openvino", "openvino"), ("onnx", "torch", None)):
        monkeypatch.setattr(backends, "_installed", lambda module, gone=missing: module != gone)
        assert choose_backend("fp32", "cpu") == fp32
        if int8 is None:
            with pytest.raises(MissingExtraError, match="distilmarco\\[onnx\\]"):
                choose_backend("int8", "cpu")
        else:
            assert choose_backend("int8", "cpu") == int8


@pytest.mark.parametrize(
    ("backend", "precision", "device", "needle"),
    [
        ("onnx", "fp16", "cpu", "choose one of ('fp32', 'int8')"),
        ("openvino", "fp16", "cpu", "choose one of ('fp32', 'bf16', 'int8')"),
        ("onnx", "bf16", "cpu", "choose one of ('fp32', 'int8')"),
        ("onnx", "fp32", "cuda", "device 'cpu' only"),
        ("tensorrt", "fp32", "cpu", "is not one of"),
        ("onnx", "fp8", "cpu", "is not one of"),
        ("torch", "int8", "cpu", "not available on the torch backend"),
    ],
)
def test_bad_choices_are_named(
    tiny_model_dir: Path, backend: str, precision: str, device: str, needle: str
) -> None:
    spec = SentenceModelSpec.from_folder(tiny_model_dir)
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        create_backend(spec, backend, precision, device)


@pytest.mark.parametrize(
    ("backend", "module", "extra"),
    [("openvino", "openvino", "openvino"), ("onnx", "onnxruntime", "onnx")],
)
def test_missing_runtime_names_the_extra(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    module: str,
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    spec = SentenceModelSpec.from_folder(tiny_model_dir)
    with pytest.raises(MissingExtraError, match=rf"pip install 'distilmarco\[{extra}\]'") as err:
        create_backend(spec, backend, "fp32", cache_dir=tmp_path)
    assert err.value.extra == extra
    assert not list(tmp_path.rglob("*.onnx"))  # failed before exporting anything


def test_threads_are_passed_to_the_runtime(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = SentenceModelSpec.from_folder(tiny_model_dir)
    backend = create_backend(spec, "onnx", "fp32", threads=1, cache_dir=tmp_path)
    assert backend.session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]
    with pytest.raises(InputError, match="threads must be an integer >= 1, got 0"):
        create_backend(spec, "onnx", "fp32", threads=0, cache_dir=tmp_path)
