"""The transformer in PyTorch, pooling, config dataclasses and checkpoint loading."""

from distilmarco.model.config import TransformerConfig
from distilmarco.model.hub import DEFAULT_MODEL, ResolvedModel, resolve
from distilmarco.model.sentence import SentenceModule, load_sentence_module
from distilmarco.model.st_format import SentenceModelSpec

__all__ = [
    "DEFAULT_MODEL",
    "ResolvedModel",
    "SentenceModelSpec",
    "SentenceModule",
    "TransformerConfig",
    "load_sentence_module",
    "resolve",
]
