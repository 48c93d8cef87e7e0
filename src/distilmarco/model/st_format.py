"""Reading a sentence-transformers folder (2.x and 6.x layouts) into a typed, validated spec.

Module types in ``modules.json`` are mapped through an allow-list to our own classes; anything else
is refused. No class named in a config file is ever imported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from distilmarco.errors import ModelFormatError
from distilmarco.model.config import TransformerConfig
from distilmarco.model.pooling import POOLING_MODES, PoolingMode

log = logging.getLogger(__name__)

Similarity = Literal["cosine", "dot", "euclidean", "manhattan"]
SIMILARITIES: tuple[str, ...] = ("cosine", "dot", "euclidean", "manhattan")
ModuleKind = Literal["Transformer", "Pooling", "Dense", "Normalize"]

# Where sentence-transformers 2.x-5.x and 6.x put the four module classes we support.
_MODULE_TYPES: dict[str, ModuleKind] = {
    "sentence_transformers.models.Transformer": "Transformer",
    "sentence_transformers.models.Pooling": "Pooling",
    "sentence_transformers.models.Dense": "Dense",
    "sentence_transformers.models.Normalize": "Normalize",
    "sentence_transformers.base.modules.transformer.Transformer": "Transformer",
    "sentence_transformers.sentence_transformer.modules.pooling.Pooling": "Pooling",
    "sentence_transformers.base.modules.dense.Dense": "Dense",
    "sentence_transformers.base.modules.normalize.Normalize": "Normalize",
}
_LEGACY_POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Models published for dot-product scoring whose folders predate ``similarity_fn_name``.
_DOT_PRODUCT_MODELS = ("msmarco-distilbert-base-tas-b", "dot-v5", "dot-prod", "dot-v3")


@dataclass(frozen=True)
class PoolingSpec:
    modes: tuple[PoolingMode, ...]
    dimension: int


@dataclass(frozen=True)
class DenseSpec:
    folder: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass(frozen=True)
class NormalizeSpec:
    pass


Head = DenseSpec | NormalizeSpec


@dataclass(frozen=True)
class SentenceModelSpec:
    """Everything needed to build and run a sentence-embedding model from a folder."""

    folder: Path
    transformer_folder: Path
    transformer: TransformerConfig
    max_seq_length: int
    do_lower_case: bool
    pooling: PoolingSpec
    heads: tuple[Head, ...]
    similarity: Similarity
    layout: Literal["st2", "st6", "plain"]

    @property
    def dimension(self) -> int:
        dense = [h for h in self.heads if isinstance(h, DenseSpec)]
        return dense[-1].out_features if dense else self.pooling.dimension

    @property
    def normalized(self) -> bool:
        """True when the model's own pipeline ends with unit-length vectors."""
        return bool(self.heads) and isinstance(self.heads[-1], NormalizeSpec)

    @classmethod
    def from_folder(cls, folder: Path, name_hint: str = "") -> SentenceModelSpec:
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFormatError(f"{folder} is not a folder")
        modules_file = folder / "modules.json"
        if not modules_file.is_file():
            return _plain_folder(folder, name_hint)
        modules = _read_json(modules_file)
        if not isinstance(modules, list) or not modules:
            raise ModelFormatError(f"{modules_file} must be a non-empty JSON list")
        kinds: list[tuple[ModuleKind, Path]] = []
        layouts = set()
        for i, entry in enumerate(modules):
            if not isinstance(entry, dict) or "type" not in entry:
                raise ModelFormatError(f"{modules_file} entry {i} has no 'type'")
            type_name = entry["type"]
            if type_name not in _MODULE_TYPES:
                raise ModelFormatError(
                    f"module type {type_name!r} in {modules_file} is not supported; "
                    f"supported: Transformer, Pooling, Dense, Normalize"
                )
            layouts.add("st2" if type_name.startswith("sentence_transformers.models.") else "st6")
            kinds.append((_MODULE_TYPES[type_name], folder / str(entry.get("path", ""))))
        if [k for k, _ in kinds[:2]] != ["Transformer", "Pooling"]:
            raise ModelFormatError(
                f"{modules_file} must start with Transformer then Pooling, got {[k for k, _ in kinds]}"
            )
        tf_folder = kinds[0][1]
        transformer = TransformerConfig.from_file(tf_folder / "config.json")
        max_len, lower = _sentence_bert_config(tf_folder, transformer)
        pooling = _pooling(kinds[1][1] / "config.json", transformer.hidden_size)
        heads: list[Head] = []
        for kind, path in kinds[2:]:
            if kind == "Dense":
                heads.append(_dense(path))
            elif kind == "Normalize":
                heads.append(NormalizeSpec())  # has no files; the folder may be absent
            else:
                raise ModelFormatError(
                    f"{kind} may only appear once, at the start of {modules_file}"
                )
        spec = cls(
            folder=folder,
            transformer_folder=tf_folder,
            transformer=transformer,
            max_seq_length=max_len,
            do_lower_case=lower,
            pooling=pooling,
            heads=tuple(heads),
            similarity=_similarity(folder, name_hint or folder.name),
            layout="st2" if layouts == {"st2"} else "st6",
        )
        _check_dimensions(spec)
        return spec


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"missing {path}") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc


