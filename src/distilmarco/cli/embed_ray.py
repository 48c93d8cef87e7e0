"""``distilmarco embed INPUT -o FOLDER --ray ...`` and ``distilmarco embed verify``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from distilmarco.cli.app import JsonFlag, app, err, out, styled

if TYPE_CHECKING:
    from distilmarco.distributed.embed import Chunking
    from distilmarco.index.identity import Engine

SHOWN = 20  # ids listed per kind of problem; --json lists them all
VERIFY_COMMAND = "embed-verify"  # `embed verify` is rewritten to this before parsing


def route(argv: list[str]) -> list[str]:
    """``embed verify ...`` -> the ``embed-verify`` command: ``embed`` takes a file argument, so
    it cannot also be a group; a file named ``verify`` is still embedded as ``./verify``."""
    if argv[:2] == ["embed", "verify"]:
        return [VERIFY_COMMAND, *argv[2:]]
    return argv


def embed_on_ray(
    input: Path,
    output: Path,
    *,
    address: str,
    model: str | None,
    column: str | None,
    id_column: str | None,
    chunking: Chunking | None,
    how: Engine,
    checkpoint: Path | None,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
) -> None:
    """Run the Ray job and say what it did."""
    from distilmarco.distributed.job import JobSettings, run_job
    from distilmarco.distributed.ray_import import require_ray
    from distilmarco.model.hub import DEFAULT_MODEL

    require_ray("--ray")
    if output.exists() and not output.is_dir():
        raise typer.BadParameter(
            f"{output} is a file; with --ray, -o names a folder", param_hint="-o"
        )
    settings = JobSettings(
        input=input, output=output, model=model or DEFAULT_MODEL, id_column=id_column or "id",
        column=column or "text", chunking=chunking, engine=how,
        actors=(1, actors), cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
        checkpoint=checkpoint,
    )  # fmt: skip
    report = run_job(settings, address=address)
    resumed = (
        f", {report.resumed_documents} resumed from the checkpoint"
        if report.resumed_documents
        else ""
    )
    err.print(
        f"wrote {report.rows} passage(s) of {report.documents} document(s) in {report.files} "
        f"shard(s) to {output}{resumed} in {report.seconds:.1f}s"
    )


@app.command(
    VERIFY_COMMAND,
    hidden=True,
    epilog="\b\nExample: distilmarco embed-verify vectors/ --against corpus.parquet",
)
def embed_verify(
    folder: Path = typer.Argument(..., help="Embeddings folder written by embed --ray"),
    against: Path = typer.Option(..., "--against", help="The input file it was made from"),
    id_column: str | None = typer.Option(None, help="Column holding each row's id [as recorded]"),
    as_json: bool = JsonFlag,
) -> None:
    """Check that every input id is in FOLDER exactly once, with all its passages; exit 1 when
    not. Also spelled `distilmarco embed verify FOLDER --against INPUT`."""
    from distilmarco.distributed.manifest import verify

    verdict = verify(folder, against, id_column)
    if as_json:
        out.print_json(json.dumps({**asdict(verdict), "ok": verdict.ok}))
    else:
        for label, ids in (("missing", verdict.missing), ("duplicated", verdict.duplicated),
                           ("not in the input", verdict.unexpected)):  # fmt: skip
            if ids:
                more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
                err.print(
                    styled((f"{len(ids)} {label}:", "red"), f" {', '.join(ids[:SHOWN])}{more}")
                )
        for problem in verdict.problems:
            err.print(styled(("problem:", "red"), f" {problem}"))
        if verdict.ok:
            out.print(f"ok: {verdict.documents} document(s), {verdict.rows} passage(s), each once")
    if not verdict.ok:
        raise typer.Exit(1)
