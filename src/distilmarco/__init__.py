"""distilmarco: msmarco-distilbert-base-v4 as complete software."""

from distilmarco.encoder import Encoder, EncoderInfo, EncodeStats
from distilmarco.errors import DistilmarcoError
from distilmarco.index import Hit, Index
from distilmarco.model.hub import DEFAULT_MODEL

__all__ = [
    "DEFAULT_MODEL",
    "DistilmarcoError",
    "EncodeStats",
    "Encoder",
    "EncoderInfo",
    "Hit",
    "Index",
]
__version__ = "0.1.0"
