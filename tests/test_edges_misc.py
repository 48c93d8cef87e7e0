"""Small contracts of the layers under the edges: activations are refused by name, torch's
process-wide thread count is set by the torch backend only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distilmarco.errors import ModelFormatError


def test_activation_fn_refuses_an_unknown_name() -> None:
    from distilmarco.model.transformer import activation_fn

    assert isinstance(activation_fn("relu"), torch.nn.ReLU)
    assert activation_fn("gelu_tanh").approximate == "tanh"  # type: ignore[union-attr]
    with pytest.raises(ModelFormatError, match=r"activation 'swish' is not supported.*gelu"):
        activation_fn("swish")


def test_the_torch_backend_sets_torchs_threads(tiny_model_dir: Path) -> None:
    from distilmarco.backends.torch_backend import TorchBackend
    from distilmarco.encoder import Encoder
    from distilmarco.errors import InputError
    from distilmarco.model.st_format import SentenceModelSpec

    before = torch.get_num_threads()
    other = 2 if before != 2 else 3
    try:
        TorchBackend.from_spec(SentenceModelSpec.from_folder(tiny_model_dir), threads=other)
        assert torch.get_num_threads() == other
        Encoder(tiny_model_dir, backend="torch", threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(InputError, match="threads must be an integer >= 1, got 0"):
            Encoder(tiny_model_dir, backend="torch", threads=0)
    finally:
        torch.set_num_threads(before)
