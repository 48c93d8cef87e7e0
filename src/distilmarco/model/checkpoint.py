"""Reading checkpoint weights into our modules: safetensors first, pickle never executed.

Known key prefixes (``distilbert.``, ``bert.``) are stripped explicitly; known unused heads are
dropped; anything else that does not match the module exactly is an error that names the key.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from distilmarco.errors import CheckpointError
from distilmarco.model.config import Architecture

log = logging.getLogger(__name__)

_PREFIXES: dict[Architecture, str] = {"distilbert": "distilbert.", "bert": "bert."}
# Heads that task checkpoints carry and an encoder never uses.
_UNUSED_PREFIXES = (
    "pooler.",
    "cls.",
    "vocab_transform.",
    "vocab_layer_norm.",
    "vocab_projector.",
    "embeddings.position_ids",
    "embeddings.token_type_ids",
)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "tf_model.h5",
    "pytorch_model.bin",
)


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Tensors from the first weights file found in ``folder``, in order of preference."""
    single = folder / "model.safetensors"
    if single.is_file():
        return _load_safetensors(single)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return _load_sharded(index)
    keras = folder / "tf_model.h5"
    if keras.is_file():  # TensorFlow's weights, read with h5py: no pickle, no TensorFlow
        from distilmarco.model.h5_weights import read_h5_state_dict

        return read_h5_state_dict(keras)
    pickled = folder / "pytorch_model.bin"
    if pickled.is_file():
        log.warning(
            "%s has no model.safetensors; reading pytorch_model.bin with weights_only=True",
            folder,
        )
        try:
            state = torch.load(pickled, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for unsafe or damaged pickles
            raise CheckpointError(refused_pickle(pickled, exc)) from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{pickled} does not hold a state dict")
        return state
    raise CheckpointError(f"no weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"could not read {path}: {exc}") from exc


def _load_sharded(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from exc
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(_load_safetensors(index.parent / shard))
    return state


def normalise_keys(state: dict[str, torch.Tensor], arch: Architecture) -> dict[str, torch.Tensor]:
    """Strip the architecture's known prefix and drop known unused heads."""
    prefix = _PREFIXES[arch]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix(prefix)
        if name.startswith(_UNUSED_PREFIXES):
            log.debug("ignoring unused checkpoint tensor %s", key)
            continue
        if name in out:
            raise CheckpointError(f"checkpoint holds {name!r} both with and without {prefix!r}")
        out[name] = value
    return out


def load_into(module: nn.Module, state: dict[str, torch.Tensor], arch: Architecture) -> None:
    """Copy ``state`` into ``module`` after checking every key and shape; raises CheckpointError."""
    state = normalise_keys(state, arch)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(
            f"checkpoint is missing {len(missing)} tensor(s) for a {arch} encoder, "
            f"first: {missing[0]!r}"
        )
    if unexpected:
        raise CheckpointError(
            f"checkpoint has {len(unexpected)} unexpected tensor(s) for a {arch} encoder, "
            f"first: {unexpected[0]!r}"
        )
    for key, target in expected.items():
        if tuple(state[key].shape) != tuple(target.shape):
            raise CheckpointError(
                f"tensor {key!r} has shape {tuple(state[key].shape)}, "
                f"the config implies {tuple(target.shape)}"
            )
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def refused_pickle(path: Path, exc: Exception) -> str:
    """Why a pickled checkpoint was refused, without torch's advice to turn the safety off."""
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return (
            f"could not read {path} safely, so it was refused: it is a pickle that holds more than "
            "plain tensors, and loading it would run code stored in the file, which distilmarco "
            "never does. Convert "
            "the checkpoint to model.safetensors with the tool that made it (from a source you "
            "trust), or use a safetensors copy of the model"
        )
    return f"could not read {path} as a checkpoint (it may be damaged): {exc}"
