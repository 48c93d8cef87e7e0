"""The Cranfield part of ``bench_train``: MNRL with and without hard negatives mined from our index.

Split (fixed): Cranfield's 225 queries, numbered 1-225 in file order as ``cranqrel`` numbers them;
test = numbers divisible by 3 (75 queries), train = the other 150. Training pairs are (query,
relevant abstract) for every judgement with gain >= 1 of a train query.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import SHARED_DATA, minilm_folder

log = logging.getLogger(__name__)

TRAIN_OPTIONS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,
    "lr": 5e-5,
    "warmup": 0.1,
    "max_seq_length": 128,
    "seed": 1,
}


def split_ids(query_ids: list[str]) -> tuple[list[str], list[str]]:
    """(train, test) query ids: test holds the numbers divisible by 3."""
    test = [q for q in query_ids if int(q) % 3 == 0]
    train = [q for q in query_ids if int(q) % 3 != 0]
    return train, test


def cranfield_part(quick: bool) -> dict[str, Any]:
    import distilmarco
    from distilmarco import Encoder, Index
    from distilmarco.evaluation.formats import read_cranfield
    from distilmarco.training.dev import IRDev, queries_subset
    from distilmarco.training.mining import MiningConfig, mine

    data = read_cranfield(SHARED_DATA / "cranfield")
    train_ids, test_ids = split_ids(sorted(data.queries, key=int))
    if quick:
        train_ids = train_ids[:40]
    test = IRDev(queries_subset(data, test_ids, "cranfield-test"))
    base = minilm_folder()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pairs = tmp / "pairs.jsonl"
        n_pairs = 0
        with open(pairs, "w", encoding="utf-8") as f:
            for qid in train_ids:
                for doc_id, gain in sorted(data.qrels.get(qid, {}).items()):
                    text = data.corpus[doc_id].full_text if doc_id in data.corpus else ""
                    if gain >= 1 and text.strip():
                        f.write(json.dumps({"query": data.queries[qid], "positive": text}) + "\n")
                        n_pairs += 1
        rows.append({"model": "untouched", **test(Encoder(base))})
        start = time.perf_counter()
        with Index(tmp / "cranfield.db", Encoder(base)) as index:
            ids = [d for d, doc in data.corpus.items() if doc.full_text.strip()]
            index.add(ids, [data.corpus[d].full_text for d in ids])
            mined = tmp / "mined.jsonl"
            cfg = MiningConfig(negatives=3, range_min=3, range_max=30, relative_margin=0.05)
            stats = mine(index, pairs, mined, cfg)
        mining_seconds = time.perf_counter() - start
        for name, path in (("MNRL, pairs", pairs), ("MNRL, mined hard negatives", mined)):
            out = tmp / name.replace(" ", "_").replace(",", "")
            result = distilmarco.train(path, base, out, loss="mnrl", **TRAIN_OPTIONS)
            rows.append(
                {
                    "model": name,
                    **test(Encoder(out)),
                    "steps": result.steps,
                    "train_seconds": result.train_seconds,
                }
            )
            log.info("Cranfield %s: %s", name, rows[-1])
    return {
        "rows": rows,
        "train_queries": len(train_ids),
        "test_queries": len(test_ids),
        "train_pairs": n_pairs,
        "mined_examples": stats.written,
        "negatives_per_query": cfg.negatives,
        "mining_seconds": mining_seconds,
        "options": TRAIN_OPTIONS,
    }
