"""Checkpoint and folder-format handling: strict keys, prefixes, pickles, allow-listed modules."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from distilmarco import Encoder
from distilmarco.errors import CheckpointError, ModelFormatError
from distilmarco.model.config import TransformerConfig
from distilmarco.model.st_format import SentenceModelSpec


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def rewrite_weights(folder: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors")


def test_missing_tensor_is_named(model_copy: Path) -> None:
    rewrite_weights(model_copy, lambda s: s.pop("transformer.layer.1.ffn.lin2.bias"))
    with pytest.raises(
        CheckpointError, match=r"missing 1 tensor.*'transformer.layer.1.ffn.lin2.bias'"
    ):
        Encoder(model_copy)


def test_unexpected_tensor_is_named(model_copy: Path) -> None:
    rewrite_weights(model_copy, lambda s: s.update({"mystery.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*'mystery.weight'"):
        Encoder(model_copy)


def test_wrong_shape_is_named(model_copy: Path) -> None:
    rewrite_weights(model_copy, lambda s: s.update({"embeddings.LayerNorm.weight": torch.ones(31)}))
    with pytest.raises(CheckpointError, match=r"'embeddings.LayerNorm.weight' has shape \(31,\)"):
        Encoder(model_copy)


def test_known_prefix_and_unused_heads_are_handled(model_copy: Path, tiny_encoder: Encoder) -> None:
    def prefix(state: dict[str, torch.Tensor]) -> None:
        for key in list(state):
            state[f"distilbert.{key}"] = state.pop(key)
        state["vocab_projector.bias"] = torch.zeros(30522)  # an MLM head the encoder never uses

    rewrite_weights(model_copy, prefix)
    texts = ["prefixed checkpoints load the same"]
    np.testing.assert_array_equal(Encoder(model_copy).encode(texts), tiny_encoder.encode(texts))


def test_pickled_weights_load_only_through_weights_only(
    model_copy: Path, tiny_encoder: Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    state = load_file(model_copy / "model.safetensors")
    (model_copy / "model.safetensors").unlink()
    torch.save(state, model_copy / "pytorch_model.bin")
    texts = ["from a pickle, safely"]
    np.testing.assert_array_equal(Encoder(model_copy).encode(texts), tiny_encoder.encode(texts))
    assert "weights_only=True" in caplog.text
    # A pickle that would run code is refused, not executed.
    torch.save({"evil": Path("/tmp")}, model_copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"could not read .*pytorch_model.bin safely"):
        Encoder(model_copy)


def test_corrupt_safetensors_is_a_clear_error(model_copy: Path) -> None:
    data = (model_copy / "model.safetensors").read_bytes()
    (model_copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="could not read"):
        Encoder(model_copy)


def test_no_weights_at_all(model_copy: Path) -> None:
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights in .*expected one of model.safetensors"):
        Encoder(model_copy)


def edit_json(path: Path, change: Callable[[object], object]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def test_unknown_module_type_is_refused(model_copy: Path) -> None:
    def add_lstm(modules: object) -> object:
        assert isinstance(modules, list)
        return [*modules, {"idx": 2, "name": "2", "path": "2_LSTM", "type": "my_pkg.Evil"}]

    edit_json(model_copy / "modules.json", add_lstm)
    with pytest.raises(ModelFormatError, match=r"module type 'my_pkg.Evil' .* is not supported"):
        Encoder(model_copy)


def test_unknown_pooling_mode_is_refused(model_copy: Path) -> None:
    edit_json(model_copy / "1_Pooling" / "config.json", lambda c: {**c, "pooling_mode": "median"})  # type: ignore[dict-item]
    with pytest.raises(ModelFormatError, match="pooling mode 'median'"):
        Encoder(model_copy)


def test_unsupported_architecture_is_refused(model_copy: Path) -> None:
    edit_json(model_copy / "config.json", lambda c: {**c, "model_type": "roberta"})  # type: ignore[dict-item]
    with pytest.raises(ModelFormatError, match="model_type 'roberta' is not supported"):
        Encoder(model_copy)


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match=r"neither modules.json nor config.json"):
        Encoder(tmp_path)


def test_vocab_only_tokenizer_gives_identical_ids(
    model_copy: Path, tiny_encoder: Encoder, minilm_dir: Path
) -> None:
    (model_copy / "tokenizer.json").unlink()
    shutil.copy(minilm_dir / "vocab.txt", model_copy / "vocab.txt")  # same uncased vocabulary
    texts = ["Vocab-only folders tokenise the SAME way, naïvely!", "e-mail: x@y.z 3.14"]
    np.testing.assert_array_equal(Encoder(model_copy).encode(texts), tiny_encoder.encode(texts))


def test_similarity_is_read_or_inferred(model_copy: Path, tmp_path: Path) -> None:
    assert SentenceModelSpec.from_folder(model_copy).similarity == "cosine"
    edit_json(
        model_copy / "config_sentence_transformers.json",
        lambda c: {**c, "similarity_fn_name": "dot"},  # type: ignore[dict-item]
    )
    assert SentenceModelSpec.from_folder(model_copy).similarity == "dot"
    (model_copy / "config_sentence_transformers.json").unlink()
    tas_b = tmp_path / "msmarco-distilbert-base-tas-b"
    shutil.copytree(model_copy, tas_b)
    assert SentenceModelSpec.from_folder(tas_b).similarity == "dot"  # published for dot product
    assert SentenceModelSpec.from_folder(model_copy).similarity == "cosine"


def test_msmarco_v4_config_reads_as_published() -> None:
    published = {
        "model_type": "distilbert", "activation": "gelu", "dim": 768, "hidden_dim": 3072,
        "n_heads": 12, "n_layers": 6, "max_position_embeddings": 512, "vocab_size": 30522,
        "sinusoidal_pos_embds": False, "pad_token_id": 0,
    }  # fmt: skip
    cfg = TransformerConfig.from_dict(published)
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size) == (
        768,
        6,
        12,
        3072,
    )
    assert (cfg.activation, cfg.layer_norm_eps, cfg.type_vocab_size) == ("gelu", 1e-12, 0)
    with pytest.raises(ModelFormatError, match="activation 'swish' is not supported"):
        TransformerConfig.from_dict({**published, "activation": "swish"})
