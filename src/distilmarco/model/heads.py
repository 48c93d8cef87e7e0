"""Modules that follow pooling in a sentence-transformers pipeline: Dense and Normalize."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distilmarco.errors import ModelFormatError

# The activations a Dense module may name, by the dotted path sentence-transformers stores.
_DENSE_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
    "torch.nn.modules.activation.GELU": nn.GELU,
}


def dense_activation(name: str) -> nn.Module:
    try:
        return _DENSE_ACTIVATIONS[name]()
    except KeyError:
        raise ModelFormatError(
            f"Dense activation {name!r} is not supported; choose one of {sorted(_DENSE_ACTIVATIONS)}"
        ) from None


class Dense(nn.Module):
    """``activation(linear(x))``; parameter names match sentence-transformers' ``linear.*``."""

    def __init__(self, in_features: int, out_features: int, bias: bool, activation: str) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = dense_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=-1)
