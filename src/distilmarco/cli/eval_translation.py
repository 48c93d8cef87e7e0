"""``distilmarco eval translation | mse``: cross-lingual figures on parallel sentences."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from distilmarco.cli.app import (
    MODEL_ENV,
    BackendOption,
    BatchTokensOption,
    DeviceOption,
    JsonFlag,
    ModelOption,
    PrecisionOption,
    engine,
    make_encoder,
    out,
)
from distilmarco.cli.distill import parse_languages
from distilmarco.cli.evaluate import eval_app

RowsOption = typer.Option(None, "--rows", help="Rows START:STOP of each set, e.g. 800:")
LanguagesOption = typer.Option(None, "--languages", help="Tatoeba languages, e.g. deu,spa")


def _sets(data: Path, rows: str | None, languages: str | None):  # type: ignore[no-untyped-def]
    from distilmarco.training.parallel import RowRange, read_parallel

    return read_parallel(data, RowRange.parse(rows) if rows else None, parse_languages(languages))


def _direction(name: str, data: Path) -> tuple[str, str]:
    """Column names for the two directions: ``deu->eng`` for a Tatoeba language."""
    if data.is_dir():
        return f"{name}->eng", f"eng->{name}"
    return "translation->source", "source->translation"


@eval_app.command(
    "translation",
    epilog="\b\nExample: distilmarco eval translation ../shared/data/tatoeba --rows 800: "
    "--languages deu,spa -m student/",
)
def translation(
    data: Path = typer.Argument(..., help="Parallel sentences: TSV or a Tatoeba folder"),
    model: str | None = ModelOption,
    rows: str | None = RowsOption,
    languages: str | None = LanguagesOption,
    sts: Path | None = typer.Option(
        None, "--sts", help="Also: a file of scored sentence pairs (two languages): Spearman"
    ),
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    as_json: bool = JsonFlag,
) -> None:
    """Bitext retrieval accuracy both ways (each translation finding its source among all the
    set's sources, and back), as MTEB's Tatoeba and sentence-transformers' TranslationEvaluator
    compute it; plus MTEB's weighted F1 of the translation -> source direction."""
    from distilmarco.evaluation.crosslingual import evaluate_translation

    encoder = make_encoder(model, engine(backend, precision, device, batch_tokens))
    results = evaluate_translation(encoder, _sets(data, rows, languages))
    report: dict[str, Any] = {
        "model": encoder.model_id,
        "sets": [{"name": r.name, **asdict(r.scores), "mean": r.scores.mean} for r in results],
    }
    if sts is not None:
        from distilmarco.evaluation.sts import evaluate_sts, read_pairs

        res = evaluate_sts(encoder, read_pairs(sts))
        report["sts"] = {"file": str(sts), "pairs": res.pairs, **res.metrics}
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"bitext retrieval, {encoder.model_id}", box=box.SIMPLE)
    for col in ("set", "pairs", "direction", "accuracy", "direction", "accuracy", "F1"):
        table.add_column(col)
    for r in results:
        to_src, from_src = _direction(r.name, data)
        s = r.scores
        table.add_row(
            r.name,
            str(s.pairs),
            to_src,
            f"{s.src2trg:.4f}",
            from_src,
            f"{s.trg2src:.4f}",
            f"{s.f1:.4f}",
        )
    out.print(table)
    if "sts" in report:
        x = report["sts"]
        out.print(
            f"cross-lingual STS {sts}: Spearman {x['spearman']:.4f}, Pearson {x['pearson']:.4f} "
            f"({x['pairs']} pairs)"
        )


@eval_app.command(
    "mse",
    epilog="\b\nExample: distilmarco eval mse ../shared/data/tatoeba --rows 800: "
    "--teacher all-MiniLM-L6-v2 -m student/",
)
def mse(
    data: Path = typer.Argument(..., help="Parallel sentences: TSV or a Tatoeba folder"),
    teacher: str | None = typer.Option(
        None,
        "--teacher",
        envvar=MODEL_ENV,
        help="Teacher: Hub id or local folder (default: msmarco-distilbert-base-v4)",
    ),
    model: str | None = ModelOption,
    rows: str | None = RowsOption,
    languages: str | None = LanguagesOption,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    as_json: bool = JsonFlag,
) -> None:
    """MSE x 100 between the teacher's vectors of the sources and the student's (-m) vectors of
    the sources and of their translations, as sentence-transformers' MSEEvaluator reports it."""
    from distilmarco.evaluation.crosslingual import evaluate_mse

    how = engine(backend, precision, device, batch_tokens)
    student_enc = make_encoder(model, how)
    teacher_enc = make_encoder(teacher, how)
    results = evaluate_mse(teacher_enc, student_enc, _sets(data, rows, languages))
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "teacher": teacher_enc.model_id,
                    "model": student_enc.model_id,
                    "sets": [asdict(r) for r in results],
                }
            )
        )
        return
    table = Table(
        title=f"MSE x 100, {student_enc.model_id} against {teacher_enc.model_id}", box=box.SIMPLE
    )
    for col in ("set", "sentences", "sources", "translations"):
        table.add_column(col)
    for r in results:
        shown = "-" if r.translation_mse is None else f"{r.translation_mse:.4f}"
        table.add_row(r.name, str(r.sentences), f"{r.source_mse:.4f}", shown)
    out.print(table)
