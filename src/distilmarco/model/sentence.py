"""The whole sentence-embedding pipeline as one module: encoder -> pooling -> heads."""

from __future__ import annotations

import torch
from torch import nn

from distilmarco.errors import CheckpointError
from distilmarco.model.checkpoint import load_into, read_state_dict
from distilmarco.model.heads import Dense, Normalize
from distilmarco.model.pooling import pool
from distilmarco.model.st_format import DenseSpec, SentenceModelSpec
from distilmarco.model.transformer import build_encoder


class SentenceModule(nn.Module):
    """(input_ids, attention_mask) of shape (B, T) -> float32 embeddings (B, D).

    The encoder may run in fp16/bf16; pooling and the heads always run in float32.
    """

    def __init__(self, spec: SentenceModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = build_encoder(spec.transformer)
        self.heads = nn.ModuleList(
            Dense(h.in_features, h.out_features, h.bias, h.activation)
            if isinstance(h, DenseSpec)
            else Normalize()
            for h in spec.heads
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids, attention_mask)  # (B, T, H)
        x = pool(states, attention_mask, self.spec.pooling.modes)  # (B, P) float32
        for head in self.heads:
            x = head(x)
        return x


def load_sentence_module(spec: SentenceModelSpec) -> SentenceModule:
    """Build the module for ``spec`` and load every weight, checked key by key."""
    module = SentenceModule(spec)
    arch = spec.transformer.architecture
    load_into(module.encoder, read_state_dict(spec.transformer_folder), arch)
    for head_spec, head in zip(spec.heads, module.heads, strict=True):
        if isinstance(head_spec, DenseSpec):
            state = read_state_dict(head_spec.folder)
            _load_dense(head, state, head_spec)
    return module.eval()


def _load_dense(head: nn.Module, state: dict[str, torch.Tensor], spec: DenseSpec) -> None:
    expected = head.state_dict()
    if set(state) != set(expected):
        raise CheckpointError(
            f"Dense weights in {spec.folder} have keys {sorted(state)}, expected {sorted(expected)}"
        )
    for key, target in expected.items():
        if state[key].shape != target.shape:
            raise CheckpointError(
                f"Dense tensor {key!r} in {spec.folder} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(target.shape)}"
            )
    head.load_state_dict({k: v.float() for k, v in state.items()})
