"""``distilmarco index add|search|get|delete|stats|reindex``: thin wrappers over ``Index``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from distilmarco.cli.app import (
    MODEL_ENV,
    BackendOption,
    BatchTokensOption,
    ColumnOption,
    DeviceOption,
    JsonFlag,
    PrecisionOption,
    app,
    engine,
    err,
    out,
    styled,
)

if TYPE_CHECKING:
    from distilmarco.index import Index
    from distilmarco.index.identity import Engine

index_app = typer.Typer(
    help="Build and search a semantic index (one SQLite file, or a Milvus collection).",
    epilog='\b\nExample: distilmarco index search "how do planes fly?" --index docs.db',
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")

DbOption = typer.Option(
    Path("distilmarco.db"), "--index", help="Index file, or milvus://HOST:PORT/COLLECTION"
)
JsonOption = JsonFlag


def _open(
    db: Path, model: str | None = None, how: Engine | None = None, create: bool = False
) -> Index:
    from distilmarco.index import Index

    return Index(db, model, create=create, engine=how)


@index_app.command(
    "add", epilog="\b\nExample: distilmarco index add notes/ papers.jsonl --index docs.db"
)
def add(
    paths: list[Path] = typer.Argument(
        ..., help="Files or folders (.txt .md .rst .html .jsonl .csv .parquet); - reads JSONL"
    ),
    db: Path = DbOption,
    model: str | None = typer.Option(
        None, "--model", "-m", envvar=MODEL_ENV, help="Model for a new index (default: recorded)"
    ),
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    column: str | None = ColumnOption,
    id_column: str | None = typer.Option(
        None, help="Field/column holding each row's id (default: id or _id when present)"
    ),
    include: list[str] = typer.Option(
        [], "--include", help="Glob of files to index, any suffix read as text (repeatable)"
    ),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="Glob of files to leave out (repeatable)"
    ),
    sync: bool = typer.Option(False, "--sync", help="Remove documents whose files are gone"),
    as_json: bool = JsonOption,
) -> None:
    """Index files and folders; only new or changed content is embedded."""
    from rich.progress import Progress

    from distilmarco.index.ingest import describe_skipped, ingest

    new = not db.exists()
    try:
        with (
            _open(
                db, model, engine(backend, precision, device, batch_tokens), create=True
            ) as index,
            Progress(console=err, transient=True) as bar,
        ):
            task = bar.add_task("embedding", total=None)
            report = ingest(
                index,
                paths,
                sync=sync,
                field=column,
                id_column=id_column,
                include=include,
                exclude=exclude,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            index.optimize_if_large()
    except BaseException:
        if new:  # a failed first add leaves no file behind, rather than an empty index
            _remove_index(db)
        raise
    if report.skipped:
        err.print(describe_skipped(report.skipped), highlight=False, markup=False)
    if as_json:
        out.print_json(json.dumps(asdict(report)))
    else:
        out.print(
            f"{report.files} file(s), {report.documents} document(s): {report.added} added, "
            f"{report.updated} updated, {report.unchanged} unchanged, {report.deleted} deleted"
            + (f", {report.empty} empty skipped" if report.empty else "")
        )


def _remove_index(db: Path) -> None:
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), db.with_name(db.name + ".ann")):
        path.unlink(missing_ok=True)


@index_app.command(
    "search",
    epilog='\b\nExample: distilmarco index search "how do planes fly?" --index docs.db --mode hybrid -k 5',
)
def search(
    query: str = typer.Argument(..., help="What to look for, in plain words"),
    db: Path = DbOption,
    k: int = typer.Option(10, "-k", "--top-k", help="Number of documents"),
    mode: str = typer.Option("dense", help="dense, bm25 or hybrid"),
    where: list[str] = typer.Option(
        [], "--where", "-w", help="Metadata filter key=value (repeatable)"
    ),
    exact: bool | None = typer.Option(None, "--exact/--ann", help="Force exact or HNSW search"),
    model: str | None = typer.Option(
        None, "--model", "-m", help="The index's model from another folder (checked by content)"
    ),
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
    as_json: bool = JsonOption,
    rerank: str | None = typer.Option(
        None, "--rerank", help="Cross-encoder (Hub id or folder) re-scoring the first hits"
    ),
    rerank_depth: int = typer.Option(
        100, "--rerank-depth", min=1, help="First-stage hits the cross-encoder re-scores"
    ),
) -> None:
    """Search the index; prints score, id and the best passage."""
    from distilmarco.index.filters import parse_where_pairs

    if exact is not None and mode == "bm25":
        raise typer.BadParameter("--exact/--ann choose how dense search runs; bm25 has none")
    with _open(db, model, engine(backend, precision, device, batch_tokens)) as index:
        where_ = parse_where_pairs(where) or None
        hits = index.search(
            query,
            k,
            where=where_,
            mode=mode,  # type: ignore[arg-type]
            exact=exact,
            rerank=rerank,
            rerank_depth=rerank_depth,
        )
    if as_json:
        out.print_json(json.dumps([asdict(h) for h in hits]))
        return
    if not hits:
        out.print("no hits")
    words = {w.lower() for w in query.split() if len(w) > 2}
    for hit in hits:
        out.print(styled((f"{hit.score:.4f}", "bold"), "  ", (hit.id, "cyan")))
        out.print(styled("    ", *_highlight(" ".join(hit.passage.split())[:400], words)))


def _highlight(passage: str, words: set[str]) -> list[str | tuple[str, str]]:
    """The passage's words, those of the query marked (a word is never read as markup)."""
    parts: list[str | tuple[str, str]] = []
    for i, w in enumerate(passage.split()):
        if i:
            parts.append(" ")
        parts.append((w, "yellow") if w.lower().strip(".,;:!?()[]\"'") in words else w)
    return parts


