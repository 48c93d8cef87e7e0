"""IR metrics: values equal hand-computed ones and an independent reference written here, to 1e-9,
including ties, judged queries missing from the run, empty rankings and unjudged queries."""

from __future__ import annotations

import math
import random

import pytest

from distilmarco.errors import InputError
from distilmarco.evaluation.metrics import Metric, evaluate, parse_metrics


def _ranking(docs: dict[str, float]) -> list[str]:
    """trec_eval's order: score descending, ties by document id descending."""
    by_id = sorted(docs.items(), key=lambda it: it[0], reverse=True)
    return [d for d, _ in sorted(by_id, key=lambda it: -it[1])]


def reference(qrels: dict, run: dict, kind: str, k: int | None, level: int = 1) -> dict[str, float]:
    """Textbook definitions, per judged query with a relevant document; absent/empty run = 0."""
    out = {}
    for q, judged in qrels.items():
        rel = {d: g for d, g in judged.items() if g >= level}
        if not rel:
            continue
        ranked = _ranking(run.get(q, {}))
        top = ranked[:k] if k else ranked
        if kind == "mrr":
            out[q] = next((1 / (i + 1) for i, d in enumerate(top) if d in rel), 0.0)
        elif kind == "recall":
            out[q] = sum(d in rel for d in top) / len(rel)
        elif kind == "p":
            out[q] = sum(d in rel for d in top) / k
        elif kind == "map":
            hits, total = 0, 0.0
            for i, d in enumerate(top):
                if d in rel:
                    hits += 1
                    total += hits / (i + 1)
            out[q] = total / len(rel)
        elif kind == "ndcg":
            gains = [max(judged.get(d, 0), 0) for d in top]
            dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
            ideal = sorted((max(g, 0) for g in judged.values()), reverse=True)[: k or None]
            idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
            out[q] = dcg / idcg if idcg else 0.0
    return out


QRELS = {
    "q1": {"d1": 1, "d2": 2, "d9": 0},
    "q2": {"d3": 1},
    "q3": {"d5": 1},  # judged, absent from the run
    "q4": {"d5": 0},  # judged, nothing relevant
    "q5": {"d1": 3, "d7": 1},  # judged, empty ranking
}
RUN = {
    "q1": {"d1": 0.5, "d2": 0.5, "d4": 0.9},  # d1/d2 tie: d2 ranks first (id descending)
    "q2": {"d8": 2.0, "d3": 1.0},
    "q4": {"d5": 1.0},
    "q5": {},
    "q9": {"d1": 1.0},  # no judgements
}


def test_hand_computed_values_with_ties_missing_and_empty() -> None:
    s = evaluate(QRELS, RUN, "MRR@10,nDCG@10,Recall@2,P@2,MAP")
    # q1: d4 (0), d2 (gain 2), d1 (gain 1); q2: d8 (0), d3 (1); q3, q5: 0.
    assert s.per_query["q1"]["MRR@10"] == pytest.approx(1 / 2, abs=1e-12)
    assert s.per_query["q2"]["MRR@10"] == pytest.approx(1 / 2, abs=1e-12)
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert s.per_query["q1"]["nDCG@10"] == pytest.approx(dcg / idcg, abs=1e-12)
    assert s.per_query["q1"]["MAP"] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-12)
    assert s.per_query["q1"]["Recall@2"] == pytest.approx(1 / 2, abs=1e-12)
    assert s.per_query["q5"] == {
        "MRR@10": 0.0,
        "nDCG@10": 0.0,
        "Recall@2": 0.0,
        "P@2": 0.0,
        "MAP": 0.0,
    }
    # mean over q1, q2, q3, q5 (q4 has no relevant document; q9 is unjudged)
    assert s.coverage.scored == 4
    assert s.mean["MRR@10"] == pytest.approx((0.5 + 0.5 + 0 + 0) / 4, abs=1e-12)
    assert s.mean["P@2"] == pytest.approx((0.5 + 0.5) / 4, abs=1e-12)
    assert s.coverage.not_retrieved == ("q3", "q5")
    assert s.coverage.unjudged == ("q9",)
    assert s.coverage.no_relevant == ("q4",)


def test_mrr_cutoff_is_applied() -> None:
    qrels = {"q": {"d3": 1}}
    run = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    assert evaluate(qrels, run, "MRR@2").mean["MRR@2"] == 0.0
    assert evaluate(qrels, run, "MRR@3").mean["MRR@3"] == pytest.approx(1 / 3, abs=1e-12)
    assert evaluate(qrels, run, "MRR").mean["MRR"] == pytest.approx(1 / 3, abs=1e-12)


def test_relevance_level_for_binary_metrics() -> None:
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    s = evaluate(qrels, run, "MRR@10,Recall@1", relevance_level=2)
    assert s.mean["MRR@10"] == pytest.approx(0.5, abs=1e-12)
    assert s.mean["Recall@1"] == 0.0


def test_empty_run_scores_zero_for_every_judged_query() -> None:
    s = evaluate(QRELS, {}, "nDCG@10,MAP")
    assert s.mean == {"nDCG@10": 0.0, "MAP": 0.0}
    assert s.coverage.scored == 4
    assert len(s.coverage.not_retrieved) == 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_runs_equal_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(30):
        qid = f"q{q}"
        if rng.random() < 0.9:
            qrels[qid] = {
                d: rng.choice([0, 0, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 8))
            }
        if rng.random() < 0.85:
            # coarse scores: many ties
            run[qid] = {d: float(rng.randint(0, 5)) for d in rng.sample(docs, rng.randint(0, 25))}
    names = ["MRR@10", "nDCG@10", "nDCG@5", "Recall@20", "P@5", "MAP", "nDCG"]
    s = evaluate(qrels, run, names)
    for name in names:
        m = Metric.parse(name)
        ref = reference(qrels, run, m.kind, m.k)
        assert set(ref) == set(s.per_query)
        for q, value in ref.items():
            assert s.per_query[q][name] == pytest.approx(value, abs=1e-9), (name, q)
        assert s.mean[name] == pytest.approx(sum(ref.values()) / len(ref), abs=1e-9)


def test_metric_names() -> None:
    assert [m.name for m in parse_metrics("ndcg@10, mrr@10,recall@100,precision@5,map")] == [
        "nDCG@10",
        "MRR@10",
        "Recall@100",
        "P@5",
        "MAP",
    ]
    with pytest.raises(InputError, match="unknown metric 'bleu@4'"):
        Metric.parse("bleu@4")
    with pytest.raises(InputError, match="needs a cutoff"):
        Metric.parse("recall")
