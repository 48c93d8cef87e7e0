"""``distilmarco train`` and ``distilmarco mine``: thin wrappers over ``distilmarco.training``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import typer

from distilmarco.cli.app import ModelOption, app, err, out
from distilmarco.model.hub import DEFAULT_MODEL

StepProgress = Callable[[int, int, float | None], None]


@contextmanager
def step_progress(label: str, *, loss_digits: int) -> Iterator[StepProgress]:
    """A transient bar on stderr for a training run: steps done of the total, the latest loss
    and the time left; yields the callback the trainer reports each step to."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None, loss="-")

        def progress(step: int, total: int, loss_value: float | None) -> None:
            shown = "-" if loss_value is None else f"{loss_value:.{loss_digits}f}"
            bar.update(task, completed=step, total=total, loss=shown)

        yield progress


@app.command(
    epilog="\b\nExample: distilmarco train pairs.jsonl --model all-MiniLM-L6-v2 --loss mnrl -o tuned/"
)
def train(
    data: Path = typer.Argument(..., help="Training data: .jsonl, .tsv, or a BEIR folder"),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the trained model"),
    model: str | None = ModelOption,
    loss: str = typer.Option("mnrl", help="mnrl, cached-mnrl, margin-mse, cosent or mse"),
    dev: Path | None = typer.Option(
        None, help="Dev set: STS pairs (.csv/.tsv/.jsonl) or a BEIR/Cranfield folder"
    ),
    epochs: int = typer.Option(1, help="Passes over the data"),
    batch_size: int = typer.Option(32, "--batch-size", help="Examples per step"),
    lr: float = typer.Option(2e-5, help="Peak learning rate (AdamW)"),
    warmup: float = typer.Option(0.1, help="Warm-up: a fraction of all steps (< 1) or a count"),
    seed: int = typer.Option(42, "--seed", help="Seed of every random generator"),
    max_seq_length: int | None = typer.Option(
        None, "--max-seq-length", help="Truncate texts to this many tokens in training"
    ),
    eval_steps: int | None = typer.Option(None, help="Evaluate on --dev every N steps"),
    save_steps: int | None = typer.Option(None, help="Write a resumable checkpoint every N steps"),
    resume: bool = typer.Option(False, help="Continue from the newest checkpoint in --output"),
    mini_batch_size: int = typer.Option(32, help="cached-mnrl: rows embedded at a time"),
    scale: float = typer.Option(20.0, help="Similarity scale of mnrl / cosent"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16 (CUDA)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    layout: str = typer.Option("st6", help="Folder format: st6 (sentence-transformers 6) or st2"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary on stdout"),
) -> None:
    """Fine-tune a model on your own data and save it as a sentence-transformers folder."""

    from distilmarco.training import train as run_training

    with step_progress("training", loss_digits=4) as progress:
        result = run_training(
            data,
            model or DEFAULT_MODEL,
            output,
            loss=loss,
            dev=dev,
            resume=resume,
            progress=progress,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            warmup=warmup,
            seed=seed,
            max_seq_length=max_seq_length,
            eval_steps=eval_steps,
            save_steps=save_steps,
            mini_batch_size=mini_batch_size,
            scale=scale,
            precision=precision,
            device=device,
            layout=layout,
        )
    if as_json:
        out.print_json(json.dumps(asdict(result)))
        return
    err.print(
        f"trained {result.steps} step(s) in {result.train_seconds:.1f}s "
        f"({result.examples_per_second:.1f} examples/s, {result.tokens_per_second:,.0f} tokens/s, "
        f"{result.precision})"
    )
    if result.best_metric is not None:
        err.print(f"best dev score {result.best_metric:.4f} at step {result.best_step}")
    out.print(f"model written to {result.output}", highlight=False)


@app.command(epilog="\b\nExample: distilmarco mine pairs.jsonl --index docs.db -o triplets.jsonl")
def mine(
    pairs: Path = typer.Argument(..., help="(query, positive) pairs: .jsonl, .tsv or BEIR folder"),
    index: Path = typer.Option(..., "--index", help="Index file to mine negatives from"),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file of mined examples"),
    negatives: int = typer.Option(3, help="Negatives per (query, positive) pair"),
    range_min: int = typer.Option(0, help="Skip the candidates ranked above this (0-based)"),
    range_max: int = typer.Option(50, help="Consider candidates ranked below this only"),
    absolute_margin: float | None = typer.Option(
        None, help="Keep a negative only if it scores this much below the positive"
    ),
    relative_margin: float | None = typer.Option(
        None, help="Keep a negative only if it scores below (1 - margin) x the positive's score"
    ),
    sources: str = typer.Option("dense,bm25", help="Candidate sources: dense, bm25 or both"),
    triplets: bool = typer.Option(False, help="One (query, positive, negative) line per negative"),
    keep_short: bool = typer.Option(False, help="Keep pairs that found fewer negatives"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary on stdout"),
) -> None:
    """Mine hard negatives for training pairs from an index (dense and BM25 candidates)."""
    from distilmarco.errors import InputError
    from distilmarco.index import Index
    from distilmarco.training.mining import MiningConfig
    from distilmarco.training.mining import mine as run_mining

    if not index.is_file():
        raise InputError(f"index file {index} does not exist")
    cfg = MiningConfig(
        negatives=negatives,
        range_min=range_min,
        range_max=range_max,
        absolute_margin=absolute_margin,
        relative_margin=relative_margin,
        sources=tuple(s.strip() for s in sources.split(",") if s.strip()),  # type: ignore[misc]
        output_format="triplet" if triplets else "n-tuple",
        keep_short=keep_short,
    )
    with Index(index, create=False) as idx:
        stats = run_mining(idx, pairs, output, cfg)
    if as_json:
        out.print_json(json.dumps(asdict(stats)))
        return
    out.print(
        f"{stats.pairs} pair(s): {stats.written} written to {output}, {stats.short} with fewer "
        f"than {negatives} negatives, in {stats.seconds:.1f}s",
        highlight=False,
    )
