"""IR metrics as thin wrappers over ``trec_eval`` (through ``pytrec_eval``).

The numbers are trec_eval's; this module only fixes the conventions around it, so that every
caller gets the same answer for the same run:

* **Ties** are broken before scoring the way trec_eval does it (score descending, then document id
  descending), and the run is rewritten with strictly decreasing scores, so no implementation can
  order a tie differently.
* **MRR@k** is trec_eval's ``recip_rank`` on the run cut to its top ``k``.
* **Queries** with at least one relevant judgement are the ones averaged. A judged query missing
  from the run, or with an empty ranking, scores 0 (trec_eval ``-c``). Queries in the run without
  judgements, and judged queries with no relevant document, are counted in :class:`Coverage` and
  left out of the mean, never silently.
* **Gains** are the integer judgements (nDCG uses them as graded gains; negative ones are 0);
  binary metrics count a document relevant when its judgement is ``>= relevance_level``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distilmarco.errors import InputError, MissingExtraError

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

_KINDS = {
    "mrr": "recip_rank",
    "ndcg": "ndcg_cut",
    "recall": "recall",
    "p": "P",
    "map": "map_cut",
}
_ALIASES = {"precision": "p", "r": "recall", "rr": "mrr"}
_PATTERN = re.compile(r"^([a-z]+)(?:@(\d+))?$")


@dataclass(frozen=True)
class Metric:
    """One metric: ``kind`` in mrr/ndcg/recall/p/map and an optional cutoff ``k``."""

    kind: str
    k: int | None = None

    @classmethod
    def parse(cls, text: str) -> Metric:
        """``"nDCG@10"``, ``"MRR@10"``, ``"Recall@100"``, ``"P@5"``, ``"MAP"``, ``"map@1000"``."""
        match = _PATTERN.match(text.strip().lower())
        kind = _ALIASES.get(match.group(1), match.group(1)) if match else ""
        if not match or kind not in _KINDS:
            raise InputError(
                f"unknown metric {text!r}; use one of MRR@k, nDCG@k, Recall@k, P@k, MAP, "
                "MAP@k, MRR, nDCG (e.g. nDCG@10)"
            )
        k = int(match.group(2)) if match.group(2) else None
        if k is not None and k < 1:
            raise InputError(f"metric {text!r}: the cutoff must be >= 1")
        if k is None and kind in ("recall", "p"):
            raise InputError(f"metric {text!r} needs a cutoff, e.g. {kind}@10")
        return cls(kind, k)

    @property
    def name(self) -> str:
        label = {"mrr": "MRR", "ndcg": "nDCG", "recall": "Recall", "p": "P", "map": "MAP"}
        return label[self.kind] + (f"@{self.k}" if self.k else "")


def parse_metrics(texts: str | Sequence[str]) -> tuple[Metric, ...]:
    """Metrics from a comma-separated string or a list; duplicates removed, order kept."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    metrics = tuple(dict.fromkeys(Metric.parse(t) for t in items if t.strip()))
    if not metrics:
        raise InputError("no metrics given; e.g. --metrics nDCG@10,MRR@10,Recall@100")
    return metrics


@dataclass(frozen=True)
class Coverage:
    """Which queries a score averages over, and which it could not (all ids sorted)."""

    scored: int  # judged queries with at least one relevant document: the denominator
    not_retrieved: tuple[str, ...]  # judged, but absent from the run or with an empty ranking
    unjudged: tuple[str, ...]  # in the run, no judgements at all
    no_relevant: tuple[str, ...]  # judged, but no judgement reaches relevance_level


@dataclass(frozen=True)
class Scores:
    """Mean and per-query values of each metric (keys are ``Metric.name``)."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]
    coverage: Coverage


def rank_run(run: Run) -> dict[str, list[tuple[str, float]]]:
    """Each query's ranking as (doc, score), best first; ties broken like trec_eval."""
    ranked = {}
    for qid, docs in run.items():
        by_doc = sorted(docs.items(), key=lambda item: item[0], reverse=True)
        ranked[qid] = sorted(by_doc, key=lambda item: -float(item[1]))  # stable: id desc in ties
    return ranked


def evaluate(
    qrels: Qrels,
    run: Run,
    metrics: str | Sequence[str | Metric],
    *,
    relevance_level: int = 1,
) -> Scores:
    """Score ``run`` against ``qrels``; see the module notes for ties and missing queries."""
    pytrec_eval = _pytrec_eval()
    wanted = tuple(m if isinstance(m, Metric) else Metric.parse(m) for m in _as_list(metrics))
    if not wanted:
        raise InputError("no metrics given")
    if relevance_level < 1:
        raise InputError(f"relevance_level must be >= 1, got {relevance_level}")
    judged = {
        str(q): {str(d): max(int(g), 0) for d, g in docs.items()} for q, docs in qrels.items()
    }
    scored = sorted(
        q for q, docs in judged.items() if any(g >= relevance_level for g in docs.values())
    )
    ranked = rank_run(run)
    coverage = Coverage(
        scored=len(scored),
        not_retrieved=tuple(q for q in sorted(judged) if not ranked.get(q)),
        unjudged=tuple(sorted(q for q in ranked if q not in judged)),
        no_relevant=tuple(sorted(set(judged) - set(scored))),
    )
    per_query: dict[str, dict[str, float]] = {q: {} for q in scored}
    qrels_scored = {q: judged[q] for q in scored}
    for cut, group in _by_run_cut(wanted).items():
        trec_run = {
            q: {d: float(len(docs) - i) for i, (d, _) in enumerate(docs[:cut])}
            for q, docs in ranked.items()
            if q in qrels_scored and docs
        }
        measures = {_measure(m) for m in group}
        evaluator = pytrec_eval.RelevanceEvaluator(
            qrels_scored, measures, relevance_level=relevance_level
        )
        results = evaluator.evaluate(trec_run) if trec_run else {}
        for m in group:
            key = _measure(m).replace(".", "_")
            for q in scored:
                per_query[q][m.name] = float(results.get(q, {}).get(key, 0.0))
    mean = {
        m.name: (math.fsum(per_query[q][m.name] for q in scored) / len(scored) if scored else 0.0)
        for m in wanted
    }
    return Scores(mean, per_query, coverage)


def _as_list(metrics: str | Sequence[str | Metric]) -> list[str | Metric]:
    return (
        [t for t in metrics.split(",") if t.strip()] if isinstance(metrics, str) else list(metrics)
    )


def _measure(m: Metric) -> str:
    if m.kind == "mrr":
        return "recip_rank"
    if m.k is None:
        return {"ndcg": "ndcg", "map": "map"}[m.kind]
    return f"{_KINDS[m.kind]}.{m.k}"


def _by_run_cut(metrics: Sequence[Metric]) -> dict[int | None, list[Metric]]:
    """MRR@k needs the run cut to k; every other metric reads the whole run."""
    groups: dict[int | None, list[Metric]] = {}
    for m in metrics:
        groups.setdefault(m.k if m.kind == "mrr" else None, []).append(m)
    return groups


def _pytrec_eval():  # type: ignore[no-untyped-def]
    try:
        import pytrec_eval
    except ImportError as exc:
        raise MissingExtraError("pytrec_eval", "eval", "IR metrics") from exc
    return pytrec_eval
