"""``distilmarco embed`` and ``distilmarco info``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from distilmarco.cli import embed_ray as _embed_ray  # noqa: F401  (registers embed verify)
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
    output: Path = typer.Option(
        ..., "--output", "-o", help=".npy, .parquet or .jsonl (with --ray: a folder)"
    ),
    model: str | None = ModelOption,
    column: str | None = ColumnOption,
    normalize: bool = typer.Option(False, help="Scale vectors to unit length"),
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    strict: bool = typer.Option(False, help="Fail on inputs longer than the model's limit"),
    ray: str | None = typer.Option(
        None, "--ray", help="Embed on Ray: auto (the running cluster, else a local one) or ADDRESS"
    ),
    id_column: str | None = typer.Option(
        None, help="With --ray: column holding each row's id [id]"
    ),
    chunk: bool = typer.Option(False, "--chunk", help="With --ray: cut documents into passages"),
    chunk_tokens: int | None = typer.Option(None, help="With --chunk: tokens per passage"),
    chunk_overlap: int | None = typer.Option(
        None, help="With --chunk: tokens shared by neighbours"
    ),
    checkpoint: Path | None = typer.Option(
        None, help="With --ray: folder of committed shards; a re-run resumes from it"
    ),
    actors: int = typer.Option(1, min=1, help="With --ray: most embedding actors"),
    cpus_per_actor: float = typer.Option(1.0, min=0.0, help="With --ray: CPUs (threads) per actor"),
    gpus_per_actor: float = typer.Option(0.0, min=0.0, help="With --ray: GPUs per actor"),
) -> None:
    """Embed every text in INPUT and write the vectors to OUTPUT (with --ray: a folder of Parquet
    shards and a manifest; check it with `distilmarco embed verify OUTPUT --against INPUT`)."""
    from distilmarco.textio import check_destination, read_text_file, write_vectors

    ray_only = {"--id-column": id_column, "--checkpoint": checkpoint, "--chunk": chunk or None,
                "--chunk-tokens": chunk_tokens, "--chunk-overlap": chunk_overlap,
                "--actors": actors if actors != 1 else None,
                "--cpus-per-actor": cpus_per_actor if cpus_per_actor != 1.0 else None,
                "--gpus-per-actor": gpus_per_actor or None}  # fmt: skip
    if ray is not None:
        from distilmarco.cli.embed_ray import embed_on_ray
        from distilmarco.distributed.embed import Chunking

        if normalize or strict:
            raise typer.BadParameter("--normalize and --strict do not apply with --ray")
        cut = chunk or chunk_tokens is not None or chunk_overlap is not None
        embed_on_ray(
            input, output, address=ray, model=model, column=column, id_column=id_column,
            chunking=Chunking(chunk_tokens, chunk_overlap) if cut else None,
            how=engine(backend, precision, device, batch_tokens), checkpoint=checkpoint,
            actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
        )  # fmt: skip
        return
    given = [name for name, value in ray_only.items() if value is not None]
    if given:
        raise typer.BadParameter(f"{', '.join(given)} only apply with --ray")

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
