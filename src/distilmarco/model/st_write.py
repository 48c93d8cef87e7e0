"""Writing a ``SentenceModule`` as a sentence-transformers folder, in the 2.x or the 6.x layout.

The transformer's ``config.json`` and tokenizer files are copied from the folder the module was
loaded from (training changes weights, never shapes or vocabulary); weights go to safetensors with
the checkpoint's own parameter names, so ``st_format`` and sentence-transformers both read them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from distilmarco.errors import InputError
from distilmarco.model.checkpoint import normalise_keys, read_state_dict
from distilmarco.model.heads import Dense
from distilmarco.model.sentence import SentenceModule
from distilmarco.model.st_format import DenseSpec, SentenceModelSpec

Layout = Literal["st2", "st6"]
LAYOUTS: tuple[str, ...] = ("st2", "st6")
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_TYPES: dict[Layout, dict[str, str]] = {
    "st2": {
        k: f"sentence_transformers.models.{k}"
        for k in ("Transformer", "Pooling", "Dense", "Normalize")
    },
    "st6": {
        "Transformer": "sentence_transformers.base.modules.transformer.Transformer",
        "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        "Dense": "sentence_transformers.base.modules.dense.Dense",
        "Normalize": "sentence_transformers.base.modules.normalize.Normalize",
    },
}
_LEGACY_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def save_sentence_model(
    module: SentenceModule,
    folder: Path,
    *,
    layout: Layout = "st6",
    max_seq_length: int | None = None,
) -> Path:
    """Write ``module`` (built from ``module.spec``) as a complete model folder; returns it."""
    if layout not in LAYOUTS:
        raise InputError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    spec = module.spec
    max_len = max_seq_length or spec.max_seq_length
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_transformer(module, spec, folder, layout, max_len)
    entries: list[dict[str, Any]] = [_entry(0, "", "Transformer", layout)]
    pool_dir = folder / "1_Pooling"
    pool_dir.mkdir(exist_ok=True)
    _write_json(pool_dir / "config.json", _pooling_config(spec, layout))
    entries.append(_entry(1, "1_Pooling", "Pooling", layout))
    for i, (head_spec, head) in enumerate(zip(spec.heads, module.heads, strict=True), start=2):
        if isinstance(head_spec, DenseSpec) and isinstance(head, Dense):
            path = f"{i}_Dense"
            (folder / path).mkdir(exist_ok=True)
            _write_json(
                folder / path / "config.json",
                {
                    "in_features": head_spec.in_features,
                    "out_features": head_spec.out_features,
                    "bias": head_spec.bias,
                    "activation_function": head_spec.activation,
                },
            )
            state = {k: v.detach().float().contiguous() for k, v in head.state_dict().items()}
            save_file(state, str(folder / path / "model.safetensors"))
            entries.append(_entry(i, path, "Dense", layout))
        else:
            path = f"{i}_Normalize"
            (folder / path).mkdir(exist_ok=True)
            _write_json(folder / path / "config.json", {})
            entries.append(_entry(i, path, "Normalize", layout))
    _write_json(folder / "modules.json", entries)
    _write_json(
        folder / "config_sentence_transformers.json",
        {
            "model_type": "SentenceTransformer",
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": spec.similarity,
        },
    )
    return folder


def _write_transformer(
    module: SentenceModule, spec: SentenceModelSpec, folder: Path, layout: Layout, max_len: int
) -> None:
    source = spec.transformer_folder
    _write_config(source / "config.json", folder / "config.json", spec)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    tok_cfg = folder / "tokenizer_config.json"
    raw = json.loads(tok_cfg.read_text(encoding="utf-8")) if tok_cfg.is_file() else {}
    raw["model_max_length"] = max_len
    _write_json(tok_cfg, raw)
    state = {k: v.detach().float().contiguous() for k, v in module.encoder.state_dict().items()}
    # Tensors the encoder does not use (BERT's pooler) are kept as they were, so the folder
    # stays complete for libraries that build the whole checkpoint.
    original = normalise_keys_keep_unused(read_state_dict(source), spec)
    for key, value in original.items():
        state.setdefault(key, value.contiguous())
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if layout == "st2":
        bert_cfg: dict[str, Any] = {"max_seq_length": max_len, "do_lower_case": spec.do_lower_case}
    else:
        bert_cfg = {"transformer_task": "feature-extraction"}
        if spec.do_lower_case:
            bert_cfg["do_lower_case"] = True
    _write_json(folder / "sentence_bert_config.json", bert_cfg)


_LAYER_KEYS = {"distilbert": "n_layers", "bert": "num_hidden_layers"}


def _write_config(source: Path, target: Path, spec: SentenceModelSpec) -> None:
    """The source ``config.json``, with the layer count of a student cut from a deeper model."""
    raw = json.loads(source.read_text(encoding="utf-8"))
    key = _LAYER_KEYS[spec.transformer.architecture]
    if raw.get(key, spec.transformer.num_layers) == spec.transformer.num_layers:
        shutil.copyfile(source, target)
        return
    raw[key] = spec.transformer.num_layers
    _write_json(target, raw)


def normalise_keys_keep_unused(
    state: dict[str, torch.Tensor], spec: SentenceModelSpec
) -> dict[str, torch.Tensor]:
    """The source checkpoint's ``pooler.*`` tensors, prefix stripped (nothing else is kept)."""
    prefix = {"distilbert": "distilbert.", "bert": "bert."}[spec.transformer.architecture]
    used = set(normalise_keys(state, spec.transformer.architecture))
    return {
        k.removeprefix(prefix): v
        for k, v in state.items()
        if k.removeprefix(prefix).startswith("pooler.") and k.removeprefix(prefix) not in used
    }


def _pooling_config(spec: SentenceModelSpec, layout: Layout) -> dict[str, Any]:
    hidden = spec.transformer.hidden_size
    modes = spec.pooling.modes
    if layout == "st6":
        return {
            "embedding_dimension": hidden,
            "pooling_mode": modes[0] if len(modes) == 1 else list(modes),
            "include_prompt": True,
        }
    raw: dict[str, Any] = {"word_embedding_dimension": hidden}
    raw.update({flag: mode in modes for mode, flag in _LEGACY_FLAGS.items()})
    return raw


def _entry(idx: int, path: str, kind: str, layout: Layout) -> dict[str, Any]:
    return {"idx": idx, "name": str(idx), "path": path, "type": _TYPES[layout][kind]}


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
