"""The in-memory matrix of every live chunk vector that exact dense search scans, caught up from
the store by sequence number; float32, or float16/int8 to save memory (then candidates are rescored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distilmarco import vectors as vec
from distilmarco.index.reader import Changes

_BLOCK = 65536  # rows per matmul block: bounds the temporary score arrays

MATRIX_DTYPES = ("float32", "float16", "int8")


@dataclass
class VectorMatrix:
    """Every live chunk vector as one matrix, with chunk ids and document row ids alongside.

    ``matrix`` is float32, float16 or int8. int8 rows are symmetric with one scale per row
    (``row ≈ matrix[i] * scales[i]``, ``scales[i] = max |row| / 127``): a quarter of the memory.
    Callers rescore the best candidates of a float16 or int8 matrix at full precision.
    """

    keys: np.ndarray  # (N,) int64 chunk ids, ascending
    docs: np.ndarray  # (N,) int64 document row ids
    matrix: np.ndarray  # (N, D) float32, float16 or int8
    alive: np.ndarray  # (N,) bool
    seq: int
    scales: np.ndarray | None = None  # (N,) float32 for int8, else None

    @classmethod
    def empty(cls, dim: int, dtype: str = "float32") -> VectorMatrix:
        if dtype not in MATRIX_DTYPES:
            raise ValueError(f"matrix dtype {dtype!r} is not one of {', '.join(MATRIX_DTYPES)}")
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, dim), np.dtype(dtype)),
            np.zeros(0, bool),
            0,
            np.zeros(0, np.float32) if dtype == "int8" else None,
        )

    @property
    def exact(self) -> bool:
        """True when the stored rows are the full-precision vectors (no rescoring needed)."""
        return self.matrix.dtype == np.float32

    def apply(self, changes: Changes) -> None:
        """Catch up: mark removed chunks dead, append added ones, compact when mostly dead."""
        if len(changes.removed):
            self.alive[_present(self.keys, changes.removed)] = False
        if len(changes.added):
            fresh = changes.added > (self.keys[-1] if len(self.keys) else -1)
            self.keys = np.concatenate([self.keys, changes.added[fresh]])
            self.docs = np.concatenate([self.docs, changes.added_docs[fresh]])
            if self.scales is not None:
                added, scales = quantize_int8(changes.vectors[fresh])
                self.scales = np.concatenate([self.scales, scales])
            else:
                added = changes.vectors[fresh].astype(self.matrix.dtype, copy=False)
            self.matrix = np.concatenate([self.matrix, added])
            self.alive = np.concatenate([self.alive, np.ones(int(fresh.sum()), bool)])
        self.seq = changes.seq
        if len(self.alive) and self.alive.mean() < 0.7:
            self.keys, self.docs = self.keys[self.alive], self.docs[self.alive]
            if self.scales is not None:
                self.scales = self.scales[self.alive]
            self.matrix, self.alive = self.matrix[self.alive], self.alive[self.alive]

    @property
    def live(self) -> int:
        return int(self.alive.sum())

    def rows(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows ``lo:hi`` as float32 (dequantised for int8, widened for float16)."""
        block = self.matrix[lo:hi].astype(np.float32, copy=False)
        if self.scales is not None:
            block *= self.scales[lo:hi, None]
        return block

    def scores(self, query: np.ndarray, similarity: str, mask: np.ndarray | None) -> np.ndarray:
        """Scores of every row (dead or masked rows get -inf), computed in blocks."""
        out = np.empty(len(self.keys), dtype=np.float32)
        for lo in range(0, len(self.keys), _BLOCK):
            hi = lo + _BLOCK
            if self.scales is not None and similarity in ("cosine", "dot"):
                # Scale after the product: one multiply per row instead of one per element.
                block = self.matrix[lo:hi].astype(np.float32)
                out[lo:hi] = (block @ query) * self.scales[lo:hi]
            else:
                out[lo:hi] = vec.scores(self.rows(lo, hi), query, similarity)
        allowed = self.alive if mask is None else self.alive & mask
        out[~allowed] = -np.inf
        return out

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Row positions of the given chunk ids (which must be present)."""
        return np.searchsorted(self.keys, keys)


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: (codes, scales) with ``vectors ≈ codes * scales[:, None]``.

    An all-zero row gets scale 1 (codes 0), so dequantising never divides by zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(len(vectors), np.float32)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def _present(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in sorted ``keys`` of the members of ``wanted`` that are there."""
    pos = np.searchsorted(keys, wanted)
    pos = np.clip(pos, 0, max(len(keys) - 1, 0))
    if not len(keys):
        return np.zeros(0, np.int64)
    return pos[keys[pos] == wanted]
