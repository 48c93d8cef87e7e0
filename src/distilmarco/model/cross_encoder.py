"""Cross-encoders: BERT and DistilBERT sequence-classification models over (query, passage) pairs.

The modules reuse the encoders of ``transformer.py`` and carry the checkpoints' own names
(``bert.pooler.dense``, ``classifier``, ``pre_classifier``), so loading is a straight copy checked
key by key. Two folder layouts load: the sentence-transformers 6.x CrossEncoder folder
(``modules.json`` with a single Transformer, ``config_sentence_transformers.json``) and a plain
``...ForSequenceClassification`` folder (what the published ``cross-encoder/*`` repositories and
sentence-transformers before 6 hold). The score activation is resolved as sentence-transformers'
``CrossEncoder`` resolves it; activations are mapped through an allow-list, never imported.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from distilmarco.errors import CheckpointError, ModelFormatError
from distilmarco.model.checkpoint import read_state_dict
from distilmarco.model.config import Architecture, TransformerConfig
from distilmarco.model.st_format import _sentence_bert_config
from distilmarco.model.transformer import (
    BertEncoder,
    BertLayer,
    DistilBertEncoder,
    DistilLayer,
    attention_mask_4d,
    run_layers,
)

log = logging.getLogger(__name__)

# The checkpoint architectures we run, by the name ``config.json`` gives them.
ARCHITECTURES: dict[str, Architecture] = {
    "BertForSequenceClassification": "bert",
    "DistilBertForSequenceClassification": "distilbert",
}
_BY_MODEL_TYPE: dict[str, str] = {arch: name for name, arch in ARCHITECTURES.items()}
ScoreActivation = Literal["sigmoid", "identity", "tanh"]
# Dotted paths sentence-transformers stores for the activation applied to the logits.
ACTIVATIONS: dict[str, ScoreActivation] = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}
_TRANSFORMER_TYPES = (
    "sentence_transformers.base.modules.transformer.Transformer",
    "sentence_transformers.models.Transformer",
)
# Buffers some checkpoints save that are not parameters of the model.
_BUFFERS = (".embeddings.position_ids", ".embeddings.token_type_ids")


@dataclass(frozen=True)
class CrossEncoderSpec:
    """Everything needed to build and run a cross-encoder from a folder."""

    folder: Path
    architecture: str  # as config.json names it, e.g. "BertForSequenceClassification"
    transformer: TransformerConfig
    num_labels: int
    activation: ScoreActivation
    max_seq_length: int
    do_lower_case: bool
    layout: Literal["st6", "plain"]

    @property
    def token_types(self) -> bool:
        """Whether the model reads token types (BERT does, DistilBERT has none)."""
        return self.transformer.architecture == "bert"

    @classmethod
    def from_folder(cls, folder: Path) -> CrossEncoderSpec:
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFormatError(f"{folder} is not a folder")
        layout: Literal["st6", "plain"] = "plain"
        model_folder = folder
        if (folder / "modules.json").is_file():
            layout, model_folder = "st6", _transformer_folder(folder)
        config = _read_json(model_folder / "config.json")
        if not isinstance(config, dict):
            raise ModelFormatError(f"{model_folder / 'config.json'} must hold a JSON object")
        architecture = _architecture(config, model_folder)
        transformer = TransformerConfig.from_dict(config)
        if ARCHITECTURES[architecture] != transformer.architecture:
            raise ModelFormatError(
                f"{model_folder / 'config.json'} names {architecture} but model_type "
                f"{config.get('model_type')!r}"
            )
        num_labels = _num_labels(config)
        st_config: dict[str, Any] = {}
        st_file = folder / "config_sentence_transformers.json"
        if st_file.is_file():
            raw = _read_json(st_file)
            st_config = raw if isinstance(raw, dict) else {}
        max_len, lower = _sentence_bert_config(model_folder, transformer)
        return cls(
            folder=model_folder,
            architecture=architecture,
            transformer=transformer,
            num_labels=num_labels,
            activation=_activation(st_config, config, num_labels),
            max_seq_length=max_len,
            do_lower_case=lower,
            layout=layout,
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"missing {path}") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc


def _transformer_folder(folder: Path) -> Path:
    """The one Transformer module of a sentence-transformers CrossEncoder folder."""
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list) or len(modules) != 1 or not isinstance(modules[0], dict):
        types = [m.get("type") for m in modules if isinstance(m, dict)] if modules else []
        raise ModelFormatError(
            f"{folder / 'modules.json'} lists modules {types}; a cross-encoder folder we can run "
            "has exactly one Transformer module"
        )
    kind = modules[0].get("type")
    if kind not in _TRANSFORMER_TYPES:
        raise ModelFormatError(
            f"module type {kind!r} in {folder / 'modules.json'} is not supported for "
            f"cross-encoders; supported: {', '.join(_TRANSFORMER_TYPES)}"
        )
    model_folder = folder / str(modules[0].get("path", ""))
    st_cfg = model_folder / "sentence_bert_config.json"
    if st_cfg.is_file():
        task = _read_json(st_cfg).get("transformer_task", "sequence-classification")
        if task != "sequence-classification":
            raise ModelFormatError(
                f"{st_cfg} sets transformer_task {task!r}; cross-encoders need "
                "'sequence-classification'"
            )
    return model_folder


def _architecture(config: dict[str, Any], folder: Path) -> str:
    names = config.get("architectures")
    if names:
        name = str(names[0])
    else:  # no architectures list: the classification head of the named model type
        name = _BY_MODEL_TYPE.get(str(config.get("model_type")), f"{config.get('model_type')}")
    if name not in ARCHITECTURES:
        raise ModelFormatError(
            f"architecture {name!r} in {folder / 'config.json'} is not supported as a "
            f"cross-encoder; choose one of {sorted(ARCHITECTURES)}"
        )
    return name


def _num_labels(config: dict[str, Any]) -> int:
    """As transformers counts them: the id2label entries, else ``num_labels``, else 2."""
    id2label = config.get("id2label")
    count = (
        len(id2label) if isinstance(id2label, dict) and id2label else config.get("num_labels", 2)
    )
    if not isinstance(count, int) or count < 1:
        raise ModelFormatError(f"num_labels {count!r} must be a positive integer")
    return count


def _activation(
    st_config: dict[str, Any], config: dict[str, Any], num_labels: int
) -> ScoreActivation:
    """The activation sentence-transformers applies in ``CrossEncoder.predict``.

    In its order: ``activation_fn`` of ``config_sentence_transformers.json``, then config.json's
    ``sentence_transformers.activation_fn``, else its older ``sbert_ce_default_activation_function``;
    paths outside ``torch.`` are ignored (it only imports those with trust_remote_code); without
    one, sigmoid for a single label and identity otherwise.
    """
    paths: list[object] = [st_config.get("activation_fn")]
    block = config.get("sentence_transformers")
    if isinstance(block, dict) and "activation_fn" in block:
        paths.append(block["activation_fn"])
    else:
        paths.append(config.get("sbert_ce_default_activation_function"))
    for path in paths:
        if path is None:
            continue
        if not isinstance(path, str) or not path.startswith("torch."):
            log.warning("ignoring the activation %r: not a torch module; using the default", path)
            continue
        if path not in ACTIVATIONS:
            raise ModelFormatError(
                f"score activation {path!r} is not supported; choose one of {sorted(ACTIVATIONS)}"
            )
        return ACTIVATIONS[path]
    return "sigmoid" if num_labels == 1 else "identity"


# --- modules ----------------------------------------------------------------------------------


class BertPooler(nn.Module):
    """tanh(dense(state of [CLS])): BERT's pooler, which its classification head reads."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first))


