"""The sentence pipeline (DistilBERT / BERT encoder, pooling, heads) written in TensorFlow.

It mirrors ``model/transformer.py`` op for op (post-LayerNorm blocks, erf GELU, learned positions,
token type 0 for BERT) and takes its weights from our PyTorch ``SentenceModule``'s state dict,
under the same names; linear weights are stored transposed, (in, out), as TensorFlow multiplies.
``(input_ids, attention_mask)`` of shape (B, T) -> float32 (B, D). Needs ``tensorflow``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from distilmarco.errors import BackendError
from distilmarco.model.st_format import DenseSpec, SentenceModelSpec

# Dense head activations by the dotted name sentence-transformers stores (see ``model/heads.py``).
_DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": tf.tanh,
    "torch.nn.modules.linear.Identity": tf.identity,
    "torch.nn.modules.activation.ReLU": tf.nn.relu,
    "torch.nn.modules.activation.Sigmoid": tf.sigmoid,
    "torch.nn.modules.activation.GELU": lambda x: tf.nn.gelu(x, approximate=False),
}


def _encoder_activation(name: str) -> Any:
    if name == "gelu":
        return lambda x: tf.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: tf.nn.gelu(x, approximate=True)
    return tf.nn.relu


class TFSentenceModel(tf.Module):
    """Our encoder + pooling + heads as a ``tf.Module`` whose variables carry our weights."""

    def __init__(self, spec: SentenceModelSpec, state: Mapping[str, np.ndarray]) -> None:
        super().__init__(name="sentence_model")
        cfg = spec.transformer
        self.arch = cfg.architecture
        self.num_layers = cfg.num_layers
        self.num_heads = cfg.num_heads
        self.hidden = cfg.hidden_size
        self.eps = cfg.layer_norm_eps
        self.pooling_modes = tuple(spec.pooling.modes)
        self.activation = _encoder_activation(cfg.activation)
        self.head_kinds = tuple(
            ("dense", h.activation) if isinstance(h, DenseSpec) else ("normalize", "")
            for h in spec.heads
        )
        for _, act in self.head_kinds:
            if act and act not in _DENSE_ACTIVATIONS:
                raise BackendError(f"Dense activation {act!r} has no TensorFlow counterpart")
        self.has_token_types = "encoder.embeddings.token_type_embeddings.weight" in state
        # Variables by our parameter name (dots become slashes: tf.Module tracks dict keys).
        self.params: dict[str, tf.Variable] = {}
        for key, value in state.items():
            array = np.asarray(value, dtype=np.float32)
            if key.endswith(".weight") and array.ndim == 2 and "embeddings" not in key:
                array = np.ascontiguousarray(array.T)  # (out, in) -> (in, out)
            self.params[key.replace(".", "/")] = tf.Variable(array, trainable=False)

    def w(self, key: str) -> tf.Variable:
        return self.params[key.replace(".", "/")]

    # --- building blocks ----------------------------------------------------------------------

    def linear(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        """(..., in) -> (..., out) with the weights ``prefix.weight`` / ``prefix.bias``."""
        kernel = self.w(prefix + ".weight")
        flat = tf.reshape(x, [-1, tf.shape(x)[-1]])
        out = tf.matmul(flat, kernel)
        if (prefix + ".bias").replace(".", "/") in self.params:
            out = out + self.w(prefix + ".bias")
        return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [tf.shape(kernel)[1]]], axis=0))

    def layer_norm(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        normed = (x - mean) * tf.math.rsqrt(var + self.eps)
        return normed * self.w(prefix + ".weight") + self.w(prefix + ".bias")

    def attention(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
        """q, k, v: (B, T, D); bias: (B, 1, 1, T) additive mask -> (B, T, D)."""
        b, t = tf.shape(q)[0], tf.shape(q)[1]
        dh = self.hidden // self.num_heads

        def heads(x: tf.Tensor) -> tf.Tensor:
            return tf.transpose(tf.reshape(x, [b, t, self.num_heads, dh]), [0, 2, 1, 3])

        scores = tf.matmul(heads(q), heads(k), transpose_b=True) / math.sqrt(dh) + bias
        ctx = tf.matmul(tf.nn.softmax(scores, axis=-1), heads(v))  # (B, H, T, Dh)
        return tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [b, t, self.hidden])

    def embeddings(self, input_ids: tf.Tensor) -> tf.Tensor:
        t = tf.shape(input_ids)[1]
        x = tf.gather(self.w("encoder.embeddings.word_embeddings.weight"), input_ids)
        x = x + self.w("encoder.embeddings.position_embeddings.weight")[:t]
        if self.has_token_types:
            x = x + self.w("encoder.embeddings.token_type_embeddings.weight")[0]
        return self.layer_norm(x, "encoder.embeddings.LayerNorm")  # (B, T, D)

    def distil_layer(self, x: tf.Tensor, bias: tf.Tensor, i: int) -> tf.Tensor:
        p = f"encoder.transformer.layer.{i}."
        a = p + "attention."
        ctx = self.attention(
            self.linear(x, a + "q_lin"),
            self.linear(x, a + "k_lin"),
            self.linear(x, a + "v_lin"),
            bias,
        )
        x = self.layer_norm(x + self.linear(ctx, a + "out_lin"), p + "sa_layer_norm")
        h = self.linear(self.activation(self.linear(x, p + "ffn.lin1")), p + "ffn.lin2")
        return self.layer_norm(x + h, p + "output_layer_norm")

    def bert_layer(self, x: tf.Tensor, bias: tf.Tensor, i: int) -> tf.Tensor:
        p = f"encoder.encoder.layer.{i}."
        s = p + "attention.self."
        ctx = self.attention(
            self.linear(x, s + "query"),
            self.linear(x, s + "key"),
            self.linear(x, s + "value"),
            bias,
        )
        o = p + "attention.output."
        x = self.layer_norm(self.linear(ctx, o + "dense") + x, o + "LayerNorm")
        h = self.activation(self.linear(x, p + "intermediate.dense"))
        return self.layer_norm(self.linear(h, p + "output.dense") + x, p + "output.LayerNorm")

    def pool(self, states: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """(B, T, D) states, (B, T) float mask -> (B, D * modes), as ``model/pooling.py``."""
        m = mask[:, :, None]  # (B, T, 1)
        count = tf.maximum(tf.reduce_sum(m, axis=1), 1e-9)  # (B, 1)
        out = []
        for mode in self.pooling_modes:
            if mode == "cls":
                out.append(states[:, 0])
            elif mode == "max":
                out.append(tf.reduce_max(tf.where(m > 0, states, -np.inf), axis=1))
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                total = tf.reduce_sum(states * m, axis=1)
                out.append(total / (count if mode == "mean" else tf.sqrt(count)))
            elif mode == "weightedmean":
                positions = tf.cast(tf.range(1, tf.shape(states)[1] + 1), tf.float32)
                wm = m * positions[None, :, None]
                total = tf.reduce_sum(states * wm, axis=1)
                out.append(total / tf.maximum(tf.reduce_sum(wm, axis=1), 1e-9))
            else:  # lasttoken
                last = tf.maximum(tf.cast(tf.reduce_sum(mask, axis=1), tf.int32) - 1, 0)
                out.append(tf.gather(states, last, axis=1, batch_dims=1))
        return tf.concat(out, axis=-1)

    # --- the whole pipeline -------------------------------------------------------------------

    def __call__(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> tf.Tensor:
        """(B, T) int ids and 0/1 mask -> (B, D) float32 sentence vectors."""
        ids = tf.cast(input_ids, tf.int32)
        mask = tf.cast(attention_mask, tf.float32)
        bias = (1.0 - mask)[:, None, None, :] * np.finfo(np.float32).min  # (B, 1, 1, T)
        x = self.embeddings(ids)
        layer = self.distil_layer if self.arch == "distilbert" else self.bert_layer
        for i in range(self.num_layers):
            x = layer(x, bias, i)
        x = self.pool(x, mask)
        for j, (kind, act) in enumerate(self.head_kinds):
            if kind == "dense":
                x = _DENSE_ACTIVATIONS[act](self.linear(x, f"heads.{j}.linear"))
            else:
                x = x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), 1e-12)
        return x


def torch_state(spec: SentenceModelSpec) -> dict[str, np.ndarray]:
    """Our PyTorch module's weights for ``spec``, loaded and checked as for the torch backend."""
    from distilmarco.model.sentence import load_sentence_module

    module = load_sentence_module(spec)
    return {k: v.detach().float().numpy() for k, v in module.state_dict().items()}
