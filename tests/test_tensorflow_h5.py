"""Reading ``tf_model.h5`` (Keras HDF5) with h5py: every tensor exactly equal to the PyTorch weights
that transformers' own TF -> PyTorch converter produced from the same file (the committed fixtures
come from ``tests/fixtures/make_tf_h5.py``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("h5py", reason="reading tf_model.h5 needs the 'h5' extra (h5py)")
from safetensors.torch import load_file, save_file

from distilmarco.errors import CheckpointError
from distilmarco.model.checkpoint import load_into, normalise_keys, read_state_dict
from distilmarco.model.config import TransformerConfig
from distilmarco.model.h5_weights import pytorch_name, read_h5_state_dict
from distilmarco.model.transformer import build_encoder

FIXTURES = Path(__file__).parent / "fixtures"
CASES = [("tf-tiny-distilbert", "distilbert"), ("tf-tiny-bert", "bert")]


def _reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / name / "reference.safetensors")


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_h5_tensors_equal_transformers_conversion(name: str, arch: str) -> None:
    ours = read_h5_state_dict(FIXTURES / name / "tf_model.h5")
    ref = _reference(name)
    ref = {k: v for k, v in ref.items() if not k.endswith(("position_ids", "token_type_ids"))}
    # Our keys carry the layer's scope; transformers' are bare module paths.
    assert sorted(k.removeprefix(f"{arch}.") for k in ours) == sorted(ref)
    for key, value in ours.items():
        expected = ref[key.removeprefix(f"{arch}.")]
        assert value.dtype == torch.float32
        assert value.shape == expected.shape, key
        assert torch.equal(value, expected), key


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_h5_loads_into_our_encoder_exactly(name: str, arch: str) -> None:
    folder = FIXTURES / name
    cfg = TransformerConfig.from_file(folder / "config.json")
    assert cfg.architecture == arch
    module = build_encoder(cfg)
    load_into(module, read_state_dict(folder), arch)  # no safetensors there: the h5 is read
    expected = normalise_keys(_reference(name), arch)
    got = module.state_dict()
    assert set(got) == set(expected)
    for key, value in got.items():
        assert torch.equal(value, expected[key]), key


def test_encoder_from_h5_equals_encoder_from_safetensors(tmp_path: Path) -> None:
    """A whole model folder with only tf_model.h5 embeds exactly as the same weights in safetensors."""
    from distilmarco import Encoder

    h5_dir, st_dir = tmp_path / "h5", tmp_path / "st"
    # The fixture's vocabulary has 48 entries: a WordPiece vocabulary of that size.
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *letters, *("##" + c for c in letters[:18])]
    assert len(vocab) == 48
    for d in (h5_dir, st_dir):
        d.mkdir()
        shutil.copy(FIXTURES / "tf-tiny-distilbert" / "config.json", d)
        (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    shutil.copy(FIXTURES / "tf-tiny-distilbert" / "tf_model.h5", h5_dir)
    ref = normalise_keys(_reference("tf-tiny-distilbert"), "distilbert")
    save_file(ref, st_dir / "model.safetensors")
    texts = ["a cab", "dig a big hole", "zebra"]
    a = Encoder(h5_dir).encode(texts)
    b = Encoder(st_dir).encode(texts)
    assert a.shape == (3, 16)
    np.testing.assert_array_equal(a, b)


def test_safetensors_preferred_over_h5(tmp_path: Path) -> None:
    folder = tmp_path / "both"
    shutil.copytree(FIXTURES / "tf-tiny-distilbert", folder)
    marker = {"only.in.safetensors": torch.zeros(1)}
    save_file(marker, folder / "model.safetensors")
    assert set(read_state_dict(folder)) == set(marker)


@pytest.mark.parametrize(
    ("layer", "name", "expected"),
    [
        (
            "distilbert",
            "tf_distil_bert_model/distilbert/transformer/layer_._3/ffn/lin1/kernel:0",
            ("distilbert.transformer.layer.3.ffn.lin1.weight", True),
        ),
        (
            "distilbert",
            "distilbert/embeddings/position_embeddings/embeddings:0",
            ("distilbert.embeddings.position_embeddings.weight", False),
        ),
        (
            "bert",
            "bert/encoder/layer_._11/attention/output/LayerNorm/beta:0",
            ("bert.encoder.layer.11.attention.output.LayerNorm.bias", False),
        ),
        (
            "vocab_transform",
            "tf_distil_bert_for_masked_lm/vocab_transform/bias:0",
            ("vocab_transform.bias", False),
        ),
    ],
)
def test_pytorch_names(layer: str, name: str, expected: tuple[str, bool]) -> None:
    assert pytorch_name(layer, name) == expected


@pytest.mark.parametrize(
    ("layer", "name", "fragment"),
    [
        ("distilbert", "distilbert/embeddings/word_embeddings/weight", "':0'"),
        ("distilbert", "a/b/distilbert/embeddings/LayerNorm/gamma:0", "not scoped"),
        ("distilbert", "distilbert/embeddings/LayerNorm/moving_mean:0", "'moving_mean'"),
    ],
)
def test_pytorch_names_refuse_unknown_layouts(layer: str, name: str, fragment: str) -> None:
    with pytest.raises(CheckpointError, match=fragment):
        pytorch_name(layer, name)


def test_bad_h5_files_name_the_problem(tmp_path: Path) -> None:
    import h5py

    not_h5 = tmp_path / "tf_model.h5"
    not_h5.write_bytes(b"not an hdf5 file")
    with pytest.raises(CheckpointError, match="as HDF5"):
        read_h5_state_dict(not_h5)

    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f.create_dataset("x", data=np.zeros(3, dtype=np.float32))
    with pytest.raises(CheckpointError, match="'layer_names'"):
        read_h5_state_dict(bare)

    # One kernel with the wrong shape: loading into the encoder names the key and both shapes.
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURES / "tf-tiny-distilbert", broken)
    (broken / "reference.safetensors").unlink()
    with h5py.File(broken / "tf_model.h5", "r+") as f:
        group = f["distilbert"]
        name = "tf_distil_bert_model/distilbert/transformer/layer_._1/ffn/lin1/kernel:0"
        del group[name]
        group.create_dataset(name, data=np.zeros((16, 23), dtype=np.float32))
    cfg = TransformerConfig.from_file(broken / "config.json")
    with pytest.raises(CheckpointError, match=r"lin1.weight.*\(23, 16\).*\(24, 16\)"):
        load_into(build_encoder(cfg), read_state_dict(broken), "distilbert")
    assert json.loads((broken / "config.json").read_text())["hidden_dim"] == 24