class BertWithPooler(BertEncoder):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg)
        self.pooler = BertPooler(cfg)


class BertCrossEncoder(nn.Module):
    """BertForSequenceClassification: (B, T) ids, mask, token types -> (B, L) float32 logits."""

    def __init__(self, cfg: TransformerConfig, num_labels: int) -> None:
        super().__init__()
        self.bert = BertWithPooler(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)

    @property
    def backbone(self) -> nn.Module:
        return self.bert.encoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        packed: bool = False,
    ) -> torch.Tensor:
        x = self.bert.embeddings(input_ids, token_type_ids)  # (B, T, D)
        first = first_token_states(self.bert.encoder.layer, x, attention_mask, packed)
        first = first.float()  # (B, D); the heads run in float32
        return self.classifier(self.bert.pooler(first))


class DistilBertCrossEncoder(nn.Module):
    """DistilBertForSequenceClassification: (B, T) ids and mask -> (B, L) float32 logits."""

    def __init__(self, cfg: TransformerConfig, num_labels: int) -> None:
        super().__init__()
        self.distilbert = DistilBertEncoder(cfg)
        self.pre_classifier = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)

    @property
    def backbone(self) -> nn.Module:
        return self.distilbert

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,  # DistilBERT has no token types
        packed: bool = False,
    ) -> torch.Tensor:
        x = self.distilbert.embeddings(input_ids)  # (B, T, D)
        first = first_token_states(self.distilbert.transformer.layer, x, attention_mask, packed)
        first = first.float()
        return self.classifier(torch.relu(self.pre_classifier(first)))


