"""ONNX and OpenVINO exports of our cross-encoder modules, cached and validated like ``export.py``'s.

    <cache>/exports/<folder name>-cross-<key>/model.onnx          portable: fp32, packed
    <cache>/exports/<folder name>-cross-<key>/model.fused.onnx    fused for ONNX Runtime
    <cache>/exports/<folder name>-cross-<key>/model.fused.int8.onnx  dynamic int8 of the above
    <cache>/exports/<folder name>-cross-<key>/openvino-int8/model.{xml,bin}  NNCF static int8

Inputs: ``input_ids``, ``attention_mask`` and, for BERT, ``token_type_ids`` (all (B, T) int64);
output ``logits`` (B, num_labels) float32 before the score activation. Every file is written to a
temp name, fsynced, renamed, and has a manifest (size, SHA-256) checked before each load; the
torch export runs in a subprocess, as in ``export.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from distilmarco.backends.export import (
    EXPORTER_VERSION,
    FLAVOURS,
    FP32_FFN_OUT_LAYERS,
    OPSET,
    Flavour,
    _quantizer_logs_to_debug,
    cache_root,
    folder_fingerprint,
    fuse_for_onnxruntime,
    is_valid,
    publish,
    temp_beside,
)
from distilmarco.backends.outliers import ffn_output_layer
from distilmarco.errors import BackendError, MissingExtraError
from distilmarco.model.cross_encoder import CrossEncoderSpec
from distilmarco.tokenizer import Tokenizer

log = logging.getLogger(__name__)

OUTPUT_NAME = "logits"
PAIR_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# OpenVINO static int8: calibration pairs and the SmoothQuant strength of ``static_int8.py``.
CALIBRATION_PAIRS = 256
CALIBRATION_BATCH = 16
SMOOTH_QUANT = 0.7
Kind = Literal["fp32", "int8"]
# Bump when the cross-encoder graph changes (on top of ``EXPORTER_VERSION``): old entries are ignored.
CROSS_EXPORTER_VERSION = 2


def cross_export_dir(spec: CrossEncoderSpec, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache folder for this model folder's current files and this exporter."""
    parts = {
        "folder": str(spec.folder.resolve()),
        "files": folder_fingerprint(spec.folder),
        "exporter": EXPORTER_VERSION,
        "opset": OPSET,
        "kind": "cross-encoder",
        "cross_exporter": CROSS_EXPORTER_VERSION,
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.folder.name)[:60] or "model"
    return cache_root(cache_dir) / "exports" / f"{name}-cross-{key}"


def input_names(spec: CrossEncoderSpec) -> tuple[str, ...]:
    return PAIR_INPUTS if spec.token_types else PAIR_INPUTS[:2]


