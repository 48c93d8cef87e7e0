"""Re-ranking latency: 100 passages of about 90 tokens for one query, our ``Reranker`` on every
backend against sentence-transformers' ``CrossEncoder.predict`` on the same full-size random
cross-encoder folders, in interleaved rounds.

Models: DistilBERT-base (6 x 768, the msmarco-distilbert-base-v4 shape) and BERT MiniLM-L6-H384
(the shape of cross-encoder/ms-marco-MiniLM-L6-v2), both with random weights: speed does not
depend on the weight values. Passages are STS Benchmark sentences joined up to ~90 tokens.
Writes ``rerank.md`` and ``rerank.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, TOKENIZER_FILES, cpu_description, minilm_folder

log = logging.getLogger(__name__)

EXPORTS = CACHE / "exports"
PASSAGE_TOKENS = 90
ENGINES = (
    ("torch", "fp32"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "int8"),
)
# name -> (architecture, config shape; empty: transformers' defaults, the base size)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "distilbert-base": ("distilbert", {}),
    "minilm-l6-h384": (
        "bert",
        {
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 12,
            "intermediate_size": 1536,
        },
    ),
}
TARGET = 0.7  # ours / CrossEncoder, p50


def cross_encoder_folder(name: str, seed: int = 0) -> Path:
    """A full-size random cross-encoder (one label) in the sentence-transformers 6 layout."""
    folder = CACHE / f"cross-{name}-seed{seed}"
    if (folder / "modules.json").is_file():
        return folder
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(seed)
    arch, shape = MODELS[name]
    model: torch.nn.Module
    if arch == "distilbert":
        distil = DistilBertConfig(**shape)
        distil.num_labels = 1
        model = DistilBertForSequenceClassification(distil)
    else:
        bert = BertConfig(**shape)
        bert.num_labels = 1
        model = BertForSequenceClassification(bert)
    hf = folder.with_name(folder.name + f".hf{os.getpid()}")
    shutil.rmtree(hf, ignore_errors=True)
    model.save_pretrained(hf)
    for f in TOKENIZER_FILES:
        shutil.copy(minilm_folder() / f, hf / f)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    CrossEncoder(str(hf), device="cpu").save(str(tmp))
    shutil.rmtree(hf)
    tmp.rename(folder)
    return folder


def workload(count: int) -> tuple[str, list[str]]:
    """One STS query and ``count`` passages of about ``PASSAGE_TOKENS`` tokens each."""
    from tokenizers import Tokenizer

    from benchmarks.common import read_sts_sentences

    tok = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    tok.no_padding()  # the file pads every text to 128 tokens
    tok.no_truncation()
    sentences = read_sts_sentences("test")
    query, rest = sentences[0], iter(sentences[1:])
    passages = []
    for _ in range(count):
        parts: list[str] = []
        while len(tok.encode(" ".join(parts)).ids) < PASSAGE_TOKENS:
            parts.append(next(rest))
        passages.append(" ".join(parts))
    return query, passages


def time_rounds(runners: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each runner, ``rounds`` interleaved rounds (order rotated)."""
    names = list(runners)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runners[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def bench_model(name: str, threads: int, count: int, rounds: int) -> dict[str, object]:
    import torch
    from sentence_transformers import CrossEncoder

    from distilmarco.reranker import Reranker

    folder = cross_encoder_folder(name)
    query, passages = workload(count)
    reference = CrossEncoder(str(folder), device="cpu")
    pairs = [(query, p) for p in passages]
    runners: dict[str, Callable[[], object]] = {
        "sentence-transformers CrossEncoder (torch fp32, batch 32)": lambda: reference.predict(
            pairs, show_progress_bar=False
        )
    }
    engines: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for backend, precision in ENGINES:
        key = f"distilmarco {backend} {precision}"
        try:
            rr = Reranker(folder, backend=backend, precision=precision, threads=threads)
        except Exception as exc:  # report, keep benchmarking the others
            skipped[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        runners[key] = lambda rr=rr: rr.score(query, passages)  # type: ignore[misc]
        engines[key] = f"{rr.backend.name}/{rr.backend.precision}"
    torch.set_num_threads(threads)
    for run in runners.values():  # warm-up: first calls compile kernels and fill caches
        run()
    seconds = time_rounds(runners, rounds)
    tokens = sum(len(ids) for ids in Reranker(folder).tokenizer.encode_pairs(query, passages).ids)
    base = statistics.median(seconds[next(iter(runners))])
    rows = []
    for key, times in seconds.items():
        p50 = statistics.median(times)
        rows.append(
            {
                "engine": key,
                "p50_ms": p50 * 1000,
                "best_ms": min(times) * 1000,
                "pairs_per_s": count / p50,
                "ratio_to_cross_encoder": p50 / base,
            }
        )
    return {
        "model": name,
        "pairs": count,
        "pair_tokens": tokens,
        "rounds": rounds,
        "rows": rows,
        "skipped": skipped,
    }


def render(
    results: list[dict[str, object]],
    cpu: str,
    threads: int,
    quick: bool,
    load: tuple[float, float] = (float("nan"), float("nan")),
) -> str:
    lines = [
        "## Re-ranking (`bench_rerank.py`)",
        "",
        f"One query, {results[0]['pairs']} passages of about {PASSAGE_TOKENS} tokens (STS "
        "Benchmark sentences joined), scored with a full-size random cross-encoder; "
        f"p50 over {results[0]['rounds']} interleaved rounds after a warm-up, {threads} threads. "
        f"CPU: {cpu}. One-minute load average {load[0]:.2f} before the run and {load[1]:.2f} "
        "after it (above about 2, other jobs shared the cores and absolute figures are noisy); "
        "ratios within one run are the comparison."
        + (" **Quick run: smoke-test sizes.**" if quick else ""),
        "",
        f"Target: ours (exact fp32) at most {TARGET}x CrossEncoder's p50.",
        "",
    ]
    for res in results:
        lines += [
            f"### {res['model']} ({res['pair_tokens']} pair tokens in all)",
            "",
            "| engine | p50 ms | best ms | pairs/s | p50 / CrossEncoder |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in res["rows"]:  # type: ignore[attr-defined]
            lines.append(
                f"| {row['engine']} | {row['p50_ms']:.0f} | {row['best_ms']:.0f} | "
                f"{row['pairs_per_s']:.0f} | {row['ratio_to_cross_encoder']:.2f} |"
            )
        for key, why in res["skipped"].items():  # type: ignore[attr-defined]
            lines.append(f"| {key} | skipped: {why} | | | |")
        lines.append("")
    return "\n".join(lines)


def main(out_dir: Path, quick: bool) -> None:
    os.environ.setdefault("DISTILMARCO_CACHE", str(EXPORTS))
    from distilmarco.backends.cpu import physical_cores

    threads = physical_cores()
    count, rounds = (20, 2) if quick else (100, 3)
    before = os.getloadavg()[0]
    results = [bench_model(name, threads, count, rounds) for name in MODELS]
    load = (before, os.getloadavg()[0])
    cpu = cpu_description()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rerank.json").write_text(
        json.dumps(
            {"cpu": cpu, "threads": threads, "quick": quick, "load": load, "results": results},
            indent=2,
        )
        + "\n"
    )
    (out_dir / "rerank.md").write_text(render(results, cpu, threads, quick, load) + "\n")