CrossEncoderModule = BertCrossEncoder | DistilBertCrossEncoder


def first_token_states(
    layers: nn.ModuleList, x: torch.Tensor, attention_mask: torch.Tensor, packed: bool
) -> torch.Tensor:
    """(B, T, D) embeddings through every layer -> (B, D) states of the first ([CLS]) token.

    The heads read only that token, so the last layer computes its attention query, output
    projection and FFN for it alone; its keys and values still come from every token.
    """
    states = run_layers(layers[:-1], x, attention_mask, packed)  # (B, T, D)
    last = layers[-1]
    first = states[:, :1]  # (B, 1, D)
    mask = attention_mask_4d(attention_mask)
    if isinstance(last, DistilLayer):
        att = last.attention
        ctx = _attend_from_first(
            att.q_lin(first), att.k_lin(states), att.v_lin(states), mask, att.num_heads
        )
        h = last.sa_layer_norm(first + att.out_lin(ctx))
        out = last.output_layer_norm(h + last.ffn(h))
    elif isinstance(last, BertLayer):
        s = last.attention.self
        ctx = _attend_from_first(
            s.query(first), s.key(states), s.value(states), mask, last.attention.num_heads
        )
        h = last.attention.output(ctx, first)
        out = last.output(last.intermediate(h), h)
    else:
        raise TypeError(f"unexpected layer type {type(last).__name__}")
    return out[:, 0]


def _attend_from_first(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """Attention for one query position: q (B, 1, D), k and v (B, T, D), mask (B, 1, 1, T) ->
    (B, 1, D). Written out (matmul, additive mask, softmax, matmul) so it exports to plain ONNX."""
    b, t, d = k.shape
    dh = d // num_heads
    qh = q.view(b, 1, num_heads, dh).transpose(1, 2)  # (B, H, 1, Dh)
    kh, vh = (x.view(b, t, num_heads, dh).transpose(1, 2) for x in (k, v))  # (B, H, T, Dh)
    bias = (1.0 - mask.to(q.dtype)) * torch.finfo(q.dtype).min  # (B, 1, 1, T)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(dh) + bias  # (B, H, 1, T)
    out = torch.matmul(torch.softmax(scores, dim=-1), vh)  # (B, H, 1, Dh)
    return out.transpose(1, 2).reshape(b, 1, d)


def build_cross_encoder(spec: CrossEncoderSpec) -> CrossEncoderModule:
    """The module for ``spec`` with freshly initialised (untrained) weights."""
    if spec.transformer.architecture == "bert":
        return BertCrossEncoder(spec.transformer, spec.num_labels)
    return DistilBertCrossEncoder(spec.transformer, spec.num_labels)


def load_cross_encoder(spec: CrossEncoderSpec) -> CrossEncoderModule:
    """Build the module for ``spec`` and copy every weight in, checked key by key."""
    module = build_cross_encoder(spec)
    state = {k: v for k, v in read_state_dict(spec.folder).items() if not k.endswith(_BUFFERS)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(
            f"checkpoint in {spec.folder} is missing {len(missing)} tensor(s) for a "
            f"{spec.architecture}, first: {missing[0]!r}"
        )
    if unexpected:
        raise CheckpointError(
            f"checkpoint in {spec.folder} has {len(unexpected)} unexpected tensor(s) for a "
            f"{spec.architecture}, first: {unexpected[0]!r}"
        )
    for key, target in expected.items():
        if tuple(state[key].shape) != tuple(target.shape):
            raise CheckpointError(
                f"tensor {key!r} has shape {tuple(state[key].shape)}, the config implies "
                f"{tuple(target.shape)}"
            )
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return module.eval()