def cross_onnx_model(
    spec: CrossEncoderSpec,
    kind: Kind = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
    flavour: Flavour = "portable",
) -> Path:
    """A valid cached ONNX export of the cross-encoder (int8: the fused graph only)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r} is not one of {FLAVOURS}")
    folder = cross_export_dir(spec, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "model" if flavour == "portable" else "model.fused"
    fp32 = folder / f"{stem}.onnx"
    if not is_valid(fp32):
        log.info("exporting cross-encoder %s to ONNX, %s (once)", spec.folder, flavour)
        tmp = temp_beside(fp32)
        try:
            _export_in_subprocess(spec.folder, tmp, flavour)
            publish(tmp, fp32, "fp32")
        finally:
            tmp.unlink(missing_ok=True)
    if kind == "fp32":
        return fp32
    int8 = folder / f"{stem}.int8.onnx"
    if not is_valid(int8):
        tmp = temp_beside(int8)
        try:
            quantize_dynamic_int8(fp32, tmp)
            publish(tmp, int8, "int8")
        finally:
            tmp.unlink(missing_ok=True)
    return int8


def quantize_dynamic_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 on every linear layer and attention (signed weights, per channel), except
    the FFN output projections of the first ``FP32_FFN_OUT_LAYERS`` layers, whose outlier input
    channels per-tensor activation scales handle worst."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx", "int8 quantisation") from exc
    model = onnx.load(os.fspath(src))
    keep = [
        n.name
        for n in model.graph.node
        if (at := ffn_output_layer(n)) is not None and at < FP32_FFN_OUT_LAYERS
    ]
    with _quantizer_logs_to_debug():
        quantize_dynamic(
            model,
            dst,
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep + [f"{k}_MatMul" for k in keep],
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def openvino_int8_model(
    spec: CrossEncoderSpec, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """``model.xml`` of a valid cached NNCF static int8 model of the portable graph."""
    folder = cross_export_dir(spec, cache_dir) / "openvino-int8"
    xml, weights = folder / "model.xml", folder / "model.bin"
    if is_valid(xml) and is_valid(weights):
        return xml
    src = cross_onnx_model(spec, "fp32", cache_dir, "portable")
    tmp = Path(tempfile.mkdtemp(prefix=".openvino-int8.", dir=src.parent))
    try:
        _quantize_static(spec, src, tmp / "model.xml")
        folder.mkdir(exist_ok=True)
        publish(tmp / "model.bin", weights, "int8")  # the weights first: the xml names them
        publish(tmp / "model.xml", xml, "int8")
    finally:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    return xml


def calibration_pairs(count: int = CALIBRATION_PAIRS) -> tuple[list[str], list[str]]:
    """(queries, passages): the first words of one bundled prose text as the query, another
    whole text as its passage."""
    from distilmarco.backends.static_int8 import default_calibration_texts

    texts = default_calibration_texts(2 * count)
    queries = [" ".join(t.split()[:10]) for t in texts[:count]]
    return queries, texts[count:]


def _quantize_static(spec: CrossEncoderSpec, src: Path, dst: Path) -> None:
    try:
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )
    except ImportError as exc:
        raise MissingExtraError("nncf", "openvino", "OpenVINO static int8") from exc
    from distilmarco.batching import pad_batch

    tokenizer = Tokenizer.from_folder(spec.folder, spec.max_seq_length, spec.do_lower_case)
    names = input_names(spec)
    queries, passages = calibration_pairs()
    batches = []
    for lo in range(0, len(queries), CALIBRATION_BATCH):
        # One query per batch (as in re-ranking); its passages vary in length.
        pairs = tokenizer.encode_pairs(queries[lo], passages[lo : lo + CALIBRATION_BATCH])
        ids, mask = pad_batch(pairs.ids, tokenizer.pad_id)
        types, _ = pad_batch(pairs.type_ids, 0)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        batches.append({k: feed[k] for k in names})
    try:
        model = ov.Core().read_model(os.fspath(src))
        quantized = nncf.quantize(
            model,
            nncf.Dataset(batches),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(batches),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT)
            ),
        )
        ov.save_model(quantized, os.fspath(dst))
    except (RuntimeError, ValueError) as exc:  # NNCF and OpenVINO raise these untyped
        raise BackendError(f"static int8 quantisation of {src} failed: {exc}") from exc


def _export_in_subprocess(folder: Path, out: Path, flavour: Flavour) -> None:
    cmd = [sys.executable, "-m", "distilmarco.backends.cross_export", str(folder), str(out)]
    cmd += ["--flavour", flavour]
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BackendError(f"ONNX export of {folder} failed (exit {proc.returncode}):\n{tail}")


def export_cross_onnx(folder: Path, out: Path, flavour: Flavour = "portable") -> None:
    """Export the cross-encoder in ``folder`` with dynamic batch and length axes: packed
    (``portable``, for OpenVINO) or unpacked with attention written out, then fused for ONNX
    Runtime (``fused``)."""
    try:
        import onnx  # noqa: F401  (the TorchScript exporter needs it)
    except ImportError as exc:
        raise MissingExtraError("onnx", "onnx", "ONNX export") from exc
    import contextlib

    import torch
    from torch import nn

    from distilmarco.model.cross_encoder import load_cross_encoder
    from distilmarco.model.transformer import explicit_attention

    spec = CrossEncoderSpec.from_folder(folder)
    module = load_cross_encoder(spec)
    packed = flavour == "portable"

    class Pairs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            types = inputs[2] if len(inputs) > 2 else None
            return self.module(inputs[0], inputs[1], types, packed=packed)

    names = input_names(spec)
    ids = torch.tensor([[101, 2023, 102, 1037, 102], [101, 7592, 102, 2003, 0]])
    example = (ids, (ids != 0).long(), torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]]))
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic[OUTPUT_NAME] = {0: "batch"}
    raw = out if packed else out.with_name(out.name + ".raw")
    try:
        attention = contextlib.nullcontext() if packed else explicit_attention()
        with torch.inference_mode(), attention:
            torch.onnx.export(
                Pairs().eval(),
                example[: len(names)],
                str(raw),
                input_names=list(names),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
        if not packed:
            tf = spec.transformer
            fuse_for_onnxruntime(raw, out, tf.num_heads, tf.hidden_size)
    finally:
        if raw != out:
            raw.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilmarco.backends.cross_export")
    parser.add_argument("folder", type=Path, help="cross-encoder model folder")
    parser.add_argument("out", type=Path, help="where to write the .onnx file")
    parser.add_argument("--flavour", choices=FLAVOURS, default="portable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    export_cross_onnx(args.folder, args.out, args.flavour)
    return 0


if __name__ == "__main__":
    sys.exit(main())
