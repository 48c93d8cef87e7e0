"""Hard-negative mining from a ``distilmarco.Index``, through its public API only.

For each (query, positive) pair: candidates from dense and BM25 search, each scored with the
model's similarity to the query (the index's document vectors), ranked by that score; the
candidates ranked within [range_min, range_max) that are not a positive of the query, and score
low enough against the positive (absolute / relative margin: likely false negatives are dropped),
are the negatives, best first, up to ``negatives`` per pair.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

import numpy as np

from distilmarco.errors import InputError, NotFoundError
from distilmarco.training.data import Example, read_examples

if TYPE_CHECKING:
    from distilmarco.index import Index

Source = Literal["dense", "bm25"]
_CHUNK = 1024  # pairs whose queries and positives are embedded together
OutputFormat = Literal["n-tuple", "triplet"]


@dataclass(frozen=True)
class MiningConfig:
    negatives: int = 3  # per (query, positive) pair
    range_min: int = 0  # candidates ranked above this (0-based) are skipped
    range_max: int = 50  # candidates ranked at or below this are not considered
    absolute_margin: float | None = None  # keep if score <= positive's score - margin
    relative_margin: float | None = None  # keep if score <= positive's score * (1 - margin)
    sources: tuple[Source, ...] = ("dense", "bm25")
    output_format: OutputFormat = "n-tuple"
    keep_short: bool = False  # keep pairs that found fewer negatives than asked

    def __post_init__(self) -> None:
        if self.negatives < 1:
            raise InputError(f"negatives must be >= 1, got {self.negatives}")
        if not 0 <= self.range_min < self.range_max:
            raise InputError(
                f"rank range [{self.range_min}, {self.range_max}) must have 0 <= min < max"
            )
        if not self.sources or set(self.sources) - {"dense", "bm25"}:
            raise InputError(f"sources {self.sources} must be a non-empty subset of dense, bm25")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise InputError(f"relative_margin must be in [0, 1), got {self.relative_margin}")
        if self.output_format not in ("n-tuple", "triplet"):
            raise InputError(f"output format {self.output_format!r} is not n-tuple or triplet")


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str
    score: float  # the model's similarity to the query
    rank: int  # 0-based, among all candidates of the query by score


@dataclass(frozen=True)
class MiningStats:
    pairs: int
    written: int  # examples written (n-tuples), or lines (triplets)
    short: int  # pairs that found fewer negatives than asked
    negatives: int
    seconds: float


def _key(text: str) -> str:
    return hashlib.sha1(" ".join(text.split()).lower().encode("utf-8")).hexdigest()


def embed(index: Index, texts: list[str]) -> np.ndarray:
    """Texts through the index's model, ready for its similarity (unit length for cosine)."""
    vectors = index.encoder.encode(texts, truncation="count")
    if index.encoder.similarity == "cosine":
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def candidates(
    index: Index, query: str, cfg: MiningConfig, vector: np.ndarray | None = None
) -> list[Candidate]:
    """The query's candidates from every source, scored by the model, best first.
    ``vector``: the query's embedding, when already computed."""
    q = embed(index, [query])[0] if vector is None else vector
    ids: dict[str, None] = {}
    for source in cfg.sources:
        hits = (
            index.search_vector(q, k=cfg.range_max)
            if source == "dense"
            else index.search(query, k=cfg.range_max, mode=source)
        )
        for hit in hits:
            ids.setdefault(hit.id, None)
    if not ids:
        return []
    order = list(ids)
    scores = index.vectors(order) @ q
    ranked = sorted(zip(order, scores.tolist(), strict=True), key=lambda x: (-x[1], x[0]))
    return [
        Candidate(doc_id, index.get(doc_id).text, float(score), rank)
        for rank, (doc_id, score) in enumerate(ranked)
        if rank < cfg.range_max
    ]


def positive_score(index: Index, query: str, positive: str) -> float:
    q, p = embed(index, [query, positive])
    return float(q @ p)


def choose(
    found: list[Candidate], positive: float, excluded: set[str], cfg: MiningConfig
) -> list[Candidate]:
    """Negatives among ``found``: in the rank range, not a positive, below the margins."""
    out: list[Candidate] = []
    for c in found:
        if not cfg.range_min <= c.rank < cfg.range_max:
            continue
        if c.id in excluded or _key(c.text) in excluded:
            continue
        if cfg.absolute_margin is not None and c.score > positive - cfg.absolute_margin:
            continue
        if cfg.relative_margin is not None and c.score > positive * (1 - cfg.relative_margin):
            continue
        out.append(c)
        if len(out) == cfg.negatives:
            break
    return out


def mine(
    index: Index,
    pairs: str | Path | Iterable[Example],
    output: Path,
    cfg: MiningConfig = MiningConfig(),
    positive_ids: dict[str, set[str]] | None = None,
) -> MiningStats:
    """Write (query, positive, negatives) JSONL to ``output`` for every (query, positive) pair.

    Every positive of a query (in ``pairs``, by text; or in ``positive_ids``, by document id)
    is excluded from that query's negatives.
    """
    start = time.perf_counter()
    if index.count() == 0:
        raise NotFoundError(f"the index {index.path} holds no documents to mine from")
    examples: list[Example] = (
        list(read_examples(Path(pairs))) if isinstance(pairs, str | Path) else list(pairs)
    )
    if not examples:
        raise InputError("no (query, positive) pairs to mine for")
    positives: dict[str, set[str]] = {}
    for ex in examples:
        if len(ex.texts) < 2:
            raise InputError(f"{ex.source}: mining needs a query and a positive")
        positives.setdefault(ex.texts[0], set()).add(_key(ex.texts[1]))
    for query, doc_ids in (positive_ids or {}).items():
        positives.setdefault(query, set()).update(doc_ids)
    written = short = total = 0
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for lo in range(0, len(examples), _CHUNK):
            chunk = examples[lo : lo + _CHUNK]
            # Queries and positives embedded in batches, a chunk at a time (bounded memory).
            queries = list(dict.fromkeys(ex.texts[0] for ex in chunk))
            q_vecs = dict(zip(queries, embed(index, queries), strict=True))
            p_vecs = embed(index, [ex.texts[1] for ex in chunk])
            found: dict[str, list[Candidate]] = {}
            for ex, p_vec in zip(chunk, p_vecs, strict=True):
                query, positive = ex.texts[0], ex.texts[1]
                if query not in found:
                    found[query] = candidates(index, query, cfg, q_vecs[query])
                score = float(q_vecs[query] @ p_vec)
                chosen = choose(found[query], score, positives[query], cfg)
                total += len(chosen)
                if len(chosen) < cfg.negatives:
                    short += 1
                    if not cfg.keep_short or not chosen:
                        continue
                written += _write(f, query, positive, chosen, cfg.output_format)
    tmp.replace(output)
    stats = MiningStats(len(examples), written, short, total, time.perf_counter() - start)
    logging.getLogger(__name__).info("mined %s", stats)
    return stats


def _write(f: TextIO, query: str, positive: str, chosen: list[Candidate], fmt: OutputFormat) -> int:
    if fmt == "triplet":
        for c in chosen:
            line = {"query": query, "positive": positive, "negative": c.text, "negative_id": c.id}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return len(chosen)
    row: dict[str, object] = {
        "query": query,
        "positive": positive,
        "negatives": [c.text for c in chosen],
        "negative_ids": [c.id for c in chosen],
    }
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 1
