"""Fine-tuning all-MiniLM-L6-v2 with ``distilmarco.train``: real quality and speed on CPU.

- **STS Benchmark**: CoSENT on the train split (5,749 pairs, 1 epoch, batch 16, lr 5e-5, warm-up
  10%, max_seq_length 64), three seeds; test Spearman of cosine against the untouched model.
- **Cranfield**: the 225 queries split by number (test: query number divisible by 3, 75 queries;
  train: the other 150), MNRL (1 epoch, batch 32, lr 5e-5, max_seq_length 128) on (query,
  relevant abstract) pairs with and without 3 hard negatives per pair mined from a
  ``distilmarco.Index`` of the whole corpus (dense + BM25, ranks 3-30, 5% relative margin); test
  nDCG@10 of exact dense retrieval against the untouched model.
- **Speed**: the same model, data (1,024 STS-B train pairs), loss (CoSENT), batch 16 and
  max_seq_length 64 through ``distilmarco.train`` and sentence-transformers' trainer in one
  process, alternating, two rounds each: examples/s and real tokens/s; ours timed over the whole
  ``distilmarco.train`` call (loading, checking the data, training, saving), theirs over
  ``trainer.train()`` only (model already loaded, nothing saved).

``python -m benchmarks.run --only train``; one part: ``python -m benchmarks.bench_train sts``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, SHARED_DATA, cpu_description, minilm_folder

log = logging.getLogger(__name__)

PARTS = ("sts", "cranfield", "speed")
STS_OPTIONS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 16,
    "lr": 5e-5,
    "warmup": 0.1,
    "max_seq_length": 64,
}
SEEDS = (1, 2, 3)


def _sts_jsonl(split: str, limit: int | None = None) -> Path:
    """An STS Benchmark split as JSONL (sentence1, sentence2, score), cached."""
    out = CACHE / f"sts-{split}{'' if limit is None else f'-{limit}'}.jsonl"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(SHARED_DATA / "stsbenchmark" / f"sts-{split}.csv", encoding="utf-8") as f:
        for line in f:
            x = line.rstrip("\n").split("\t")
            rows.append({"sentence1": x[5], "sentence2": x[6], "score": float(x[4])})
    rows = rows[:limit] if limit else rows
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def _sts_spearman(model: Path | str) -> float:
    from distilmarco import Encoder
    from distilmarco.evaluation.sts import evaluate_sts, read_pairs

    pairs = read_pairs(SHARED_DATA / "stsbenchmark" / "sts-test.csv")
    return evaluate_sts(Encoder(model), pairs).spearman


def part_sts(quick: bool) -> dict[str, Any]:
    import distilmarco

    base = minilm_folder()
    data = _sts_jsonl("train", 512 if quick else None)
    before = _sts_spearman(base)
    runs: list[dict[str, Any]] = []
    for seed in SEEDS[:1] if quick else SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            result = distilmarco.train(
                data,
                base,
                Path(tmp) / "model",
                loss="cosent",
                seed=seed,
                **STS_OPTIONS,
            )
            after = _sts_spearman(Path(tmp) / "model")
        runs.append(
            {
                "seed": seed,
                "spearman": after,
                "steps": result.steps,
                "train_seconds": result.train_seconds,
                "examples_per_s": result.examples_per_second,
                "precision": result.precision,
            }
        )
        log.info("STS-B seed %d: test Spearman %.4f (untouched %.4f)", seed, after, before)
    values = [float(r["spearman"]) for r in runs]
    return {
        "untouched_spearman": before,
        "runs": runs,
        "mean": statistics.fmean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def part_speed(quick: bool) -> dict[str, Any]:
    import distilmarco
    from distilmarco.model.st_format import SentenceModelSpec
    from distilmarco.tokenizer import Tokenizer
    from distilmarco.training.data import read_examples

    base = minilm_folder()
    n = 256 if quick else 1024
    data = _sts_jsonl("train", n)
    examples = list(read_examples(data))
    spec = SentenceModelSpec.from_folder(base)
    tok = Tokenizer.from_folder(spec.transformer_folder, 64, spec.do_lower_case)
    tokens = sum(
        int(tok.encode([t for ex in examples for t in ex.texts]).lengths.sum()) for _ in [0]
    )
    rounds = 1 if quick else 3
    ours: list[float] = []
    ours_loop: list[float] = []
    theirs: list[float] = []
    theirs_loop: list[float] = []
    ours_cpu: list[float] = []
    theirs_cpu: list[float] = []
    ours_auto: list[float] = []
    auto_precision = ""
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            t, c = time.perf_counter(), time.process_time()
            result = distilmarco.train(
                data, base, Path(tmp) / "m", loss="cosent", epochs=1, batch_size=16,
                lr=2e-5, warmup=0.1, max_seq_length=64, seed=1, precision="fp32",
            )  # fmt: skip
            ours.append(time.perf_counter() - t)
            ours_cpu.append(time.process_time() - c)
            ours_loop.append(result.train_seconds)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            result = distilmarco.train(
                data, base, Path(tmp) / "m", loss="cosent", epochs=1, batch_size=16,
                lr=2e-5, warmup=0.1, max_seq_length=64, seed=1, precision="auto",
            )  # fmt: skip
            ours_auto.append(time.perf_counter() - t)
            auto_precision = result.precision
        c = time.process_time()
        wall, loop = _st_trainer_seconds(base, examples)
        theirs_cpu.append(time.process_time() - c)
        theirs.append(wall)
        theirs_loop.append(loop)
        log.info("speed round: ours %.1f s, sentence-transformers %.1f s", ours[-1], theirs[-1])
    best_ours, best_theirs = min(ours), min(theirs)
    return {
        "examples": len(examples),
        "tokens": tokens,
        "ours_seconds": ours,
        "ours_optimisation_seconds": ours_loop,
        "st_seconds": theirs,
        "ours_auto_seconds": ours_auto,
        "auto_precision": auto_precision,
        "ours_cpu_seconds": ours_cpu,
        "st_cpu_seconds": theirs_cpu,
        "cpu_speedup": min(theirs_cpu) / min(ours_cpu),
        "st_train_runtime_seconds": theirs_loop,
        "ours_examples_per_s": len(examples) / best_ours,
        "st_examples_per_s": len(examples) / best_theirs,
        "ours_tokens_per_s": tokens / best_ours,
        "st_tokens_per_s": tokens / best_theirs,
        "speedup": best_theirs / best_ours,
    }


def _st_trainer_seconds(base: Path, examples: list[Any]) -> tuple[float, float]:
    """sentence-transformers' own trainer on the same data and settings: wall seconds of
    ``train()``, and the ``train_runtime`` it reports itself (its training loop alone)."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    model = SentenceTransformer(str(base), device="cpu")
    model.max_seq_length = 64
    dataset = Dataset.from_dict(
        {
            "sentence1": [ex.texts[0] for ex in examples],
            "sentence2": [ex.texts[1] for ex in examples],
            "score": [ex.label for ex in examples],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=1,
            per_device_train_batch_size=16,
            learning_rate=2e-5,
            warmup_steps=0.1,  # a float below 1: a fraction of the steps
            weight_decay=0.01,
            seed=1,
            save_strategy="no",
            report_to="none",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=dataset, loss=CoSENTLoss(model)
        )
        t = time.perf_counter()
        output = trainer.train()
        return time.perf_counter() - t, float(output.metrics["train_runtime"])


def part_cranfield(quick: bool) -> dict[str, Any]:
    from benchmarks.train_cranfield import cranfield_part

    return cranfield_part(quick)


def run_part(name: str, out_dir: Path, quick: bool) -> dict[str, Any]:
    result = {"sts": part_sts, "cranfield": part_cranfield, "speed": part_speed}[name](quick)
    result["load_average_1m"] = os.getloadavg()[0]
    (out_dir / f"train-{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _one_thread() -> None:
    """Torch on one thread: the machine is shared, and idle OpenMP workers spinning on a busy core
    slowed small training steps down many times over."""
    import torch

    torch.set_num_threads(1)


def main(out_dir: Path, quick: bool) -> None:
    _one_thread()
    for name in PARTS:
        run_part(name, out_dir, quick)
    write_markdown(out_dir, quick)


def _rounds(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def write_markdown(out_dir: Path, quick: bool) -> None:
    from distilmarco.training.trainer import choose_precision

    parts = {
        n: json.loads((out_dir / f"train-{n}.json").read_text())
        for n in PARTS
        if (out_dir / f"train-{n}.json").is_file()
    }
    lines = [
        "## Fine-tuning (`bench_train.py`)",
        "",
        f"CPU: {cpu_description()}, {os.cpu_count()} cores (torch on 1 thread), shared with "
        "other jobs while it ran (figures are wall-clock). Model: all-MiniLM-L6-v2 (packaged). "
        "Quality runs use precision `auto`, which is "
        f"{choose_precision('auto', 'cpu')} on this CPU (autocast; weights and optimizer in "
        "fp32); the speed comparison is fp32 on both sides, plus our `auto` row."
        + (" `--quick` sizes." if quick else ""),
        "",
    ]
    if "sts" in parts:
        s = parts["sts"]
        lines += [
            "**STS Benchmark test, Spearman (cosine)**, CoSENT on the train split, 1 epoch, batch 16, "
            "lr 5e-5, warm-up 10%, max_seq_length 64:",
            "",
            "| model | Spearman |",
            "|---|---|",
            f"| untouched | {s['untouched_spearman']:.4f} |",
        ]
        lines += [f"| fine-tuned, seed {r['seed']} | {r['spearman']:.4f} |" for r in s["runs"]]
        lines += [
            f"| fine-tuned, mean ± stdev over {len(s['runs'])} seeds | "
            f"{s['mean']:.4f} ± {s['stdev']:.4f} |",
            "",
        ]
    if "cranfield" in parts:
        c = parts["cranfield"]
        lines += [
            "**Cranfield, test nDCG@10** (75 test queries: number divisible by 3; 150 train "
            "queries), MNRL 1 epoch, batch 32, lr 5e-5, max_seq_length 128:",
            "",
            "| model | nDCG@10 | MRR@10 |",
            "|---|---|---|",
        ]
        for row in c["rows"]:
            lines.append(f"| {row['model']} | {row['nDCG@10']:.4f} | {row['MRR@10']:.4f} |")
        lines += [
            "",
            f"Training pairs: {c['train_pairs']}; mined: {c['mined_examples']} examples with "
            f"{c['negatives_per_query']} negatives each ({c['mining_seconds']:.0f} s).",
            "",
        ]
    if "speed" in parts:
        p = parts["speed"]
        lines += [
            f"**Training speed**, {p['examples']} STS-B pairs ({p['tokens']:,} real tokens), "
            "CoSENT, batch 16, max_seq_length 64, 1 epoch, best of "
            f"{len(p['ours_seconds'])} alternating rounds in one process; ours timed over the "
            "whole `distilmarco.train` call (load, check, train, save), sentence-transformers' "
            "over `trainer.train()` alone:",
            "",
            "| trainer | wall seconds (each round) | CPU seconds (best) | examples/s | tokens/s |",
            "|---|---|---|---|---|",
            f"| distilmarco.train | {_rounds(p['ours_seconds'])} | {min(p['ours_cpu_seconds']):.1f} | "
            f"{p['ours_examples_per_s']:.1f} | {p['ours_tokens_per_s']:,.0f} |",
            f"| distilmarco.train, precision auto ({p.get('auto_precision', '?')}) | "
            f"{_rounds(p.get('ours_auto_seconds', []))} | - | "
            f"{p['examples'] / min(p.get('ours_auto_seconds', [float('inf')])):.1f} | "
            f"{p['tokens'] / min(p.get('ours_auto_seconds', [float('inf')])):,.0f} |",
            f"| sentence-transformers trainer | {_rounds(p['st_seconds'])} | "
            f"{min(p['st_cpu_seconds']):.1f} | "
            f"{p['st_examples_per_s']:.1f} | {p['st_tokens_per_s']:,.0f} |",
            "",
            f"distilmarco / sentence-transformers: {p['speedup']:.2f}x by best wall time, "
            f"{p['cpu_speedup']:.2f}x by CPU time (the process's, one torch thread: less "
            "disturbed by the other jobs). examples/s and tokens/s from the best wall time. "
            "Training loops alone "
            f"(ours' optimisation steps, their reported `train_runtime`): "
            f"{min(p['ours_optimisation_seconds']):.1f} s against "
            f"{min(p['st_train_runtime_seconds']):.1f} s.",
            "",
        ]
    (out_dir / "train.md").write_text("\n".join(lines), encoding="utf-8")
    (out_dir / "train.json").write_text(json.dumps(parts, indent=2), encoding="utf-8")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from benchmarks.run import RESULTS

    chosen = sys.argv[1:] or list(PARTS)
    _one_thread()
    for part in chosen:
        run_part(part, RESULTS, quick=False)
    write_markdown(RESULTS, quick=False)
    shutil.rmtree(CACHE / "train-tmp", ignore_errors=True)
