"""The reference backend: our PyTorch module, fp32 on CPU (bf16 where the CPU has it), fp16/bf16
on GPU. By default the encoder runs packed: per-token layers skip padding (see ``Packing``)."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import torch
from torch import nn

from distilmarco.errors import InputError
from distilmarco.model.pooling import pool
from distilmarco.model.sentence import SentenceModule, load_sentence_module
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must be available."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not one of 'auto', 'cpu', 'cuda', 'mps'")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but torch sees no CUDA GPU")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' was asked for but torch sees no Apple GPU")
    return device


class PackedSentence(nn.Module):
    """A ``SentenceModule`` whose encoder skips padding tokens; same inputs and outputs."""

    def __init__(self, module: SentenceModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = self.module
        states = m.encoder(input_ids, attention_mask, packed=True)  # (B, T, H)
        x = pool(states, attention_mask, m.spec.pooling.modes)  # (B, P) float32
        for head in m.heads:
            x = head(x)
        return x


# Real tokens per batch: on CPU small batches keep a layer's activations in cache, GPUs want
# large ones to fill their cores (figures: benchmarks/results/engine-notes.md).
CPU_BATCH_TOKENS = 2048
GPU_BATCH_TOKENS = 16384
_fork_hook = threading.Lock()
_fork_hook_set = False


def _one_thread_after_fork() -> None:
    """In a forked child, torch's OpenMP pool is the parent's and waiting on it hangs forever;
    one thread never touches that pool."""
    torch.set_num_threads(1)


def reset_threads_in_forked_children() -> None:
    """Once per process: children forked after this compute on one thread instead of hanging."""
    global _fork_hook_set
    with _fork_hook:
        if not _fork_hook_set and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_one_thread_after_fork)
            _fork_hook_set = True


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        module: SentenceModule,
        precision: str = "fp32",
        device: str = "cpu",
        packed: bool = True,
        threads: int | None = None,
    ) -> None:
        """``threads``: torch's intra-op threads; torch has one pool per process, so this sets
        it for every torch model in the process (default: left as it is)."""
        self.device = resolve_device(device)
        reset_threads_in_forked_children()
        if threads is not None:
            if not isinstance(threads, int) or threads < 1:
                raise InputError(f"threads must be an integer >= 1, got {threads!r}")
            torch.set_num_threads(threads)
        self.batch_tokens = CPU_BATCH_TOKENS if self.device == "cpu" else GPU_BATCH_TOKENS
        if precision not in _DTYPES:
            raise InputError(
                f"precision {precision!r} is not available on the torch backend; "
                f"choose one of {sorted(_DTYPES)}"
            )
        if precision == "fp16" and self.device == "cpu":
            raise InputError("fp16 needs a GPU; on CPU use fp32, bf16 or the onnx backend's int8")
        self.precision = precision
        # Only the transformer runs in reduced precision; pooling and heads stay float32.
        module.encoder.to(dtype=_DTYPES[precision])
        self.module = module.to(self.device).eval()
        self.packed = packed
        self._run: nn.Module = PackedSentence(self.module) if packed else self.module

    @classmethod
    def from_spec(
        cls,
        spec: SentenceModelSpec,
        precision: str = "fp32",
        device: str = "cpu",
        packed: bool = True,
        threads: int | None = None,
    ) -> TorchBackend:
        module = load_sentence_module(spec)
        return cls(module, precision=precision, device=device, packed=packed, threads=threads)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        with torch.inference_mode():
            # Nothing to skip when no row is padded: the plain forward saves the gathers.
            run = self._run if self.packed and not attention_mask.all() else self.module
            out = run(ids, mask)
        return out.float().cpu().numpy()
