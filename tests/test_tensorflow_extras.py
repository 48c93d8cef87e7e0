"""Without the optional runtimes, the TensorFlow-family features fail with an error that names
the extra to install (simulated by hiding the modules; runs whether or not they are installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from distilmarco import Encoder
from distilmarco.errors import InputError, MissingExtraError

FIXTURES = Path(__file__).parent / "fixtures"


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError


def test_tensorflow_backend_names_the_extra(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide(monkeypatch, "tensorflow", "tensorflow_text")
    with pytest.raises(MissingExtraError, match=r"distilmarco\[tensorflow\]") as info:
        Encoder(tiny_model_dir, backend="tensorflow")
    assert info.value.extra == "tensorflow"


def test_litert_backend_names_the_extra(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter")
    with pytest.raises(MissingExtraError, match=r"distilmarco\[litert\]"):
        Encoder(tiny_model_dir, backend="litert")


def test_tensorflow_family_refuses_other_precisions_and_devices(tiny_model_dir: Path) -> None:
    with pytest.raises(InputError, match="precision 'bf16' is not available on the litert backend"):
        Encoder(tiny_model_dir, backend="litert", precision="bf16")
    with pytest.raises(InputError, match="litert backend runs on device 'cpu' only"):
        Encoder(tiny_model_dir, backend="litert", device="cuda")
    with pytest.raises(InputError, match="'int8' is not available on the tensorflow backend"):
        Encoder(tiny_model_dir, backend="tensorflow", precision="int8")


def test_h5_reader_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from distilmarco.model.h5_weights import read_h5_state_dict

    hide(monkeypatch, "h5py")
    with pytest.raises(MissingExtraError, match=r"distilmarco\[h5\]"):
        read_h5_state_dict(FIXTURES / "tf-tiny-distilbert" / "tf_model.h5")
