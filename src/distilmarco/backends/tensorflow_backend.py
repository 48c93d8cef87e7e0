"""TensorFlow backend: the cached SavedModel (see ``tf_export.py``), run through its ``embed_ids``
signature on our own token ids, fp32, CPU."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.backends.cpu import default_threads
from distilmarco.backends.tf_export import OUTPUT_NAME, import_tf, savedmodel_path
from distilmarco.errors import BackendError, InputError
from distilmarco.model.st_format import SentenceModelSpec

log = logging.getLogger(__name__)


def _set_threads(tf: Any, threads: int) -> None:
    """TensorFlow fixes its thread pools when its runtime starts; later calls only log."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        log.debug("TensorFlow's runtime already started; its thread settings stay as they are")


class TensorFlowBackend:
    name = "tensorflow"
    device = "cpu"
    precision = "fp32"
    # Not tuned for TensorFlow: the torch backend's CPU budget, the same working-set reasoning.
    batch_tokens = 2048

    def __init__(self, path: Path, threads: int | None = None) -> None:
        tf, _ = import_tf()  # tensorflow_text registers the tokenizer's ops for loading
        self.threads = threads or default_threads()
        _set_threads(tf, self.threads)
        self.path = path
        try:
            self.saved = tf.saved_model.load(os.fspath(path))
            self._embed = self.saved.signatures["embed_ids"]
        except (OSError, KeyError, ValueError) as exc:
            raise BackendError(f"TensorFlow could not load the SavedModel {path}: {exc}") from exc
        self._tf = tf

    @classmethod
    def from_spec(
        cls,
        spec: SentenceModelSpec,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> TensorFlowBackend:
        if precision != "fp32":
            raise InputError(
                f"precision {precision!r} is not available on the tensorflow backend; it runs "
                "fp32 (int8: backend 'litert' or 'onnx'; bf16/fp16: 'torch')"
            )
        if device not in ("cpu", "auto"):
            raise InputError(f"the tensorflow backend runs on device 'cpu' only, got {device!r}")
        return cls(savedmodel_path(spec, cache_dir), threads)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        tf = self._tf
        out = self._embed(
            input_ids=tf.constant(input_ids, tf.int64),
            attention_mask=tf.constant(attention_mask, tf.int64),
        )[OUTPUT_NAME]
        return np.asarray(out.numpy(), dtype=np.float32)
