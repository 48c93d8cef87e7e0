"""What people use the vectors for: similarity, duplicates, clustering, recommendation,
classification and maps. Pure functions over arrays; the CLI and server sit on top.

Submodules import scikit-learn and matplotlib lazily, inside the functions that need them.
"""

from __future__ import annotations

from distilmarco.apps.classify import (
    Classifier,
    ProtocolReport,
    fit_classifier,
    mteb_protocol,
)
from distilmarco.apps.similarity import TopK, iter_blocks, matrix, pairwise, top_k
from distilmarco.apps.zero_shot import ZeroShot, zero_shot

__all__ = [
    "Classifier",
    "ProtocolReport",
    "TopK",
    "ZeroShot",
    "fit_classifier",
    "iter_blocks",
    "matrix",
    "mteb_protocol",
    "pairwise",
    "top_k",
    "zero_shot",
]