def _sentence_bert_config(folder: Path, tf: TransformerConfig) -> tuple[int, bool]:
    """(max_seq_length, do_lower_case): 2.x stores the length here; 6.x leaves it to the tokenizer."""
    raw: dict[str, Any] = {}
    path = folder / "sentence_bert_config.json"
    if path.is_file():
        raw = _read_json(path)
    max_len = raw.get("max_seq_length")
    if max_len is None:
        tok_cfg = folder / "tokenizer_config.json"
        model_max = _read_json(tok_cfg).get("model_max_length") if tok_cfg.is_file() else None
        max_len = tf.max_position_embeddings
        if isinstance(model_max, int) and 0 < model_max < max_len:
            max_len = model_max
    if not isinstance(max_len, int) or max_len < 2:
        raise ModelFormatError(f"max_seq_length {max_len!r} in {path} must be an integer >= 2")
    if max_len > tf.max_position_embeddings:
        raise ModelFormatError(
            f"max_seq_length {max_len} exceeds the model's {tf.max_position_embeddings} positions"
        )
    return max_len, bool(raw.get("do_lower_case", False))


def _pooling(path: Path, hidden: int) -> PoolingSpec:
    raw = _read_json(path)
    if "pooling_mode" in raw:
        mode = raw["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(m for flag, m in _LEGACY_POOLING_FLAGS.items() if raw.get(flag)) or ("mean",)
    for m in modes:
        if m not in POOLING_MODES:
            raise ModelFormatError(
                f"pooling mode {m!r} in {path} is not supported; choose from {POOLING_MODES}"
            )
    if raw.get("include_prompt") is False:
        raise ModelFormatError(f"{path}: include_prompt=false is not supported")
    dim = raw.get("embedding_dimension", raw.get("word_embedding_dimension", hidden))
    if dim != hidden:
        raise ModelFormatError(f"{path} says dimension {dim}, the transformer has {hidden}")
    return PoolingSpec(modes=cast(tuple[PoolingMode, ...], modes), dimension=hidden * len(modes))


def _dense(folder: Path) -> DenseSpec:
    raw = _read_json(folder / "config.json")
    try:
        return DenseSpec(
            folder=folder,
            in_features=int(raw["in_features"]),
            out_features=int(raw["out_features"]),
            bias=bool(raw.get("bias", True)),
            activation=str(raw.get("activation_function", "torch.nn.modules.activation.Tanh")),
        )
    except KeyError as exc:
        raise ModelFormatError(f"{folder / 'config.json'} lacks {exc.args[0]!r}") from None


def _similarity(folder: Path, name: str) -> Similarity:
    cfg = folder / "config_sentence_transformers.json"
    if cfg.is_file():
        value = _read_json(cfg).get("similarity_fn_name")
        if value is not None:
            if value not in SIMILARITIES:
                raise ModelFormatError(
                    f"similarity_fn_name {value!r} in {cfg} is not one of {SIMILARITIES}"
                )
            return cast(Similarity, value)
    lowered = name.lower()
    if any(tag in lowered for tag in _DOT_PRODUCT_MODELS):
        return "dot"
    return "cosine"


def _check_dimensions(spec: SentenceModelSpec) -> None:
    width = spec.pooling.dimension
    for head in spec.heads:
        if isinstance(head, DenseSpec):
            if head.in_features != width:
                raise ModelFormatError(
                    f"Dense in {head.folder} expects {head.in_features} inputs, gets {width}"
                )
            width = head.out_features


def _plain_folder(folder: Path, name_hint: str) -> SentenceModelSpec:
    """A bare transformers folder (no modules.json): mean pooling, as sentence-transformers does."""
    if not (folder / "config.json").is_file():
        raise ModelFormatError(
            f"{folder} is not a model folder: it has neither modules.json nor config.json"
        )
    log.warning("%s has no modules.json; using mean pooling over the transformer", folder)
    transformer = TransformerConfig.from_file(folder / "config.json")
    max_len, lower = _sentence_bert_config(folder, transformer)
    return SentenceModelSpec(
        folder=folder,
        transformer_folder=folder,
        transformer=transformer,
        max_seq_length=max_len,
        do_lower_case=lower,
        pooling=PoolingSpec(modes=("mean",), dimension=transformer.hidden_size),
        heads=(),
        similarity=_similarity(folder, name_hint or folder.name),
        layout="plain",
    )
