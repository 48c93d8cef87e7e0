"""Retrieve and re-rank: the first-stage run's top passages re-scored by a cross-encoder.

The MS MARCO re-ranking setting: per query, the ``depth`` best documents of a first-stage run
(dense, BM25, hybrid or given candidates) are scored with the query by the cross-encoder and
ordered by that score; documents below ``depth`` leave the run (so Recall@k past ``depth`` is
the first stage's recall within its top ``depth``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from distilmarco.errors import InputError
from distilmarco.evaluation.formats import IRDataset, Run
from distilmarco.evaluation.ir import IRResult, Throughput
from distilmarco.evaluation.metrics import evaluate, parse_metrics, rank_run

if TYPE_CHECKING:
    from distilmarco.reranker import Reranker

log = logging.getLogger(__name__)

DEFAULT_DEPTH = 100
SUFFIX = "+cross-encoder"


def cross_encoder_run(
    reranker: Reranker, data: IRDataset, run: Run, depth: int = DEFAULT_DEPTH
) -> tuple[Run, Throughput]:
    """``run`` with each query's top ``depth`` documents re-scored by ``reranker``."""
    if depth < 1:
        raise InputError(f"rerank depth must be >= 1, got {depth}")
    if reranker.num_labels != 1:
        raise InputError(
            f"the cross-encoder gives {reranker.num_labels} scores per pair; re-ranking needs one"
        )
    out: Run = {}
    pairs = tokens = truncated = 0
    seconds = 0.0
    for q, ranking in rank_run(run).items():
        if q not in data.queries:
            continue
        top = [doc for doc, _ in ranking[:depth]]
        if not top:
            out[q] = {}
            continue
        texts = [data.corpus[d].full_text for d in top]
        scores, stats = reranker.score_with_stats(data.queries[q], texts, truncation="count")
        out[q] = {d: float(s) for d, s in zip(top, scores.tolist(), strict=True)}
        pairs, tokens, seconds = pairs + stats.pairs, tokens + stats.tokens, seconds + stats.seconds
        truncated += stats.truncated
    if truncated:
        log.info("%d of %d (query, passage) pair(s) were truncated", truncated, pairs)
    return out, Throughput(pairs, tokens, seconds)


def rerank_results(
    reranker: Reranker,
    data: IRDataset,
    results: Sequence[IRResult],
    *,
    depth: int = DEFAULT_DEPTH,
    metrics: str | Sequence[str],
    relevance_level: int = 1,
) -> list[IRResult]:
    """One re-ranked result per first-stage result, named ``<mode>+cross-encoder``; its
    throughput counts the cross-encoder's pairs (as texts) and tokens."""
    wanted = parse_metrics(metrics)
    out = []
    for first in results:
        run, spent = cross_encoder_run(reranker, data, first.run, depth)
        scores = evaluate(data.qrels, run, wanted, relevance_level=relevance_level)
        note = f"top {depth} of {first.mode} re-scored by {reranker.model_id}"
        out.append(
            IRResult(
                first.dataset,
                first.mode + SUFFIX,
                min(first.k, depth),
                scores,
                first.data,
                spent,
                run,
                (*first.notes, note),
            )
        )
    return out
