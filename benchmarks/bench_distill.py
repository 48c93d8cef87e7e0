"""Distillation with ``distilmarco.distill`` on all-MiniLM-L6-v2 (the packaged real model).

- **Smaller student**: MiniLM (6 layers) distilled into a 3-layer student initialised from its
  layers 1, 3 and 5, on English sentences of the shared data (every third of the deduplicated
  STS-B train sentences, Banking77 train texts and Cranfield abstract sentences), MSE, best step by STS-B dev Spearman. Test:
  STS-B test Spearman against the teacher, and encode throughput of both on the STS-B test
  sentences (torch fp32, one thread, interleaved rounds in one process).
- **Cross-lingual**: Tatoeba bitext accuracy (translation -> English, MTEB's figure) of the
  untrained MiniLM on all 1,000 pairs per language, then a student initialised from MiniLM and
  distilled (teacher: MiniLM) on rows 0-799 of every language, scored on rows 800-999.

``python -m benchmarks.run --only distill``; one part: ``python -m benchmarks.bench_distill small``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, SHARED_DATA, cpu_description, minilm_folder

log = logging.getLogger(__name__)

PARTS = ("small", "tatoeba")
LANGUAGES = ("deu", "spa", "ita", "nld", "por", "pol", "tur", "rus")
SMALL_OPTIONS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,
    "lr": 1e-4,
    "warmup": 0.1,
    "max_seq_length": 128,
    "eval_steps": 100,
    "precision": "fp32",
    "seed": 42,
}
TATOEBA_OPTIONS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 32,
    "lr": 1e-4,
    "warmup": 0.1,
    "max_seq_length": 128,
    "precision": "fp32",
    "seed": 42,
}


def english_sentences(quick: bool) -> Path:
    """One English sentence a line (a one-column parallel file), deduplicated, cached."""
    out = CACHE / f"distill-english{'-quick' if quick else '-third'}.tsv"
    if out.is_file():
        return out
    from distilmarco.evaluation.formats import load

    texts: list[str] = []
    with open(SHARED_DATA / "stsbenchmark" / "sts-train.csv", encoding="utf-8") as f:
        for line in f:
            x = line.rstrip("\n").split("\t")
            texts += [x[5], x[6]]
    with open(SHARED_DATA / "banking77" / "train.csv", encoding="utf-8") as f:
        import csv

        texts += [row["text"] for row in csv.DictReader(f)]
    for doc in load(SHARED_DATA / "cranfield").corpus.values():
        for sentence in re.split(r"\s+\.\s*", doc.full_text):
            if len(sentence.split()) >= 4:
                texts.append(sentence.strip() + " .")
    clean = [" ".join(t.split()) for t in texts]
    unique = list(dict.fromkeys(t for t in clean if t))
    # Every third sentence (about 10,000): the training budget of a shared CPU.
    unique = unique[:: 20 if quick else 3]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(t + "\n" for t in unique), encoding="utf-8")
    return out


def _sts_spearman(model: Path | str, split: str = "test") -> float:
    from distilmarco import Encoder
    from distilmarco.evaluation.sts import evaluate_sts, read_pairs

    pairs = read_pairs(SHARED_DATA / "stsbenchmark" / f"sts-{split}.csv")
    return evaluate_sts(Encoder(model), pairs).spearman


def _throughput(teacher: Path, student: Path, rounds: int) -> dict[str, Any]:
    """Sentences/s of both models on the STS-B test sentences, alternating, same process."""
    from distilmarco import Encoder
    from distilmarco.evaluation.sts import read_pairs

    pairs = read_pairs(SHARED_DATA / "stsbenchmark" / "sts-test.csv")
    texts = [p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]
    encoders = {"teacher": Encoder(teacher), "student": Encoder(student)}
    for enc in encoders.values():
        enc.encode(texts[:64])  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, enc in encoders.items():
            start = time.perf_counter()
            enc.encode(texts)
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(s) for name, s in seconds.items()}
    return {
        "texts": len(texts),
        "seconds": seconds,
        "teacher_per_s": len(texts) / best["teacher"],
        "student_per_s": len(texts) / best["student"],
        "speedup": best["teacher"] / best["student"],
        "speedup_median": statistics.median(seconds["teacher"])
        / statistics.median(seconds["student"]),
    }


def part_small(quick: bool) -> dict[str, Any]:
    import distilmarco
    from distilmarco.evaluation.sts import read_pairs
    from distilmarco.training.dev import STSDev

    teacher = minilm_folder()
    data = english_sentences(quick)
    sentences = len(data.read_text(encoding="utf-8").splitlines())
    options = SMALL_OPTIONS
    out = CACHE / "distill-minilm-3layers"
    dev = STSDev(read_pairs(SHARED_DATA / "stsbenchmark" / "sts-dev.csv"))
    start = time.perf_counter()
    result = distilmarco.distill(
        data, teacher, out, layers=3, dev=dev, cache_dir=CACHE / "teacher-vectors", **options
    )
    wall = time.perf_counter() - start
    teacher_sts, student_sts = _sts_spearman(teacher), _sts_spearman(out)
    speed = _throughput(teacher, out, 2 if quick else 5)
    log.info("3-layer student: STS-B test %.4f (teacher %.4f)", student_sts, teacher_sts)
    return {
        "sentences": sentences,
        "options": options,
        "layers": [1, 3, 5],
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "best_step": result.best_step,
        "best_dev_spearman": result.best_metric,
        "evaluations": [{"step": r.step, **r.metrics} for r in result.evaluations],
        "teacher_sts_test": teacher_sts,
        "student_sts_test": student_sts,
        "speed": speed,
    }


def _tatoeba_scores(model: Path | str, rows: tuple[int, int | None]) -> dict[str, dict[str, float]]:
    from distilmarco import Encoder
    from distilmarco.evaluation.translation import bitext_scores
    from distilmarco.training.parallel import RowRange, read_parallel

    encoder = Encoder(model)
    scores: dict[str, dict[str, float]] = {}
    for ps in read_parallel(SHARED_DATA / "tatoeba", RowRange(*rows), LANGUAGES):
        english = encoder.encode(list(ps.sources))
        other = encoder.encode([t for (t,) in ps.translations])
        s = bitext_scores(other, english)  # MTEB's direction: each translation finds its English
        scores[ps.name] = {"to_english": s.src2trg, "from_english": s.trg2src, "f1": s.f1}
    return scores


def part_tatoeba(quick: bool) -> dict[str, Any]:
    import distilmarco
    from distilmarco.training.parallel import RowRange

    base = minilm_folder()
    full = _tatoeba_scores(base, (0, None))
    before = _tatoeba_scores(base, (800, None))
    out = CACHE / "distill-minilm-tatoeba"
    options = TATOEBA_OPTIONS
    start = time.perf_counter()
    result = distilmarco.distill(
        SHARED_DATA / "tatoeba",
        base,
        out,
        student=base,
        rows=RowRange(0, 100 if quick else 800),
        languages=LANGUAGES,
        cache_dir=CACHE / "teacher-vectors",
        **options,
    )
    wall = time.perf_counter() - start
    after = _tatoeba_scores(out, (800, None))
    return {
        "options": options,
        "train_rows": "0:100" if quick else "0:800",
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "untrained_all_1000": full,
        "before": before,
        "after": after,
    }


def run_part(name: str, out_dir: Path, quick: bool) -> dict[str, Any]:
    result = {"small": part_small, "tatoeba": part_tatoeba}[name](quick)
    result["load_average_1m"] = os.getloadavg()[0]
    (out_dir / f"distill-{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _one_thread() -> None:
    """Torch on one thread: the machine is shared with other jobs."""
    import torch

    torch.set_num_threads(1)


def main(out_dir: Path, quick: bool) -> None:
    _one_thread()
    for name in PARTS:
        run_part(name, out_dir, quick)
    write_markdown(out_dir, quick)


def write_markdown(out_dir: Path, quick: bool) -> None:
    parts = {
        n: json.loads((out_dir / f"distill-{n}.json").read_text())
        for n in PARTS
        if (out_dir / f"distill-{n}.json").is_file()
    }
    lines = [
        "## Distillation (`bench_distill.py`)",
        "",
        f"CPU: {cpu_description()}, {os.cpu_count()} cores (torch on 1 thread), shared with other "
        "jobs while it ran (wall-clock figures; speed ratios come from one interleaved run). "
        "Model: all-MiniLM-L6-v2 (packaged), fp32." + (" `--quick` sizes." if quick else ""),
        "",
    ]
    if "small" in parts:
        s = parts["small"]
        o = s["options"]
        sp = s["speed"]
        lines += [
            f"**Smaller student**: 6 -> 3 layers (teacher layers {s['layers']}), MSE on "
            f"{s['sentences']:,} English sentences (every third of the deduplicated STS-B train "
            f"sentences, Banking77 train texts and Cranfield sentences), {o['epochs']} epoch(s), batch {o['batch_size']}, lr {o['lr']}, "
            f"max_seq_length {o['max_seq_length']}, {s['steps']} steps in "
            f"{s['train_seconds']:.0f} s; the step with the best STS-B dev Spearman kept "
            f"(step {s['best_step']}, dev {s['best_dev_spearman']:.4f}).",
            "",
            "| model | layers | STS-B test Spearman | encode, sentences/s |",
            "|---|---|---|---|",
            f"| teacher (all-MiniLM-L6-v2) | 6 | {s['teacher_sts_test']:.4f} | "
            f"{sp['teacher_per_s']:.0f} |",
            f"| distilled student | 3 | {s['student_sts_test']:.4f} | {sp['student_per_s']:.0f} |",
            "",
            f"Spearman difference {s['student_sts_test'] - s['teacher_sts_test']:+.4f}; encode "
            f"speed-up {sp['speedup']:.2f}x (best of {len(sp['seconds']['teacher'])} alternating "
            f"rounds; median {sp['speedup_median']:.2f}x) on the {sp['texts']:,} STS-B test "
            "sentences, torch fp32, one thread.",
            "",
        ]
    if "tatoeba" in parts:
        t = parts["tatoeba"]
        o = t["options"]
        lines += [
            "**Cross-lingual**, Tatoeba bitext retrieval accuracy, each translation finding its "
            "English sentence among all of them (MTEB's Tatoeba figure). Untrained MiniLM on all "
            "1,000 pairs (MTEB publishes 0.086 for deu and 0.061 for spa):",
            "",
            "| " + " | ".join(LANGUAGES) + " |",
            "|" + "---|" * len(LANGUAGES),
            "| "
            + " | ".join(f"{t['untrained_all_1000'][k]['to_english']:.3f}" for k in LANGUAGES)
            + " |",
            "",
            f"Student initialised from MiniLM, distilled from MiniLM on rows {t['train_rows']} of "
            f"every language ({o['epochs']} epoch(s), batch {o['batch_size']}, lr {o['lr']}, "
            f"{t['steps']} steps in {t['train_seconds']:.0f} s), scored on rows 800-999 "
            "(200 pairs per language: 200 candidates instead of 1,000, so higher figures than "
            "the row above):",
            "",
            "| language | before: to English | after: to English | before: from English | "
            "after: from English |",
            "|---|---|---|---|---|",
        ]
        for lang in LANGUAGES:
            b, a = t["before"][lang], t["after"][lang]
            lines.append(
                f"| {lang} | {b['to_english']:.3f} | {a['to_english']:.3f} | "
                f"{b['from_english']:.3f} | {a['from_english']:.3f} |"
            )
        mean_b = statistics.fmean(t["before"][k]["to_english"] for k in LANGUAGES)
        mean_a = statistics.fmean(t["after"][k]["to_english"] for k in LANGUAGES)
        lines += [
            f"| mean | {mean_b:.3f} | {mean_a:.3f} | | |",
            "",
            "MiniLM's vocabulary is English-only (uncased, 30,522 WordPiece tokens): other "
            "languages are cut into many short pieces, so the gain is bounded by what those "
            "pieces can carry. The same command takes a multilingual student "
            "(`--student distilbert-base-multilingual-cased`) when its weights are at hand.",
            "",
        ]
    (out_dir / "distill.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _one_thread()
    results = Path(__file__).resolve().parent / "results"
    quick_run = "--quick" in sys.argv
    for part in [a for a in sys.argv[1:] if not a.startswith("-")] or PARTS:
        run_part(part, results, quick_run)
    write_markdown(results, quick_run)
