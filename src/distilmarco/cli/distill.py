"""``distilmarco distill``: a thin wrapper over ``distilmarco.distill``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from distilmarco.cli.app import MODEL_ENV, app, err, out
from distilmarco.cli.train import step_progress
from distilmarco.errors import InputError


def parse_layers(text: str | None) -> int | list[int] | None:
    """``3`` (a count) or ``1,3,5`` (the teacher's layer numbers, 0-based)."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"--layers {text!r} must be a count (3) or layer numbers (1,3,5)"
        ) from None
    if not values:
        raise InputError("--layers is empty")
    return values[0] if len(values) == 1 and "," not in text else values


def parse_languages(text: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else None


@app.command(
    epilog="\b\nExample: distilmarco distill ../shared/data/tatoeba --teacher all-MiniLM-L6-v2 "
    "--student all-MiniLM-L6-v2 --rows 0:800 -o student/"
)
def distill(
    data: Path = typer.Argument(
        ..., help="Parallel sentences: TSV (source<TAB>translation...) or a Tatoeba folder"
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the student model"),
    teacher: str | None = typer.Option(
        None,
        "--teacher",
        envvar=MODEL_ENV,
        help="Teacher: Hub id or local folder (default: msmarco-distilbert-base-v4)",
    ),
    student: str | None = typer.Option(None, "--student", help="Student: Hub id or local folder"),
    layers: str | None = typer.Option(
        None, "--layers", help="Instead of --student: keep K teacher layers (3) or these (1,3,5)"
    ),
    rows: str | None = typer.Option(None, "--rows", help="Train on rows START:STOP of each set"),
    languages: str | None = typer.Option(
        None, "--languages", help="Tatoeba languages to use, e.g. deu,spa (default: all)"
    ),
    dev: Path | None = typer.Option(None, help="Dev parallel sentences (TSV or Tatoeba folder)"),
    dev_rows: str | None = typer.Option(None, "--dev-rows", help="Rows START:STOP of --dev"),
    eval_steps: int | None = typer.Option(None, help="Evaluate on --dev every N steps"),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Teacher vector cache (default ~/.cache/distilmarco)"
    ),
    epochs: int = typer.Option(1, help="Passes over the data"),
    batch_size: int = typer.Option(32, "--batch-size", help="Sentences per step"),
    lr: float = typer.Option(1e-4, help="Peak learning rate (AdamW)"),
    warmup: float = typer.Option(0.1, help="Warm-up: a fraction of all steps (< 1) or a count"),
    seed: int = typer.Option(42, "--seed", help="Seed of every random generator"),
    max_seq_length: int | None = typer.Option(
        None, "--max-seq-length", help="Truncate the student's texts to this many tokens"
    ),
    save_steps: int | None = typer.Option(None, help="Write a resumable checkpoint every N steps"),
    resume: bool = typer.Option(False, help="Continue from the newest checkpoint in --output"),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16 (CUDA)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    layout: str = typer.Option("st6", help="Folder format: st6 (sentence-transformers 6) or st2"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable summary on stdout"),
) -> None:
    """Distill a teacher into a smaller or cross-lingual student (MSE to the teacher's vectors
    of each source sentence, for the source and its translations)."""

    from distilmarco.model.hub import DEFAULT_MODEL
    from distilmarco.training import distill as run_distill
    from distilmarco.training.parallel import RowRange

    with step_progress("distilling", loss_digits=6) as progress:
        result = run_distill(
            data,
            teacher or DEFAULT_MODEL,
            output,
            student=student,
            layers=parse_layers(layers),
            rows=RowRange.parse(rows) if rows else None,
            languages=parse_languages(languages),
            dev=dev,
            dev_rows=RowRange.parse(dev_rows) if dev_rows else None,
            cache_dir=cache_dir,
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
            precision=precision,
            device=device,
            layout=layout,
        )
    if as_json:
        out.print_json(json.dumps(asdict(result)))
        return
    err.print(
        f"distilled {result.steps} step(s) in {result.train_seconds:.1f}s "
        f"({result.examples_per_second:.1f} sentences/s, {result.precision})"
    )
    if result.best_metric is not None:
        err.print(f"best dev score {result.best_metric:.4f} at step {result.best_step}")
    out.print(f"model written to {result.output}", highlight=False)
