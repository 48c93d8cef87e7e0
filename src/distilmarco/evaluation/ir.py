"""Retrieval evaluation: dense exact search, BM25 / hybrid through the SQLite index, re-ranking of a
candidate run; TREC run files and JSON reports.

Dense retrieval here is exact and matches the reference protocol (each document embedded whole,
truncated at the model's limit, scored by the model's similarity). BM25 and hybrid go through
:class:`distilmarco.index.Index` in a temporary file, so they measure what ``distilmarco search``
returns (FTS5 BM25 over passages, reciprocal-rank fusion).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilmarco.errors import InputError
from distilmarco.evaluation.formats import DataCheck, IRDataset, Run, check
from distilmarco.evaluation.lines import natural_key
from distilmarco.evaluation.metrics import Scores, evaluate, parse_metrics, rank_run
from distilmarco.vectors import prepare, score_matrix

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

log = logging.getLogger(__name__)

MODES = ("dense", "bm25", "hybrid", "rerank")
DEFAULT_METRICS = "nDCG@10,MRR@10,Recall@100,MAP,P@10"
DOC_CHUNK = 16_384  # documents embedded and scored per step of exact search


@dataclass(frozen=True)
class Throughput:
    """Texts and tokens the model embedded, and the seconds it took."""

    texts: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: Throughput) -> Throughput:
        return Throughput(
            self.texts + other.texts, self.tokens + other.tokens, self.seconds + other.seconds
        )

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def embed(
    encoder: Encoder, texts: Sequence[str], *, batch_tokens: int | None = None
) -> tuple[np.ndarray, Throughput]:
    """Embed with truncation counted (not warned per call), ready for ``encoder.similarity``."""
    if not texts:
        return np.zeros((0, encoder.dimension), np.float32), Throughput()
    vectors, stats = encoder.encode_with_stats(
        list(texts), batch_tokens=batch_tokens, truncation="count"
    )
    if stats.truncated:
        log.info(
            "%d of %d text(s) truncated to %d tokens",
            stats.truncated,
            len(texts),
            encoder.max_seq_length,
        )
    return prepare(vectors, encoder.similarity), Throughput(
        stats.texts, stats.tokens, stats.seconds
    )


def top_k_exact(
    queries: np.ndarray, doc_chunks: Iterator[np.ndarray], k: int, similarity: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over documents arriving in chunks: (Q, k') indices and scores, best first."""
    n_q = queries.shape[0]
    best_i = np.zeros((n_q, 0), np.int64)
    best_s = np.zeros((n_q, 0), np.float32)
    offset = 0
    for docs in doc_chunks:
        s = np.concatenate([best_s, score_matrix(queries, docs, similarity)], axis=1)
        i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(offset, offset + len(docs)), (n_q, len(docs)))],
            axis=1,
        )
        offset += len(docs)
        if s.shape[1] > k:
            part = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s, i = np.take_along_axis(s, part, 1), np.take_along_axis(i, part, 1)
        best_s, best_i = s, i
    order = np.lexsort((best_i, -best_s), axis=1) if best_s.size else np.zeros_like(best_i)
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def dense_run(
    encoder: Encoder, data: IRDataset, k: int, *, batch_tokens: int | None = None
) -> tuple[Run, Throughput]:
    """Exact dense retrieval of the top ``k`` documents per query."""
    qids = list(data.queries)
    doc_ids = list(data.corpus)
    if not qids or not doc_ids:
        return {}, Throughput()
    q_vec, spent = embed(encoder, [data.queries[q] for q in qids], batch_tokens=batch_tokens)
    totals = [spent]

    def chunks() -> Iterator[np.ndarray]:
        for lo in range(0, len(doc_ids), DOC_CHUNK):
            texts = [data.corpus[d].full_text for d in doc_ids[lo : lo + DOC_CHUNK]]
            vectors, used = embed(encoder, texts, batch_tokens=batch_tokens)
            totals.append(used)
            yield vectors

    idx, scores = top_k_exact(q_vec, chunks(), k, encoder.similarity)
    run = {
        q: {doc_ids[j]: float(s) for j, s in zip(idx[r].tolist(), scores[r].tolist(), strict=True)}
        for r, q in enumerate(qids)
    }
    return run, sum(totals, Throughput())


def rerank_run(
    encoder: Encoder, data: IRDataset, *, batch_tokens: int | None = None
) -> tuple[Run, Throughput]:
    """Score every candidate of ``data.candidates`` with the model (each passage embedded once)."""
    if data.candidates is None:
        raise InputError("re-ranking needs a candidate run (--candidates)")
    qids = [q for q in data.candidates if q in data.queries]
    missing = [q for q in data.candidates if q not in data.queries]
    if missing:
        log.warning(
            "%d candidate quer(y/ies) have no text and are skipped, e.g. %s",
            len(missing),
            missing[0],
        )
    doc_ids = sorted({d for q in qids for d in data.candidates[q]})
    missing_docs = [d for d in doc_ids if d not in data.corpus]
    if missing_docs:
        raise InputError(
            f"{len(missing_docs)} candidate document(s) are not in the corpus, e.g. {missing_docs[0]}"
        )
    q_vec, spent_q = embed(encoder, [data.queries[q] for q in qids], batch_tokens=batch_tokens)
    d_vec, spent_d = embed(
        encoder, [data.corpus[d].full_text for d in doc_ids], batch_tokens=batch_tokens
    )
    row = {d: i for i, d in enumerate(doc_ids)}
    run: Run = {}
    for r, q in enumerate(qids):
        cands = list(data.candidates[q])
        s = score_matrix(q_vec[r : r + 1], d_vec[[row[d] for d in cands]], encoder.similarity)[0]
        run[q] = {d: float(v) for d, v in zip(cands, s.tolist(), strict=True)}
    return run, spent_q + spent_d


