"""Typed, validated configuration read from a checkpoint's ``config.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distilmarco.errors import ModelFormatError

Architecture = Literal["distilbert", "bert"]
Activation = Literal["gelu", "gelu_tanh", "relu"]

_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a DistilBERT or BERT encoder: everything needed to build the modules."""

    architecture: Architecture
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 0  # 0 for DistilBERT, which has no token-type embeddings
    layer_norm_eps: float = 1e-12
    activation: Activation = "gelu"
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ModelFormatError(
                f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads"
            )
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ModelFormatError(f"config {name} must be positive, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TransformerConfig:
        model_type = raw.get("model_type")
        if model_type == "distilbert":
            # A sinusoidal position table (sinusoidal_pos_embds) is stored in the checkpoint
            # like a learned one, so it needs no special case.
            return cls(
                architecture="distilbert",
                vocab_size=int(raw.get("vocab_size", 30522)),
                hidden_size=int(raw.get("dim", raw.get("hidden_size", 768))),
                num_layers=int(raw.get("n_layers", raw.get("num_hidden_layers", 6))),
                num_heads=int(raw.get("n_heads", raw.get("num_attention_heads", 12))),
                intermediate_size=int(raw.get("hidden_dim", raw.get("intermediate_size", 3072))),
                max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
                type_vocab_size=0,
                layer_norm_eps=1e-12,  # fixed in DistilBERT, not read from the config
                activation=_activation(raw.get("activation", "gelu")),
                pad_token_id=int(raw.get("pad_token_id") or 0),
            )
        if model_type == "bert":
            position_type = raw.get("position_embedding_type", "absolute")
            if position_type != "absolute":
                raise ModelFormatError(
                    f"position_embedding_type {position_type!r} is not supported; "
                    "only 'absolute' is"
                )
            return cls(
                architecture="bert",
                vocab_size=int(raw.get("vocab_size", 30522)),
                hidden_size=int(raw.get("hidden_size", 768)),
                num_layers=int(raw.get("num_hidden_layers", 12)),
                num_heads=int(raw.get("num_attention_heads", 12)),
                intermediate_size=int(raw.get("intermediate_size", 3072)),
                max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
                activation=_activation(raw.get("hidden_act", "gelu")),
                pad_token_id=int(raw.get("pad_token_id") or 0),
            )
        raise ModelFormatError(
            f"model_type {model_type!r} is not supported; choose a 'distilbert' or 'bert' checkpoint"
        )

    @classmethod
    def from_file(cls, path: Path) -> TransformerConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelFormatError(f"no config.json at {path}") from exc
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelFormatError(f"{path} must hold a JSON object")
        return cls.from_dict(raw)


def _activation(name: object) -> Activation:
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ModelFormatError(
            f"activation {name!r} is not supported; choose one of {sorted(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[name]
