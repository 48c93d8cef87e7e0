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
from dataclasses import dataclass
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
ROUNDS = 5
QUIET_LOAD = 2.0  # one-minute load average above which a run is reported as disturbed
CROSS_ENCODER = "sentence-transformers CrossEncoder (torch, batch 32)"


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


@dataclass(frozen=True)
class Timings:
    """Per-call seconds of each runner: wall clock and the process's CPU time."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def time_rounds(runners: dict[str, Callable[[], object]], rounds: int) -> Timings:
    """Seconds per call of each runner, ``rounds`` interleaved rounds (order rotated)."""
    names = list(runners)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            runners[name]()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return Timings(wall, cpu)


def model_flops(name: str, lengths: list[int]) -> float:
    """Multiply-add FLOPs of the whole transformer on the real tokens (no padding, every layer
    for every token): the work an engine's time is divided by to get its GFLOP/s."""
    from transformers import BertConfig, DistilBertConfig

    arch, shape = MODELS[name]
    if arch == "distilbert":
        distil = DistilBertConfig(**shape)
        d, f, layers = distil.dim, distil.hidden_dim, distil.n_layers
    else:
        bert = BertConfig(**shape)
        d, f, layers = bert.hidden_size, bert.intermediate_size, bert.num_hidden_layers
    per_token = 2 * (4 * d * d + 2 * d * f)  # Q, K, V, output projections and the FFN
    attention = sum(4 * t * t * d for t in lengths)  # scores and weighted values
    return float(layers * (per_token * sum(lengths) + attention))


def gemm_gflops(threads: int, seconds: float = 2.0) -> float:
    """torch fp32 GEMM throughput on this machine now: (2048 x 768) @ (768 x 3072), the FFN's
    shape at a 2,048-token batch; best of repeated calls over ``seconds``."""
    import torch

    torch.set_num_threads(threads)
    a, w = torch.randn(2048, 768), torch.randn(3072, 768)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.nn.functional.linear(a, w)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048 * 768 * 3072 / best / 1e9


