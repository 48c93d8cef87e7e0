"""Inference backends: one small Protocol, one factory, no inheritance chain.

A backend runs the whole sentence pipeline (encoder, pooling, heads) on one padded batch:
``embed(input_ids, attention_mask)`` with int64 arrays of shape (B, T) returns float32 (B, D).

| backend  | precisions            | devices         | needs                          |
|----------|-----------------------|-----------------|--------------------------------|
| torch    | fp32, bf16, fp16 (GPU)| cpu, cuda, mps  | (core)                         |
| onnx     | fp32, int8 (dynamic)  | cpu             | ``distilmarco[onnx]``          |
| openvino | fp32, bf16, int8 (static, NNCF) | cpu   | ``distilmarco[onnx,openvino]`` |
| tensorflow | fp32                | cpu             | ``distilmarco[tensorflow]``    |
| litert   | fp32, int8            | cpu             | ``distilmarco[litert]``        |

``auto`` on a GPU is torch; on a CPU it is the fastest engine for the precision, measured on this
machine the first time and remembered (``auto.py``). The chosen backend reports its own ``name``
and the precision it really runs, which ``Encoder.info`` shows.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from typing import Literal, Protocol, get_args

import numpy as np

from distilmarco.errors import BackendError, InputError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "onnx", "openvino", "tensorflow", "litert"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
PRECISIONS: tuple[str, ...] = get_args(Precision)


class Backend(Protocol):
    name: str
    precision: str
    device: str
    # Real tokens per batch this runtime runs fastest at; the encoder's default budget.
    batch_tokens: int

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, T) int64 ids and mask -> (B, D) float32 embeddings."""
        ...


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available() or torch.backends.mps.is_available())


def choose_backend(precision: str, device: str) -> str:
    """The fixed preference ``auto`` falls back to when it does not measure (a GPU, or
    ``DISTILMARCO_AUTO=static``): a backend that is correct for ``precision`` on ``device``.

    GPU (asked for, or ``auto`` with one present): torch. CPU: fp32 and int8 go to ONNX Runtime
    (its fused graph), then OpenVINO, then (fp32 only) torch; bf16 stays on torch. ONNX Runtime
    comes first because it was fast on every CPU measured and fastest for a single query (figures
    in ``benchmarks/results/engine-notes.md``).
    """
    on_gpu = device.split(":")[0] in ("cuda", "mps") or (device == "auto" and _gpu_available())
    if on_gpu or precision in ("bf16", "fp16"):
        return "torch"
    for name, module in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        if _installed(module) and _installed("onnx"):
            return name
    if precision == "int8":
        raise MissingExtraError("onnxruntime", "onnx", "int8 inference on CPU")
    return "torch"


def create_backend(
    spec: SentenceModelSpec,
    name: str = "torch",
    precision: str = "fp32",
    device: str = "cpu",
    *,
    threads: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    calibration: Sequence[str] | None = None,
) -> Backend:
    """Build the backend ``name`` for the model in ``spec``; validates every choice.

    ``threads`` sets the backend's intra-op threads (default: physical cores; torch: as it is);
    ``cache_dir`` is where exports are kept (default ``$DISTILMARCO_CACHE`` or
    ``~/.cache/distilmarco``); ``calibration`` texts set OpenVINO's static int8 scales.
    """
    if name not in BACKENDS:
        raise InputError(f"backend {name!r} is not one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {PRECISIONS}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    if calibration is not None and (precision != "int8" or name not in ("auto", "openvino")):
        raise InputError("calibration texts apply to precision 'int8' on the openvino backend")
    chosen = choose_backend(precision, device) if name == "auto" else name
    if name == "auto" and _measures(precision, device):
        from distilmarco.backends.auto import fastest

        candidates = ("openvino",) if calibration is not None else None
        return fastest(  # type: ignore[return-value]
            spec,
            precision,
            lambda n: _build(spec, n, precision, "cpu", threads, cache_dir, calibration),
            threads,
            cache_dir,
            candidates,
        )
    if name == "auto" and chosen != "torch":
        try:
            return _build(spec, chosen, precision, "cpu", threads, cache_dir)
        except BackendError as exc:
            log.warning("backend %s failed (%s); auto falls back to torch", chosen, exc)
            if precision == "int8":
                raise
            chosen = "torch"
    return _build(spec, chosen, precision, device, threads, cache_dir, calibration)


def _measures(precision: str, device: str) -> bool:
    """Whether ``auto`` measures: CPU, a precision with CPU engines, not turned off."""
    if os.environ.get("DISTILMARCO_AUTO", "measure") == "static" or precision == "fp16":
        return False
    return device == "cpu" or (device == "auto" and not _gpu_available())


def _build(
    spec: SentenceModelSpec,
    name: str,
    precision: str,
    device: str,
    threads: int | None,
    cache_dir: str | os.PathLike[str] | None,
    calibration: Sequence[str] | None = None,
) -> Backend:
    if name == "torch":
        from distilmarco.backends.torch_backend import TorchBackend

        return TorchBackend.from_spec(spec, precision=precision, device=device, threads=threads)
    if name == "onnx":
        from distilmarco.backends.onnx_backend import OnnxBackend

        return OnnxBackend.from_spec(spec, precision, device, threads, cache_dir)
    if name == "tensorflow":
        from distilmarco.backends.tensorflow_backend import TensorFlowBackend

        return TensorFlowBackend.from_spec(spec, precision, device, threads, cache_dir)
    if name == "litert":
        from distilmarco.backends.litert_backend import LiteRTBackend

        return LiteRTBackend.from_spec(spec, precision, device, threads, cache_dir)
    from distilmarco.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend.from_spec(spec, precision, device, threads, cache_dir, calibration)
