"""DistilBERT and BERT encoders in plain PyTorch.

Modules carry the checkpoint's parameter names, so loading weights is a straight copy checked key
by key (see ``checkpoint.py``). Both encoders map ``(input_ids, attention_mask)`` of shape (B, T)
to token states of shape (B, T, D).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from distilmarco.errors import ModelFormatError
from distilmarco.model.config import Activation, TransformerConfig


def activation_fn(name: str) -> nn.Module:
    """The module for a config's ``activation``; an unknown name is refused, never guessed."""
    if name == "gelu":
        return nn.GELU()  # erf form, as in the reference
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    raise ModelFormatError(
        f"activation {name!r} is not supported; choose one of {', '.join(get_args(Activation))}"
    )


def attention_mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) of 0/1 -> boolean (B, 1, 1, T) where True means "may attend"."""
    return attention_mask.bool()[:, None, None, :]


class Packing:
    """Where the real tokens of a right-padded (B, T) batch sit, for packed ("varlen") execution.

    Linear layers, LayerNorms, GELU and residuals act per token, so they run on the (N, D) stack of
    the N real tokens only; attention alone needs the (B, T) layout and scatters into it and back.
    """

    def __init__(self, attention_mask: torch.Tensor) -> None:
        b, t = attention_mask.shape
        self.batch, self.width = b, t
        self.index = attention_mask.reshape(-1).nonzero().squeeze(-1)  # (N,) into B*T
        self.mask = attention_mask_4d(attention_mask)  # (B, 1, 1, T)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (N, D): the real tokens, row-major."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (B, T, D) with zeros at padding positions."""
        out = x.new_zeros(self.batch * self.width, x.shape[-1])
        out = out.index_copy(0, self.index, x)
        return out.view(self.batch, self.width, x.shape[-1])


_EXPLICIT_ATTENTION: ContextVar[bool] = ContextVar("explicit_attention", default=False)


@contextmanager
def explicit_attention() -> Iterator[None]:
    """Within this block, attention is written out as matmul, additive mask, softmax, matmul.

    Same numbers as ``scaled_dot_product_attention`` (to float32 rounding). For ONNX export: this
    is the pattern ONNX Runtime's transformer optimizer fuses into its ``Attention`` operator (and,
    for int8, ``QAttention``); the exported SDPA decomposition is left unfused.
    """
    token = _EXPLICIT_ATTENTION.set(True)
    try:
        yield
    finally:
        _EXPLICIT_ATTENTION.reset(token)


def multi_head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | Packing,
    num_heads: int,
) -> torch.Tensor:
    """Scaled dot-product attention over heads. q, k, v: (B, T, D); mask: (B, 1, 1, T).

    With a ``Packing`` instead of a mask, q, k, v are packed (N, D) and so is the result.
    """
    if isinstance(mask, Packing):
        ctx = multi_head_attention(
            mask.unpack(q), mask.unpack(k), mask.unpack(v), mask.mask, num_heads
        )
        return mask.pack(ctx)  # (N, D)
    b, t, d = q.shape
    shape = (b, t, num_heads, d // num_heads)
    q, k, v = (x.view(shape).transpose(1, 2) for x in (q, k, v))  # (B, H, T, Dh)
    if _EXPLICIT_ATTENTION.get():
        bias = (1.0 - mask.to(q.dtype)) * torch.finfo(q.dtype).min  # (B, 1, 1, T)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // num_heads) + bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
    return out.transpose(1, 2).reshape(b, t, d)  # (B, T, D)


class Embeddings(nn.Module):
    """Word + learned position (+ token type, BERT only) embeddings, then LayerNorm."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        if cfg.type_vocab_size:
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, T, D)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                # Single-segment input: every token has type 0.
                x = x + self.token_type_embeddings.weight[0]
            else:  # sentence pairs (cross-encoders): 0 for the first segment, 1 for the second
                x = x + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


# --- DistilBERT -------------------------------------------------------------------------------


class DistilAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q_lin = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_lin = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_lin = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_lin = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | Packing) -> torch.Tensor:
        ctx = multi_head_attention(
            self.q_lin(x), self.k_lin(x), self.v_lin(x), mask, self.num_heads
        )
        return self.out_lin(ctx)  # (B, T, D)


class DistilFFN(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.lin1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.lin2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.activation = activation_fn(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.activation(self.lin1(x)))


class DistilLayer(nn.Module):
    """Post-LayerNorm block: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attention = DistilAttention(cfg)
        self.sa_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = DistilFFN(cfg)
        self.output_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | Packing) -> torch.Tensor:
        x = self.sa_layer_norm(x + self.attention(x, mask))
        return self.output_layer_norm(x + self.ffn(x))


class DistilTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(DistilLayer(cfg) for _ in range(cfg.num_layers))


class DistilBertEncoder(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.transformer = DistilTransformer(cfg)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, packed: bool = False
    ) -> torch.Tensor:
        """(B, T) ids and mask -> (B, T, D) states; ``packed`` skips work on padding tokens."""
        return run_layers(
            self.transformer.layer, self.embeddings(input_ids), attention_mask, packed
        )


# --- BERT -------------------------------------------------------------------------------------


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)


class BertDenseNorm(nn.Module):
    """``dense`` then residual LayerNorm: BERT's attention.output and output blocks."""

    def __init__(self, d_in: int, cfg: TransformerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.self = BertSelfAttention(cfg)
        self.output = BertDenseNorm(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | Packing) -> torch.Tensor:
        s = self.self
        ctx = multi_head_attention(s.query(x), s.key(x), s.value(x), mask, self.num_heads)
        return self.output(ctx, x)  # (B, T, D)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.activation = activation_fn(cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertDenseNorm(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | Packing) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertStack(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))


class BertEncoder(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = BertStack(cfg)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, packed: bool = False
    ) -> torch.Tensor:
        """(B, T) ids and mask -> (B, T, D) states; ``packed`` skips work on padding tokens."""
        return run_layers(self.encoder.layer, self.embeddings(input_ids), attention_mask, packed)


def run_layers(
    layers: nn.ModuleList, x: torch.Tensor, attention_mask: torch.Tensor, packed: bool
) -> torch.Tensor:
    """(B, T, D) embeddings through every layer -> (B, T, D) states. ``packed``: the layers see
    only the real tokens, (N, D), and the result has zeros at padding."""
    if packed:
        packing = Packing(attention_mask)
        x = packing.pack(x)  # (N, D)
        for layer in layers:
            x = layer(x, packing)
        return packing.unpack(x)  # (B, T, D)
    mask = attention_mask_4d(attention_mask)
    for layer in layers:
        x = layer(x, mask)
    return x


def build_encoder(cfg: TransformerConfig) -> nn.Module:
    """The encoder module for a config, with freshly initialised (untrained) weights."""
    return DistilBertEncoder(cfg) if cfg.architecture == "distilbert" else BertEncoder(cfg)
