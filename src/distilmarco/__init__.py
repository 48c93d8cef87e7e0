"""distilmarco: msmarco-distilbert-base-v4 as complete software."""

from typing import TYPE_CHECKING, Any

from distilmarco.encoder import Encoder, EncoderInfo, EncodeStats
from distilmarco.errors import DistilmarcoError
from distilmarco.index import Hit, Index
from distilmarco.model.hub import DEFAULT_MODEL
from distilmarco.reranker import Ranked, Reranker

if TYPE_CHECKING:
    from distilmarco.training import distill, train

__all__ = [
    "DEFAULT_MODEL",
    "DistilmarcoError",
    "EncodeStats",
    "Encoder",
    "EncoderInfo",
    "Hit",
    "Index",
    "Ranked",
    "Reranker",
    "distill",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Training pulls in the trainer and its losses; imported only when asked for.
    if name == "train":
        from distilmarco.training import train

        return train
    if name == "distill":
        from distilmarco.training import distill

        return distill
    raise AttributeError(f"module 'distilmarco' has no attribute {name!r}")