def bench_model(name: str, threads: int, count: int, rounds: int) -> dict[str, object]:
    import torch
    from sentence_transformers import CrossEncoder

    from distilmarco.reranker import Reranker

    folder = cross_encoder_folder(name)
    query, passages = workload(count)
    reference = CrossEncoder(str(folder), device="cpu")
    pairs = [(query, p) for p in passages]
    runners: dict[str, Callable[[], object]] = {
        CROSS_ENCODER: lambda: reference.predict(pairs, show_progress_bar=False)
    }
    precisions = {CROSS_ENCODER: "fp32"}
    skipped: dict[str, str] = {}
    for backend, precision in ENGINES:
        try:
            rr = Reranker(folder, backend=backend, precision=precision, threads=threads)
        except Exception as exc:  # report, keep benchmarking the others
            key = f"distilmarco {backend} {precision}"
            skipped[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        # Named by what really ran (a backend may fall back to another precision).
        key = f"distilmarco {rr.backend.name} {rr.backend.precision}"
        runners[key] = lambda rr=rr: rr.score(query, passages)  # type: ignore[misc]
        precisions[key] = rr.backend.precision
    torch.set_num_threads(threads)
    for run in runners.values():  # warm-up: first calls compile kernels and fill caches
        run()
    timings = time_rounds(runners, rounds)
    lengths = [len(ids) for ids in Reranker(folder).tokenizer.encode_pairs(query, passages).ids]
    flops = model_flops(name, lengths)
    base = statistics.median(timings.wall[CROSS_ENCODER])
    base_cpu = statistics.median(timings.cpu[CROSS_ENCODER])
    rows = []
    for key, times in timings.wall.items():
        p50 = statistics.median(times)
        cpu = statistics.median(timings.cpu[key])
        rows.append(
            {
                "engine": key,
                "precision": precisions[key],
                "p50_ms": p50 * 1000,
                "best_ms": min(times) * 1000,
                "cpu_p50_ms": cpu * 1000,
                "pairs_per_s": count / p50,
                "gflops_best": flops / min(times) / 1e9,
                "ratio_to_cross_encoder": p50 / base,
                "cpu_ratio_to_cross_encoder": cpu / base_cpu,
            }
        )
    return {
        "model": name,
        "pairs": count,
        "pair_tokens": sum(lengths),
        "model_gflop": flops / 1e9,
        "rounds": rounds,
        "rows": rows,
        "skipped": skipped,
    }


def fastest_fp32(res: dict[str, Any]) -> dict[str, Any]:
    """Our fastest exact fp32 row by p50 (the one the target counts)."""
    ours = [r for r in res["rows"] if r["engine"] != CROSS_ENCODER and r["precision"] == "fp32"]
    return min(ours, key=lambda r: r["ratio_to_cross_encoder"])


def render(
    results: list[dict[str, Any]],
    cpu: str,
    threads: int,
    quick: bool,
    load: tuple[float, float] = (float("nan"), float("nan")),
    gemm: float = float("nan"),
) -> str:
    lines = [
        "## Re-ranking (`bench_rerank.py`)",
        "",
        f"One query, {results[0]['pairs']} passages of about {PASSAGE_TOKENS} tokens (STS "
        "Benchmark sentences joined), scored with a full-size random cross-encoder; "
        f"p50 over {results[0]['rounds']} interleaved rounds after a warm-up, {threads} threads. "
        f"CPU: {cpu}. One-minute load average {load[0]:.2f} before the run and {load[1]:.2f} "
        "after it (above about 2, other jobs shared the cores and absolute figures are noisy); "
        "ratios within one run are the comparison. `cpu ms`: the process's CPU time per call "
        "(less disturbed by other jobs than wall time). `GFLOP/s`: the whole model's "
        "multiply-adds on the real tokens over the best time; the torch fp32 GEMM of the FFN's "
        f"shape ran {gemm:.0f} GFLOP/s in the same process."
        + (" **Quick run: smoke-test sizes.**" if quick else ""),
        "",
        f"Target: our fastest exact fp32 engine at most {TARGET}x CrossEncoder's (fp32) p50; "
        "the precision column says what each row ran.",
        "",
    ]
    for res in results:
        best = fastest_fp32(res)
        verdict = "met" if best["ratio_to_cross_encoder"] <= TARGET else "not met"
        if max(load) > QUIET_LOAD:  # threading runtimes cope differently with shared cores
            verdict += f"; load above {QUIET_LOAD}, rerun on a quiet machine to confirm"
        lines += [
            f"### {res['model']} ({res['pair_tokens']} pair tokens in all, "
            f"{res['model_gflop']:.0f} GFLOP)",
            "",
            "| engine | precision | p50 ms | best ms | cpu ms | pairs/s | GFLOP/s | "
            "p50 / CrossEncoder | cpu / CrossEncoder |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in res["rows"]:
            lines.append(
                f"| {row['engine']} | {row['precision']} | {row['p50_ms']:.0f} | "
                f"{row['best_ms']:.0f} | {row['cpu_p50_ms']:.0f} | {row['pairs_per_s']:.0f} | "
                f"{row['gflops_best']:.0f} | {row['ratio_to_cross_encoder']:.2f} | "
                f"{row['cpu_ratio_to_cross_encoder']:.2f} |"
            )
        for key, why in res["skipped"].items():
            lines.append(f"| {key} | skipped: {why} | | | | | | | |")
        lines += [
            "",
            f"Fastest fp32 of ours: {best['engine']}, "
            f"{best['ratio_to_cross_encoder']:.2f}x CrossEncoder's p50 (target {TARGET}x: "
            f"{verdict}).",
            "",
        ]
    return "\n".join(lines)


def main(out_dir: Path, quick: bool) -> None:
    os.environ.setdefault("DISTILMARCO_CACHE", str(EXPORTS))
    from distilmarco.backends.cpu import physical_cores

    threads = physical_cores()
    count, rounds = (20, 2) if quick else (100, ROUNDS)
    before = os.getloadavg()[0]
    gemm = gemm_gflops(threads)
    results = [bench_model(name, threads, count, rounds) for name in MODELS]
    load = (before, os.getloadavg()[0])
    cpu = cpu_description()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rerank.json").write_text(
        json.dumps(
            {
                "cpu": cpu,
                "threads": threads,
                "quick": quick,
                "load": load,
                "gemm_gflops": gemm,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    (out_dir / "rerank.md").write_text(render(results, cpu, threads, quick, load, gemm) + "\n")
