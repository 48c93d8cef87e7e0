"""The orthonormal rotation that Panorama parts hold their vectors (and take their queries) in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distilmarco.index.ann.native import faiss_module

ROTATION_SAMPLE = 50_000  # vectors the principal axes are estimated from, at most
ROTATE_ONE_BY_ONE = 8  # rows up to which ``Rotation.apply`` keeps off numpy's BLAS threads


@dataclass(frozen=True)
class Rotation:
    """An orthonormal change of basis onto principal axes, most variance first: ``x`` becomes
    ``(x - mean) @ basis.T``. Euclidean distances are kept (to float32 rounding), and most of a
    vector's length lands in its first coordinates, which is what lets a Panorama part rule a
    candidate out after reading only those. Fitted once, on the first vectors an index gets; a
    later shift in the data only weakens the pruning, never changes an answer."""

    mean: np.ndarray  # (D,) float32
    basis: np.ndarray  # (D, D) float32, orthonormal rows by decreasing variance

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Rotation:
        sample = vectors[:: max(1, len(vectors) // ROTATION_SAMPLE)].astype(np.float64)
        mean = sample.mean(axis=0)
        centred = sample - mean
        _, axes = np.linalg.eigh(centred.T @ centred)  # ascending variance
        basis = np.ascontiguousarray(axes[:, ::-1].T, dtype=np.float32)
        return cls(mean.astype(np.float32), basis)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate a batch: numpy's BLAS, on every core, for many rows; a few (an add of one
        short document, say) one at a time like a query (see ``apply_one``)."""
        if len(vectors) <= ROTATE_ONE_BY_ONE:
            return np.concatenate([self.apply_one(v) for v in vectors], axis=0)
        return np.ascontiguousarray((vectors - self.mean) @ self.basis.T, dtype=np.float32)

    def apply_one(self, query: np.ndarray) -> np.ndarray:
        """Rotate one query, shape (1, D), on this thread alone with FAISS's SIMD inner products:
        numpy's BLAS would leave a worker spinning on the core where another part is searched."""
        centred = np.ascontiguousarray(query.reshape(-1) - self.mean, dtype=np.float32)
        out = np.empty((1, len(self.mean)), np.float32)
        faiss = faiss_module()
        faiss.fvec_inner_products_ny(
            faiss.swig_ptr(out),
            faiss.swig_ptr(centred),
            faiss.swig_ptr(self.basis),
            len(self.mean),
            len(self.mean),
        )
        return out

    def to_bytes(self) -> bytes:
        return self.mean.astype("<f4").tobytes() + self.basis.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, raw: np.ndarray, dimension: int) -> Rotation:
        """From ``size(dimension)`` bytes of ``to_bytes`` (the file's layout check sized them)."""
        values = raw.view("<f4").astype(np.float32)
        return cls(values[:dimension].copy(), values[dimension:].reshape(dimension, dimension))

    @staticmethod
    def size(dimension: int) -> int:
        return 4 * dimension * (dimension + 1)
