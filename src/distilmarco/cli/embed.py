"""``distilmarco embed`` and ``distilmarco info``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from distilmarco.cli.app import (
    MODEL_ENV,
    BackendOption,
    BatchTokensOption,
    ColumnOption,
    DeviceOption,
    JsonFlag,
    ModelOption,
    PrecisionOption,
    app,
    engine,
    err,
    make_encoder,
    out,
    styled,
)
from distilmarco.model.hub import DEFAULT_MODEL


@app.command(epilog="\b\nExample: distilmarco embed notes.txt -o vectors.npy")
def embed(
    input: Path = typer.Argument(
        ..., help="Text lines, .jsonl, .csv/.tsv or .parquet; - reads standard input"
    ),
    output: Path = typer.Option(..., "--output", "-o", help=".npy, .parquet or .jsonl"),
    model: str | None = ModelOption,
    column: str | None = ColumnOption,
    normalize: bool = typer.Option(False, help="Scale vectors to unit length"),
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    strict: bool = typer.Option(False, help="Fail on inputs longer than the model's limit"),
) -> None:
    """Embed every text in INPUT and write the vectors to OUTPUT."""
    from distilmarco.textio import check_destination, read_text_file, write_vectors

    if output.suffix.lower() not in (".npy", ".parquet", ".jsonl"):
        raise typer.BadParameter(f"{output} must end in .npy, .parquet or .jsonl", param_hint="-o")
    check_destination(output)
    found = read_text_file(input, column)
    if found.blank_lines:
        err.print(f"{input}: skipped {found.blank_lines} blank line(s)", highlight=False)
    texts = found.texts
    encoder = make_encoder(model, engine(backend, precision, device, batch_tokens))
    vectors, stats = encoder.encode_with_stats(
        texts,
        normalize=normalize,
        truncation="error" if strict else "count",
        show_progress=True,
    )
    write_vectors(output, vectors, texts)
    if stats.truncated:
        err.print(f"{stats.truncated} input(s) were truncated to {encoder.max_seq_length} tokens")
    err.print(
        f"wrote {vectors.shape[0]} x {vectors.shape[1]} vectors to {output} "
        f"in {stats.seconds:.1f}s ({stats.tokens / max(stats.seconds, 1e-9):,.0f} tokens/s)"
    )


@app.command(epilog="\b\nExample: distilmarco info msmarco-distilbert-base-v4 --json")
def info(
    model: str = typer.Argument(DEFAULT_MODEL, envvar=MODEL_ENV, help="Hub id or local folder"),
    as_json: bool = JsonFlag,
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
) -> None:
    """Describe a model: architecture, dimensions, max length, pooling, similarity, files."""
    facts = asdict(make_encoder(model, engine(backend, precision, device, None)).info)
    if as_json:
        out.print_json(json.dumps(facts))
        return
    for key, value in facts.items():
        if key == "files":
            value = ", ".join(value)
        elif isinstance(value, tuple):
            value = ", ".join(value) or "-"
        out.print(styled((f"{key:>16}", "bold"), f"  {value}"))
