"""The transformer in PyTorch, pooling, config dataclasses and checkpoint loading."""

from typing import TYPE_CHECKING, Any

from distilmarco.model.config import TransformerConfig
from distilmarco.model.hub import DEFAULT_MODEL, ResolvedModel, resolve
from distilmarco.model.st_format import SentenceModelSpec

if TYPE_CHECKING:
    from distilmarco.model.sentence import SentenceModule, load_sentence_module

__all__ = [
    "DEFAULT_MODEL",
    "ResolvedModel",
    "SentenceModelSpec",
    "SentenceModule",
    "TransformerConfig",
    "load_sentence_module",
    "resolve",
]


def __getattr__(name: str) -> Any:
    # The PyTorch module imports torch; ONNX Runtime and OpenVINO users never need it.
    if name in ("SentenceModule", "load_sentence_module"):
        from distilmarco.model import sentence

        return getattr(sentence, name)
    raise AttributeError(f"module 'distilmarco.model' has no attribute {name!r}")
