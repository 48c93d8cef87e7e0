"""Resumable training checkpoints: model and optimizer tensors in safetensors, the rest in JSON.

A checkpoint folder holds ``model.safetensors`` (the whole module's state), ``optimizer.safetensors``
(AdamW's moments and step counts), and ``trainer_state.json`` (step, epoch, batches done in the epoch,
every RNG's state, the best dev metric so far, the config). No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distilmarco.errors import InputError

STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class Progress:
    """Where training stands: optimizer steps done, and the data position within the epoch."""

    step: int
    epoch: int
    batch_in_epoch: int
    best_metric: float | None
    best_step: int | None


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer touches, as JSON-able values (torch's as a list of bytes)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    assert isinstance(np_state, dict)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": _jsonable(np_state),
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(
    folder: Path,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    config: dict[str, Any],
) -> Path:
    """Write a checkpoint to a temporary folder, then rename it into place (never half-written)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().contiguous() for k, v in module.state_dict().items()},
        str(tmp / "model.safetensors"),
    )
    tensors, groups = _flatten_optimizer(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {
        "progress": asdict(progress),
        "rng": rng_state(),
        "param_groups": groups,
        "config": config,
    }
    (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def load_checkpoint(
    folder: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[Progress, dict[str, Any]]:
    """Restore module, optimizer and RNGs from ``folder``; returns the progress and saved config."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot resume from {folder}: {exc}") from exc
    module.load_state_dict(load_file(str(folder / "model.safetensors")))
    optimizer.load_state_dict(
        _unflatten_optimizer(
            load_file(str(folder / "optimizer.safetensors")), state["param_groups"]
        )
    )
    set_rng_state(state["rng"])
    return Progress(**state["progress"]), state["config"]


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint with the highest step under ``root`` (``step-N`` folders), if any."""
    if not root.is_dir():
        return None
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()
    ]
    return max(found, key=lambda p: int(p.name.removeprefix("step-")), default=None)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, values in sd["state"].items():
        for name, value in values.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index}.{name}"] = t.detach().contiguous()
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.integer):
        return int(value)
    return value


def _numpy_state(value: Any) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        return {k: _numpy_state(v) for k, v in value.items()}
    return value
