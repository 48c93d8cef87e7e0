"""Students for distillation: a model of its own, or a K-layer copy of the teacher.

A K-layer student keeps the teacher's embeddings, pooling and heads and K of its layers, spread
evenly over the depth with the last one kept (the way sentence-transformers' distillation
example picks them, e.g. layers 1, 3, 5 of 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from distilmarco.errors import InputError
from distilmarco.model.sentence import SentenceModule, load_sentence_module
from distilmarco.model.st_format import SentenceModelSpec


def spread_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer numbers (0-based) out of ``total``, evenly spread, the last one included."""
    if not 1 <= keep <= total:
        raise InputError(f"a student needs between 1 and {total} layers, got {keep}")
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def _holder(module: SentenceModule) -> nn.Module:
    """The module whose ``layer`` attribute is the encoder's stack of layers."""
    name = "transformer" if module.spec.transformer.architecture == "distilbert" else "encoder"
    holder = getattr(module.encoder, name)
    assert isinstance(holder, nn.Module)
    return holder


def cut_layers(teacher: SentenceModelSpec, layers: Sequence[int]) -> SentenceModule:
    """The teacher's pipeline with only ``layers`` of its transformer, in that order."""
    total = teacher.transformer.num_layers
    if not layers or any(not 0 <= i < total for i in layers) or len(set(layers)) != len(layers):
        raise InputError(
            f"layers {list(layers)} must be distinct layer numbers between 0 and {total - 1}"
        )
    module = load_sentence_module(teacher)
    holder = _holder(module)
    stack = holder.layer
    assert isinstance(stack, nn.ModuleList)
    holder.layer = nn.ModuleList(stack[i] for i in layers)
    config = replace(teacher.transformer, num_layers=len(layers))
    setattr(module.encoder, "config", config)  # noqa: B010  (the encoder's own record of its shape)
    module.spec = replace(teacher, transformer=config)
    return module
