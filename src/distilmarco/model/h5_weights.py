"""Reading a Keras HDF5 checkpoint (``tf_model.h5``, as TFDistilBertModel / TFBertModel save it)
without TensorFlow: h5py only.

The layout is Keras's: the root lists its layers in the ``layer_names`` attribute, each layer's
group lists its variables in ``weight_names`` (``distilbert/transformer/layer_._0/ffn/lin1/kernel:0``)
and holds each one as a dataset at that path. Names are taken from those attributes, never from
walking the file, and renamed by fixed rules to PyTorch parameter names:
``layer_._N`` -> ``layer.N``, ``kernel`` -> ``weight`` (transposed: Keras stores (in, out)),
``gamma`` / ``beta`` -> ``weight`` / ``bias``, ``embeddings`` -> ``weight``. The result is keyed
``<layer>.<path>`` (``distilbert.embeddings.word_embeddings.weight``), so the checkpoint loader
strips the architecture prefix and checks every key and shape as it does for safetensors.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilmarco.errors import CheckpointError, MissingExtraError

log = logging.getLogger(__name__)

H5_FILE = "tf_model.h5"

# Keras variable name (last path component) -> PyTorch parameter name, and whether to transpose.
_LEAVES: dict[str, tuple[str, bool]] = {
    "kernel": ("weight", True),
    "bias": ("bias", False),
    "gamma": ("weight", False),
    "beta": ("bias", False),
    "embeddings": ("weight", False),
    "weight": ("weight", False),
}


def read_h5_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every variable of the Keras HDF5 file at ``path`` as float tensors under PyTorch names."""
    try:
        import h5py
    except ImportError as exc:
        raise MissingExtraError("h5py", "h5", f"reading {path.name}") from exc
    try:
        with h5py.File(path, "r") as f:
            return _read_layers(f, path)
    except OSError as exc:  # h5py raises OSError for files that are not HDF5 or are truncated
        raise CheckpointError(f"could not read {path} as HDF5: {exc}") from exc


def _names(attrs: Any, key: str, where: str) -> list[str]:
    if key not in attrs:
        raise CheckpointError(f"{where} has no {key!r} attribute: not a Keras HDF5 weights file")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in attrs[key]]


def _read_layers(f: Any, path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for layer in _names(f.attrs, "layer_names", str(path)):
        if layer not in f:
            raise CheckpointError(f"{path} lists layer {layer!r} but holds no group for it")
        group = f[layer]
        for weight_name in _names(group.attrs, "weight_names", f"{path}:{layer}"):
            if weight_name not in group:
                raise CheckpointError(
                    f"{path}:{layer} lists {weight_name!r} but holds no such dataset"
                )
            key, transpose = pytorch_name(layer, weight_name)
            value = np.asarray(group[weight_name][()])
            if transpose:
                if value.ndim != 2:
                    raise CheckpointError(
                        f"{path}:{layer}/{weight_name} is a kernel of shape {value.shape}, "
                        "expected a 2-D (in, out) matrix"
                    )
                value = np.ascontiguousarray(value.T)
            if key in state:
                raise CheckpointError(f"{path} maps two variables to {key!r}")
            state[key] = torch.from_numpy(value)
    if not state:
        raise CheckpointError(f"{path} holds no weights")
    log.debug("read %d tensors from %s", len(state), path)
    return state


def pytorch_name(layer: str, weight_name: str) -> tuple[str, bool]:
    """(PyTorch key, transpose?) for the variable ``weight_name`` of the Keras layer ``layer``.

    Variable names are scoped by the layer (``distilbert/...``), and by the model class in files
    saved by older versions (``tf_distil_bert_model/distilbert/...``); the path after the layer's
    own component is kept.
    """
    if not weight_name.endswith(":0"):
        raise CheckpointError(
            f"variable name {weight_name!r} in layer {layer!r} does not end in ':0'"
        )
    parts = weight_name[:-2].split("/")
    if layer not in parts[:2]:
        raise CheckpointError(
            f"variable {weight_name!r} is not scoped by its layer {layer!r} (nor one level below it)"
        )
    parts = parts[parts.index(layer) + 1 :]
    if not parts:
        raise CheckpointError(f"variable {weight_name!r} has no name below its layer {layer!r}")
    leaf = parts[-1]
    if leaf not in _LEAVES:
        raise CheckpointError(
            f"variable {weight_name!r} ends in {leaf!r}; known: {', '.join(sorted(_LEAVES))}"
        )
    name, transpose = _LEAVES[leaf]
    path = [p.replace("_._", ".") for p in parts[:-1]]
    return ".".join([layer, *path, name]), transpose
