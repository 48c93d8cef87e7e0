"""Inference backends: one small Protocol, one factory, no inheritance chain.

A backend runs the whole sentence pipeline (encoder, pooling, heads) on one padded batch:
``embed(input_ids, attention_mask)`` with int64 arrays of shape (B, T) returns float32 (B, D).
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

import numpy as np

from distilmarco.errors import InputError
from distilmarco.model.st_format import SentenceModelSpec

BackendName = Literal["auto", "torch", "onnx", "openvino"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
PRECISIONS: tuple[str, ...] = get_args(Precision)


class Backend(Protocol):
    name: str
    precision: str
    device: str

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, T) int64 ids and mask -> (B, D) float32 embeddings."""
        ...


def create_backend(
    spec: SentenceModelSpec, name: str = "torch", precision: str = "fp32", device: str = "cpu"
) -> Backend:
    """Build the backend ``name`` for the model in ``spec``; validates every choice."""
    if name not in BACKENDS:
        raise InputError(f"backend {name!r} is not one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {PRECISIONS}")
    if name in ("auto", "torch"):
        from distilmarco.backends.torch_backend import TorchBackend

        return TorchBackend.from_spec(spec, precision=precision, device=device)
    raise InputError(f"backend {name!r} is not available yet; use 'torch'")