def index_runs(
    encoder: Encoder, data: IRDataset, k: int, modes: Sequence[str]
) -> tuple[dict[str, Run], Throughput]:
    """BM25 and/or hybrid runs through a temporary :class:`Index` holding the corpus."""
    from distilmarco.index import Index

    ids = [d for d, doc in data.corpus.items() if doc.full_text.strip()]
    if len(ids) < len(data.corpus):
        log.warning(
            "%d empty document(s) cannot be indexed and are never returned by BM25/hybrid",
            len(data.corpus) - len(ids),
        )
    with (
        tempfile.TemporaryDirectory(prefix="distilmarco-eval-") as tmp,
        Index(Path(tmp) / "eval.db", encoder, ann="never") as index,
    ):
        start = time.perf_counter()
        tokens = 0
        for lo in range(0, len(ids), 4096):
            part = ids[lo : lo + 4096]
            texts = [data.corpus[d].full_text for d in part]
            index.add(part, texts)
            tokens += int(np.sum(encoder.tokenizer.count(texts)))
        spent = Throughput(len(ids), tokens, time.perf_counter() - start)
        runs: dict[str, Run] = {}
        for mode in modes:
            runs[mode] = {}
            for q, text in data.queries.items():
                hits = index.search(text, k, mode=mode, exact=True) if text.strip() else []  # type: ignore[arg-type]
                runs[mode][q] = {h.id: h.score for h in hits}
    return runs, spent


@dataclass(frozen=True)
class IRResult:
    dataset: str
    mode: str
    k: int
    scores: Scores
    data: DataCheck
    throughput: Throughput
    run: Run = field(repr=False)
    notes: tuple[str, ...] = ()


def evaluate_ir(
    encoder: Encoder,
    data: IRDataset,
    *,
    modes: Sequence[str] = ("dense",),
    k: int = 100,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    relevance_level: int = 1,
    batch_tokens: int | None = None,
) -> list[IRResult]:
    """Retrieve (or re-rank) with each mode and score the runs; one result per mode."""
    wanted = parse_metrics(metrics)
    for mode in modes:
        if mode not in MODES:
            raise InputError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    need = max((m.k or 0) for m in wanted)
    if need > k:
        raise InputError(
            f"metric cutoff {need} is deeper than the retrieval depth k={k}; raise --k"
        )
    data_check = check(data)
    for line in data_check.warnings():
        log.warning("%s: %s", data.name, line)
    runs: dict[str, tuple[Run, Throughput]] = {}
    if "dense" in modes:
        runs["dense"] = dense_run(encoder, data, k, batch_tokens=batch_tokens)
    if "rerank" in modes:
        runs["rerank"] = rerank_run(encoder, data, batch_tokens=batch_tokens)
    lexical = [m for m in modes if m in ("bm25", "hybrid")]
    empty = sum(1 for doc in data.corpus.values() if not doc.full_text.strip())
    notes = data.notes
    if lexical and empty:
        notes += (f"{empty} empty document(s) left out of the BM25/hybrid index",)
    if lexical:
        by_mode, spent = index_runs(encoder, data, k, lexical)
        runs.update({m: (r, spent) for m, r in by_mode.items()})
    return [
        IRResult(
            data.name,
            mode,
            k,
            evaluate(data.qrels, runs[mode][0], wanted, relevance_level=relevance_level),
            data_check,
            runs[mode][1],
            runs[mode][0],
            notes if mode in lexical else data.notes,
        )
        for mode in modes
    ]


def write_trec_run(path: Path, run: Run, tag: str) -> None:
    """``qid Q0 doc rank score tag`` lines, best first, ties ordered as the metrics order them."""
    tag = "_".join(tag.split()) or "distilmarco"
    with open(path, "w", encoding="utf-8") as f:
        for q, ranking in sorted(rank_run(run).items(), key=lambda item: natural_key(item[0])):
            for rank, (doc, score) in enumerate(ranking, start=1):
                f.write(f"{q} Q0 {doc} {rank} {score:.6f} {tag}\n")


def report(result: IRResult, *, per_query: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of one result."""
    cov = result.scores.coverage
    out: dict[str, Any] = {
        "dataset": result.dataset,
        "mode": result.mode,
        "k": result.k,
        "metrics": result.scores.mean,
        "queries": {
            "scored": cov.scored,
            "not_retrieved": len(cov.not_retrieved),
            "unjudged": len(cov.unjudged),
            "no_relevant_judgement": len(cov.no_relevant),
            "unjudged_examples": list(cov.unjudged[:5]),
            "no_relevant_examples": list(cov.no_relevant[:5]),
        },
        "data": asdict(result.data),
        "warnings": result.data.warnings(),
        "notes": list(result.notes),
        "throughput": {
            **asdict(result.throughput),
            "texts_per_second": result.throughput.texts_per_second,
            "tokens_per_second": result.throughput.tokens_per_second,
        },
    }
    if per_query:
        out["per_query"] = result.scores.per_query
    return out
