"""Re-ranking with a cross-encoder: query and passage read together, one score per pair.

``Reranker.score`` returns the scores ``sentence_transformers.CrossEncoder.predict`` gives on the
same folder (its default activation included); ``Reranker.rank`` sorts passages by them. Pairs
are tokenised together, grouped into length-sorted token-budget batches and put back in order.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilmarco.backends.cross_runtime import PairBackend, create_pair_backend
from distilmarco.batching import check_batch_tokens, pad_batch, plan_batches
from distilmarco.encoder import Truncation, validate_texts
from distilmarco.errors import BackendError, InputError, TruncationError
from distilmarco.model.hub import resolve
from distilmarco.tokenizer import Tokenizer

if TYPE_CHECKING:
    from distilmarco.model.cross_encoder import ScoreActivation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranked:
    """One passage in a ranking: its position in the input and its score."""

    index: int
    score: float


@dataclass(frozen=True)
class ScoreStats:
    """What one ``score`` call did: pairs, tokens, padding, truncations, time."""

    pairs: int
    tokens: int
    padded_tokens: int
    truncated: int
    batches: int
    seconds: float


class Reranker:
    """A cross-encoder ready to score (query, passage) pairs.

    >>> rr = Reranker("cross-encoder/ms-marco-MiniLM-L6-v2")    # doctest: +SKIP
    >>> rr.rank("how do planes fly?", ["Wings make lift.", "Cats purr."], k=1)  # doctest: +SKIP
    [Ranked(index=0, score=8.1)]
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        revision: str | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        device: str = "cpu",
        max_seq_length: int | None = None,
        batch_tokens: int | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        resolved = resolve(model, revision=revision, cache_dir=cache_dir)
        self.model_id = resolved.model_id
        from distilmarco.model.cross_encoder import CrossEncoderSpec  # its module loads torch

        self.spec = CrossEncoderSpec.from_folder(resolved.folder)
        limit = self.spec.max_seq_length
        if max_seq_length is not None and not 4 <= max_seq_length <= limit:
            raise InputError(f"max_seq_length {max_seq_length} must be between 4 and {limit}")
        self.max_seq_length = max_seq_length or limit
        self.tokenizer = Tokenizer.from_folder(
            self.spec.folder, self.max_seq_length, self.spec.do_lower_case
        )
        self.backend: PairBackend = create_pair_backend(
            self.spec, backend, precision, device, threads=threads, cache_dir=cache_dir
        )
        preferred = max(self.backend.batch_tokens, self.max_seq_length)
        self.batch_tokens = check_batch_tokens(batch_tokens or preferred, self.max_seq_length)

    @property
    def num_labels(self) -> int:
        return self.spec.num_labels

    @property
    def activation(self) -> ScoreActivation:
        return self.spec.activation

    def score(
        self, query: str, passages: Sequence[str], *, truncation: Truncation = "warn"
    ) -> np.ndarray:
        """Scores of (query, passage i): float32 (N,) for one label, (N, num_labels) else."""
        return self.score_with_stats(query, passages, truncation=truncation)[0]

    def score_with_stats(
        self, query: str, passages: Sequence[str], *, truncation: Truncation = "warn"
    ) -> tuple[np.ndarray, ScoreStats]:
        """Like ``score``, also returning what the call did."""
        if truncation not in ("warn", "error", "count"):
            raise InputError(f"truncation {truncation!r} is not one of 'warn', 'error', 'count'")
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        validate_texts(query)
        items = validate_texts(passages) if not isinstance(passages, str) else [passages]
        start = time.perf_counter()
        logits = np.empty((len(items), self.num_labels), dtype=np.float32)
        tokens = padded = batches = 0
        pairs = self.tokenizer.encode_pairs(query, items)
        if truncation == "error" and pairs.truncated.any():
            first = int(np.argmax(pairs.truncated))
            raise TruncationError(
                f"pair {first} is longer than {self.max_seq_length} tokens "
                "(truncation='error'); shorten it or allow truncation"
            )
        for rows in plan_batches(pairs.lengths, self.batch_tokens):
            ids, mask = pad_batch([pairs.ids[i] for i in rows], self.tokenizer.pad_id)
            types, _ = pad_batch([pairs.type_ids[i] for i in rows], 0)
            logits[rows] = self.backend.logits(ids, mask, types)
            tokens += int(mask.sum())
            padded += mask.size
            batches += 1
        bad = ~np.isfinite(logits).all(axis=1)
        if bad.any():
            raise BackendError(
                f"the {self.backend.name}/{self.backend.precision} backend produced non-finite "
                f"scores for {int(bad.sum())} pair(s), first at index {int(np.argmax(bad))}"
            )
        truncated = int(pairs.truncated.sum())
        if truncated and truncation == "warn":
            log.warning(
                "%d of %d (query, passage) pair(s) were longer than %d tokens and were truncated",
                truncated,
                len(items),
                self.max_seq_length,
            )
        scores = apply_activation(logits, self.activation)
        out = scores[:, 0] if self.num_labels == 1 else scores
        stats = ScoreStats(
            len(items), tokens, padded, truncated, batches, time.perf_counter() - start
        )
        return out, stats

    def rank(
        self,
        query: str,
        passages: Sequence[str],
        k: int | None = None,
        *,
        truncation: Truncation = "warn",
    ) -> list[Ranked]:
        """Passages by descending score (ties keep input order); the first ``k`` if given."""
        if self.num_labels != 1:
            raise InputError(
                f"ranking needs a model with one output label; this one has {self.num_labels} "
                "(use score() for per-label scores)"
            )
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InputError(f"k must be a positive integer, got {k!r}")
        scores = self.score(query, passages, truncation=truncation)
        return ranking(scores, k)


def ranking(scores: np.ndarray, k: int | None = None) -> list[Ranked]:
    """(N,) scores -> ``Ranked`` by descending score, ties in input order; at most ``k``."""
    order = np.argsort(-scores, kind="stable")
    if k is not None:
        order = order[:k]
    return [Ranked(index=int(i), score=float(scores[i])) for i in order]


def apply_activation(logits: np.ndarray, activation: ScoreActivation) -> np.ndarray:
    """The score activation in float32, as ``CrossEncoder.predict`` applies it to the logits."""
    x = logits.astype(np.float32, copy=False)
    if activation == "sigmoid":
        # exp of a non-positive number only: no overflow for large |x|.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    if activation == "tanh":
        return np.tanh(x).astype(np.float32)
    return x


def rerank_passages(
    reranker: Reranker, query: str, passages: Sequence[str], k: int | None = None
) -> list[Ranked]:
    """The re-ranking step the index calls: ``passages`` (plain texts, e.g. the first-stage
    hits' passages in hit order) re-scored for ``query``; ``Ranked.index`` points into
    ``passages``, best first, at most ``k``. An empty list gives an empty ranking."""
    if not passages:
        return []
    return reranker.rank(query, passages, k)
