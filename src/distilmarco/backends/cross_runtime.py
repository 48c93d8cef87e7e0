"""Backends that run a cross-encoder on one padded batch of (query, passage) pairs.

``logits(input_ids, attention_mask, token_type_ids)`` with int64 arrays of shape (B, T) returns
float32 (B, num_labels), before the score activation. The same engines and precisions as the
sentence backends (``backends/__init__.py``): torch (fp32, bf16, fp16 on GPU), ONNX Runtime (fp32,
dynamic int8, fused graph), OpenVINO (fp32, bf16, NNCF static int8).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Protocol

import numpy as np

from distilmarco.backends.cpu import default_threads
from distilmarco.errors import BackendError, InputError, MissingExtraError

if TYPE_CHECKING:
    from distilmarco.model.cross_encoder import CrossEncoderSpec

log = logging.getLogger(__name__)

PAIR_BACKENDS = ("auto", "torch", "onnx", "openvino")
_PRECISIONS = {
    "torch": ("fp32", "bf16", "fp16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}


class PairBackend(Protocol):
    name: str
    precision: str
    device: str
    batch_tokens: int

    def logits(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        """(B, T) int64 ids, mask and token types -> (B, num_labels) float32 logits."""
        ...


def create_pair_backend(
    spec: CrossEncoderSpec,
    name: str = "torch",
    precision: str = "fp32",
    device: str = "cpu",
    *,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> PairBackend:
    """Build backend ``name`` for the cross-encoder ``spec``; validates every choice. ``auto``
    is ONNX Runtime on a CPU when installed (torch for bf16/fp16 or a GPU), else torch."""
    if name not in PAIR_BACKENDS:
        raise InputError(f"backend {name!r} is not one of {PAIR_BACKENDS} for re-ranking")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    if name == "auto":
        from distilmarco.backends import choose_backend

        name = choose_backend(precision, device)
    if precision not in _PRECISIONS[name]:
        raise InputError(
            f"precision {precision!r} is not available on the {name} backend; "
            f"choose one of {_PRECISIONS[name]}"
        )
    if name == "torch":
        return TorchPairBackend(spec, precision, device)
    if device not in ("cpu", "auto"):
        raise InputError(f"the {name} backend runs on device 'cpu' only, got {device!r}")
    if name == "onnx":
        from distilmarco.backends.cross_export import cross_onnx_model

        _import("onnxruntime", "onnx")
        path = cross_onnx_model(
            spec, "int8" if precision == "int8" else "fp32", cache_dir, flavour="fused"
        )
        return OnnxPairBackend(path, precision, threads)
    from distilmarco.backends.cross_export import cross_onnx_model, openvino_int8_model

    _import("openvino", "openvino")
    width = spec.transformer.max_position_embeddings
    if precision == "int8":
        return OpenVinoPairBackend(openvino_int8_model(spec, cache_dir), precision, threads, width)
    path = cross_onnx_model(spec, "fp32", cache_dir, flavour="portable")
    return OpenVinoPairBackend(path, precision, threads, width)


def _import(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(module, extra, f"the {module} re-ranking backend")


# Padding share of a batch above which the torch module runs packed: below it, the per-layer
# scatter and gather of packing cost more than the padded tokens' compute.
PACKED_MIN_PADDING = 0.25


class TorchPairBackend:
    """Our module in PyTorch; packed (per-token layers skip padding) when a batch has much
    padding (``PACKED_MIN_PADDING``)."""

    name = "torch"

    def __init__(self, spec: CrossEncoderSpec, precision: str, device: str) -> None:
        import torch

        from distilmarco.backends.torch_backend import (
            CPU_BATCH_TOKENS,
            GPU_BATCH_TOKENS,
            reset_threads_in_forked_children,
            resolve_device,
        )
        from distilmarco.model.cross_encoder import BertCrossEncoder, load_cross_encoder

        self.device = resolve_device(device)
        if precision == "fp16" and self.device == "cpu":
            raise InputError("fp16 needs a GPU; on CPU use fp32, bf16 or the onnx backend's int8")
        reset_threads_in_forked_children()
        self.precision = precision
        self.batch_tokens = CPU_BATCH_TOKENS if self.device == "cpu" else GPU_BATCH_TOKENS
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        module = load_cross_encoder(spec)
        # Only the transformer runs in reduced precision; the heads stay float32.
        module.backbone.to(dtype=dtype)
        if isinstance(module, BertCrossEncoder):
            module.bert.embeddings.to(dtype=dtype)
        self.module = module.to(self.device).eval()
        self.token_types = spec.token_types

    def logits(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        import torch

        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        types = torch.from_numpy(token_type_ids).to(self.device) if self.token_types else None
        packed = 1.0 - float(attention_mask.mean()) > PACKED_MIN_PADDING
        with torch.inference_mode():
            out = self.module(ids, mask, types, packed=packed)
        return out.float().cpu().numpy()


class OnnxPairBackend:
    """ONNX Runtime over the fused export, fp32 or dynamic int8; feeds the inputs it declares."""

    name = "onnx"
    device = "cpu"
    batch_tokens = 1024  # the sentence ONNX backend's measured budget

    def __init__(self, path: os.PathLike[str], precision: str, threads: int | None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise BackendError(f"ONNX Runtime could not load {path}: {exc}") from exc
        self.precision = precision
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def logits(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        feed = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        out = self.session.run(None, {k: feed[k] for k in self.inputs})[0]
        return np.asarray(out, dtype=np.float32)


class OpenVinoPairBackend:
    """OpenVINO over the packed export (fp32, bf16) or its NNCF static int8 form; lengths are
    padded to multiples of 16 so the plugin's per-shape kernel cache stays small."""

    name = "openvino"
    device = "cpu"
    batch_tokens = 2048

    def __init__(
        self, path: os.PathLike[str], precision: str, threads: int | None, max_width: int = 512
    ) -> None:
        import openvino as ov

        from distilmarco.backends.openvino_backend import SHAPE_CACHE

        config = {
            "INFERENCE_NUM_THREADS": threads or default_threads(),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE,
        }
        try:
            self.compiled = ov.Core().compile_model(os.fspath(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses without types
            raise BackendError(f"OpenVINO could not compile {path}: {exc}") from exc
        self.precision = precision
        self.max_width = max_width
        if precision == "bf16":
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            if "bf16" not in str(hint):
                log.warning("OpenVINO runs f32 on this CPU (no native bf16): reporting fp32")
                self.precision = "fp32"
        self.inputs = tuple(p.get_any_name() for p in self.compiled.inputs)
        self.request = self.compiled.create_infer_request()

    def logits(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        from distilmarco.backends.openvino_backend import bucket_width

        extra = min(bucket_width(input_ids.shape[1]), self.max_width) - input_ids.shape[1]
        pad = ((0, 0), (0, max(extra, 0)))
        feed = {
            "input_ids": np.pad(input_ids, pad),
            "attention_mask": np.pad(attention_mask, pad),
            "token_type_ids": np.pad(token_type_ids, pad),
        }
        result = self.request.infer({k: feed[k] for k in self.inputs})
        return np.array(result[self.compiled.outputs[0]], dtype=np.float32)