@index_app.command("get", epilog="\b\nExample: distilmarco index get cran-1 --index docs.db")
def get(
    id: str = typer.Argument(..., help="Document id"),
    db: Path = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one document."""
    with _open(db) as index:
        doc = index.get(id)
    if as_json:
        out.print_json(json.dumps(asdict(doc)))
    else:
        out.print(styled((doc.id, "bold"), f"  {doc.chunks} chunk(s)  {json.dumps(doc.metadata)}"))
        out.print(doc.text)


@index_app.command(
    "delete", epilog="\b\nExample: distilmarco index delete cran-1 cran-2 --index docs.db"
)
def delete(
    ids: list[str] = typer.Argument(..., help="Document ids"),
    db: Path = DbOption,
) -> None:
    """Remove documents by id."""
    with _open(db) as index:
        n = index.delete(ids)
    out.print(
        f"deleted {n} of {len(ids)} document(s)"
        + (" (the rest were not found)" if n < len(ids) else "")
    )


@index_app.command("stats", epilog="\b\nExample: distilmarco index stats --index docs.db --json")
def stats(db: Path = DbOption, as_json: bool = JsonOption) -> None:
    """Counts, model, chunking, file size and the state of the ANN cache."""
    with _open(db) as index:
        found = index.stats()
    facts = {**asdict(found), "ann": found.ann.to_json()}  # only the ANN fields that apply
    if as_json:
        out.print_json(json.dumps(facts))
        return
    for key, value in facts.items():
        out.print(styled((f"{key:>14}", "bold"), f"  {value}"))


@index_app.command(
    "reindex",
    epilog="\b\nExample: distilmarco index reindex --index docs.db --backend onnx --precision int8",
)
def reindex(
    db: Path = DbOption,
    model: str | None = typer.Option(
        None, "--model", "-m", help="New model (default: the recorded one)"
    ),
    backend: str | None = BackendOption,
    precision: str | None = PrecisionOption,
    device: str = DeviceOption,
    batch_tokens: int | None = BatchTokensOption,
) -> None:
    """Re-embed every document with another model or engine (default: the recorded ones)."""
    from distilmarco.index import Index

    with Index(db, create=False, engine=engine(backend, precision, device, batch_tokens)) as index:
        n = index.reindex(model or index.store.meta().get("model_id") or "")
        index.optimize_if_large()
    out.print(f"re-embedded {n} document(s) with {model or 'the recorded model'}")


@index_app.command(
    "push",
    epilog="\b\nExample: distilmarco index push vectors/ --to milvus://127.0.0.1:19530/passages",
)
def push(
    folder: Path = typer.Argument(..., help="Embeddings folder written by embed --ray"),
    to: str = typer.Option(..., "--to", help="Milvus collection: milvus://HOST:PORT/COLLECTION"),
    batch_rows: int = typer.Option(1000, "--batch-rows", min=1, help="Passages per upsert"),
    as_json: bool = JsonOption,
) -> None:
    """Load precomputed vectors into a Milvus collection (no re-embedding); re-running it
    overwrites the same rows, never duplicates them."""
    from rich.progress import Progress

    from distilmarco.index.milvus.push import push as push_folder
    from distilmarco.index.milvus.push import require_pyarrow

    require_pyarrow()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("pushing", total=None)
        report = push_folder(
            folder,
            to,
            batch_rows=batch_rows,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        out.print_json(json.dumps(asdict(report)))
    else:
        rate = report.rows / report.seconds if report.seconds else 0.0
        out.print(
            f"pushed {report.rows} passage(s) to {report.location} ({report.documents} "
            f"document(s) there) in {report.seconds:.1f} s, {rate:,.0f} rows/s"
        )
