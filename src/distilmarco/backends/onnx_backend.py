"""ONNX Runtime backend: our module exported to ONNX, fp32 or dynamic int8, CPU.

It runs the "fused" export (see ``export.py``): attention, skip + LayerNorm and bias + GELU as
ONNX Runtime's own kernels, int8 attention included; the session optimises the rest at load.
Only the inputs the graph declares are fed. Importing this module does not import torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from distilmarco.backends.cpu import default_threads
from distilmarco.backends.export import ExportKind, onnx_model
from distilmarco.errors import BackendError, InputError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


def _import_ort():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError("onnxruntime", "onnx", "the 'onnx' backend") from exc
    return onnxruntime


def check_precision(backend: str, precision: str, device: str) -> ExportKind:
    if precision not in PRECISIONS:
        raise InputError(
            f"precision {precision!r} is not available on the {backend} backend; "
            f"choose one of {PRECISIONS} (fp16/bf16 run on the torch backend)"
        )
    if device not in ("cpu", "auto"):
        raise InputError(
            f"the {backend} backend runs on device 'cpu' only, got {device!r}; "
            "use backend='torch' for GPUs"
        )
    return "int8" if precision == "int8" else "fp32"


class OnnxBackend:
    name = "onnx"
    device = "cpu"
    # Small batches keep the working set in cache (figures: benchmarks/results/engine-notes.md).
    batch_tokens = 1024

    def __init__(self, path: Path, precision: str, threads: int | None = None) -> None:
        ort = _import_ort()
        self.path = path
        self.precision = precision
        self.threads = threads or default_threads()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # The arena keeps the largest batch's working memory for reuse, so calls do not pay
        # page faults (figures: benchmarks/results/engine-notes.md).
        opts.enable_cpu_mem_arena = True
        try:
            self.session = ort.InferenceSession(
                os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad files
            raise BackendError(f"ONNX Runtime could not load {path}: {exc}") from exc
        self.inputs = tuple(i.name for i in self.session.get_inputs())
        unknown = set(self.inputs) - {"input_ids", "attention_mask"}
        if unknown:
            raise BackendError(f"{path} declares inputs {sorted(unknown)} that we cannot feed")

    @classmethod
    def from_spec(
        cls,
        spec: SentenceModelSpec,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> OnnxBackend:
        kind = check_precision(cls.name, precision, device)
        _import_ort()
        return cls(onnx_model(spec, kind, cache_dir, flavour="fused"), precision, threads)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        out = self.session.run(None, {k: feed[k] for k in self.inputs})[0]
        return np.asarray(out, dtype=np.float32)
