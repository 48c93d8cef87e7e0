"""LiteRT backend: the cached ``.tflite`` export (see ``litert_export.py``) run by
``ai-edge-litert``'s interpreter (XNNPACK on CPU), fp32 or dynamic-range int8.

Each batch goes to the signature of the shortest fixed length that holds it, in chunks of that
signature's batch size; padded rows and columns carry mask 0, so they change no real row's vector.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.backends.cpu import default_threads
from distilmarco.backends.litert_export import Signature, litert_model, signatures
from distilmarco.backends.onnx_backend import check_precision
from distilmarco.errors import BackendError, InputError, MissingExtraError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)


def _import_interpreter() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise MissingExtraError("ai-edge-litert", "litert", "the 'litert' backend") from exc
    return Interpreter


class LiteRTBackend:
    name = "litert"
    device = "cpu"
    # Matches the signatures' fixed size (SIGNATURE_TOKENS), so a batch fills about one call.
    batch_tokens = 2048

    def __init__(
        self, path: Path, precision: str, shapes: tuple[Signature, ...], threads: int | None = None
    ) -> None:
        interpreter_cls = _import_interpreter()
        self.path = path
        self.precision = precision
        self.threads = threads or default_threads()
        try:
            self.interpreter = interpreter_cls(model_path=os.fspath(path), num_threads=self.threads)
            listed = self.interpreter.get_signature_list()
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"LiteRT could not load {path}: {exc}") from exc
        missing = [s.name for s in shapes if s.name not in listed]
        if missing:
            raise BackendError(f"{path} lacks the signatures {missing}")
        self.shapes = shapes
        self.runners = {s.name: self.interpreter.get_signature_runner(s.name) for s in shapes}

    @classmethod
    def from_spec(
        cls,
        spec: SentenceModelSpec,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> LiteRTBackend:
        kind = check_precision(cls.name, precision, device)
        _import_interpreter()
        path = litert_model(spec, kind, cache_dir)
        return cls(path, precision, signatures(spec.max_seq_length), threads)

    def signature_for(self, length: int) -> Signature:
        """The batched signature of the shortest length that holds ``length`` tokens."""
        for sig in self.shapes:
            if sig.length >= length and not sig.name.endswith("x1"):
                return sig
        raise InputError(f"a batch of {length} tokens is longer than the model's limit")

    def _run(self, sig: Signature, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(n <= sig.batch, T <= sig.length) rows through ``sig``, padded with mask 0."""
        n, length = ids.shape
        padded_ids = np.zeros((sig.batch, sig.length), dtype=np.int32)
        padded_mask = np.zeros((sig.batch, sig.length), dtype=np.int32)
        padded_ids[:n, :length] = ids
        padded_mask[:n, :length] = mask
        result = self.runners[sig.name](input_ids=padded_ids, attention_mask=padded_mask)
        return np.asarray(next(iter(result.values()))[:n], dtype=np.float32)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        rows, length = input_ids.shape
        sig = self.signature_for(length)
        single = next((s for s in self.shapes if s.name == f"{sig.name}x1"), sig)
        out: list[np.ndarray] = []
        for start in range(0, rows, sig.batch):
            ids = input_ids[start : start + sig.batch]
            mask = attention_mask[start : start + sig.batch]
            if len(ids) * 2 <= sig.batch and single is not sig:
                # Few rows: one-row calls cost a row each, a padded batch costs the whole batch.
                out.extend(
                    self._run(single, ids[i : i + 1], mask[i : i + 1]) for i in range(len(ids))
                )
            else:
                out.append(self._run(sig, ids, mask))
        return np.concatenate(out, axis=0)
