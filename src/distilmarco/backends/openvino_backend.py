"""OpenVINO backend: compiles our cached packed ONNX export for the CPU, in fp32 or bf16 (the
plugin's inference precision), or its static int8 form (NNCF, see ``static_int8.py``).

The precision reported is the one the compiled model runs: a CPU without bf16 makes the plugin
run fp32, and the backend then says ``fp32``.

OpenVINO's CPU plugin keeps compiled kernels per input shape, so sequence lengths are padded up
to a multiple of ``BUCKET`` (cheap: the graph is packed, padding only reaches attention) and the
shape cache is capped, keeping memory flat across calls with varying lengths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distilmarco.backends.cpu import default_threads
from distilmarco.backends.export import onnx_model
from distilmarco.errors import BackendError, InputError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)

BUCKET = 16
SHAPE_CACHE = 256
PRECISIONS = ("fp32", "bf16", "int8")
# Our precision names -> the plugin's inference precision hint.
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def _import_ov():  # type: ignore[no-untyped-def]
    try:
        import openvino
    except ImportError as exc:
        raise MissingExtraError("openvino", "openvino", "the 'openvino' backend") from exc
    return openvino


def bucket_width(width: int, bucket: int = BUCKET) -> int:
    """``width`` rounded up to a multiple of ``bucket``."""
    return -(-width // bucket) * bucket


def pad_to(ids: np.ndarray, mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad (B, T) ids (with 0) and mask (with 0) to (B, width)."""
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    pad = ((0, 0), (0, extra))
    return np.pad(ids, pad), np.pad(mask, pad)


class OpenVinoBackend:
    name = "openvino"
    device = "cpu"
    # As fast as any budget measured, and cache-friendly (benchmarks/results/engine-notes.md).
    batch_tokens = 2048

    def __init__(
        self, path: Path, precision: str, threads: int | None = None, max_width: int = 512
    ) -> None:
        ov = _import_ov()
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r} is not one of {PRECISIONS}")
        self.max_width = max_width
        self.path = path
        self.threads = threads or default_threads()
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # Explicit, never the plugin's default (bf16 on CPUs that have it): fp32 means fp32.
            # int8 graphs keep f32 between their quantised matmuls.
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "CPU_RUNTIME_CACHE_CAPACITY": SHAPE_CACHE,
        }
        try:
            model = core.read_model(os.fspath(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses without types
            raise BackendError(f"OpenVINO could not compile {path}: {exc}") from exc
        self.precision = precision
        if precision == "bf16" and self.runs() != "bf16":
            log.warning("OpenVINO runs f32 on this CPU (no native bf16): reporting fp32")
            self.precision = "fp32"
        self.inputs = tuple(p.get_any_name() for p in self.compiled.inputs)
        self.request = self.compiled.create_infer_request()

    @classmethod
    def from_spec(
        cls,
        spec: SentenceModelSpec,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        calibration: Sequence[str] | None = None,
    ) -> OpenVinoBackend:
        """``calibration``: texts for the int8 scales (default: see ``static_int8.py``)."""
        if precision not in PRECISIONS:
            raise InputError(
                f"precision {precision!r} is not available on the openvino backend; "
                f"choose one of {PRECISIONS} (fp16 runs on the torch backend)"
            )
        if device not in ("cpu", "auto"):
            raise InputError(
                f"the openvino backend runs on device 'cpu' only, got {device!r}; "
                "use backend='torch' for GPUs"
            )
        if calibration is not None and precision != "int8":
            raise InputError(f"calibration texts are for precision 'int8', not {precision!r}")
        _import_ov()
        limit = spec.transformer.max_position_embeddings
        if precision == "int8":
            from distilmarco.backends.static_int8 import static_int8_model

            path = static_int8_model(spec, calibration, cache_dir)
        else:
            path = onnx_model(spec, "fp32", cache_dir)
        return cls(path, precision, threads, limit)

    def runs(self) -> str:
        """The plugin's inference precision for this compiled model (``f32``, ``bf16``, ...)."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids, mask = pad_to(input_ids, attention_mask, self._width(input_ids.shape[1]))
        feed = {"input_ids": ids, "attention_mask": mask}
        result = self.request.infer({k: feed[k] for k in self.inputs})
        return np.array(result[self.compiled.outputs[0]], dtype=np.float32)

    def _width(self, width: int) -> int:
        return max(width, min(bucket_width(width), self.max_width))
