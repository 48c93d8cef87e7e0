"""The published figures of msmarco-distilbert-base-v4, reproduced with one call.

| benchmark | setting | metric | published |
|---|---|---|---|
| MS MARCO passage, dev (small): 6,980 queries | full retrieval over the 8,841,823 passages | MRR@10 | 33.79 |
| TREC Deep Learning 2019 passage: 43 judged queries | re-ranking the official BM25 top-1000 | nDCG@10 | 70.24 |

Files (names as distributed by MS MARCO / TREC; put them in one folder, or pass each path):

* ``collection.tsv`` — ``pid<TAB>passage`` (from ``collectionandqueries.tar.gz``)
* ``queries.dev.small.tsv`` and ``qrels.dev.small.tsv`` — dev queries and their judgements
* ``msmarco-test2019-queries.tsv``, ``2019qrels-pass.txt`` — TREC DL 2019 queries and graded qrels
* ``msmarco-passagetest2019-top1000.tsv`` — the BM25 candidates (``qid pid query passage``)

Protocol, as for the published numbers: each passage is embedded alone (no title), truncated at the
model's 512 tokens; queries likewise; cosine similarity; exact search (no ANN). MRR@10 averages
over every judged dev query (a query with no relevant passage in the top 10 scores 0). TREC DL
nDCG@10 uses the graded judgements (0-3) as gains over the 43 judged queries; candidates of
unjudged queries are scored but not averaged. Full dev retrieval embeds 8.8M passages: hours on a
GPU (``--device cuda``), days on a CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from distilmarco.errors import InputError
from distilmarco.evaluation.formats import read_msmarco
from distilmarco.evaluation.ir import IRResult, evaluate_ir

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

log = logging.getLogger(__name__)

PUBLISHED = {"msmarco-dev": ("MRR@10", 0.3379), "trec-dl-2019": ("nDCG@10", 0.7024)}
DEV_FILES = ("collection.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv")
DL19_FILES = (
    "msmarco-test2019-queries.tsv",
    "2019qrels-pass.txt",
    "msmarco-passagetest2019-top1000.tsv",
)


@dataclass(frozen=True)
class Reproduction:
    benchmark: str  # "msmarco-dev" or "trec-dl-2019"
    metric: str
    value: float
    published: float
    result: IRResult

    @property
    def delta(self) -> float:
        return self.value - self.published


@dataclass(frozen=True)
class MsmarcoFiles:
    """Paths of the files one benchmark needs (``None``: not available, skip the benchmark)."""

    dev: tuple[Path, Path, Path] | None  # collection, queries, qrels
    dl19: tuple[Path, Path, Path] | None  # queries, qrels, top-1000 candidates

    @classmethod
    def in_folder(cls, folder: Path) -> MsmarcoFiles:
        if not folder.is_dir():
            raise InputError(f"MS MARCO data folder {folder} does not exist")
        dev = tuple(folder / n for n in DEV_FILES)
        dl19 = tuple(folder / n for n in DL19_FILES)
        found = cls(
            dev if all(p.is_file() for p in dev) else None,  # type: ignore[arg-type]
            dl19 if all(p.is_file() for p in dl19) else None,  # type: ignore[arg-type]
        )
        if found.dev is None and found.dl19 is None:
            raise InputError(
                f"{folder} holds neither the dev files ({', '.join(DEV_FILES)}) nor the TREC DL 2019 "
                f"files ({', '.join(DL19_FILES)})"
            )
        return found


def reproduce(
    encoder: Encoder,
    files: MsmarcoFiles,
    *,
    dev_k: int = 1000,
    batch_tokens: int | None = None,
) -> list[Reproduction]:
    """Run whichever benchmarks ``files`` allows; compare with the published figures."""
    out = []
    if files.dev is not None:
        collection, queries, qrels = files.dev
        data = read_msmarco(collection, queries, qrels, name="msmarco-dev")
        log.info("MS MARCO dev: %d passages, %d queries", len(data.corpus), len(data.queries))
        (result,) = evaluate_ir(
            encoder,
            data,
            modes=("dense",),
            k=dev_k,
            metrics="MRR@10,Recall@1000" if dev_k >= 1000 else "MRR@10",
            batch_tokens=batch_tokens,
        )
        out.append(_reproduction("msmarco-dev", result))
    if files.dl19 is not None:
        queries, qrels, top1000 = files.dl19
        data = read_msmarco(None, queries, qrels, candidates=top1000, name="trec-dl-2019")
        judged = {q: c for q, c in (data.candidates or {}).items() if q in data.qrels}
        log.info("TREC DL 2019: re-ranking the candidates of %d judged queries", len(judged))
        data = replace(
            data,
            candidates=judged,
            queries={q: data.queries[q] for q in judged if q in data.queries},
        )
        (result,) = evaluate_ir(
            encoder,
            data,
            modes=("rerank",),
            k=1000,
            metrics="nDCG@10,MRR@10,MAP",
            relevance_level=2,
            batch_tokens=batch_tokens,
        )
        out.append(_reproduction("trec-dl-2019", result))
    return out


def _reproduction(benchmark: str, result: IRResult) -> Reproduction:
    metric, published = PUBLISHED[benchmark]
    return Reproduction(benchmark, metric, result.scores.mean[metric], published, result)
