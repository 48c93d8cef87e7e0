"""What the app commands share: reading texts and labels, embedding them, opening an index, and
writing rows (JSONL on stdout, or ``--output`` .jsonl / .csv); notices go to stderr."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from distilmarco.cli.app import err, out
from distilmarco.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from distilmarco.encoder import Encoder
    from distilmarco.index import Index
    from distilmarco.index.identity import Engine

IndexOption = typer.Option(None, "--index", help="Index file (see `distilmarco index`)")
OutputOption = typer.Option(
    None, "--output", "-o", help=".jsonl or .csv (default: JSONL on stdout)"
)
MetricOption = typer.Option("cosine", help="cosine, dot or euclidean (negated distance)")
TextsArgument = typer.Argument(
    ..., help="Texts: lines, .jsonl, .csv/.tsv or .parquet (- reads stdin)"
)


def read_texts(
    path: Path, column: str | None, what: str = "texts", option: str = "--column"
) -> list[str]:
    from distilmarco.textio import read_text_file

    found = read_text_file(path, column, option)
    if found.blank_lines:
        err.print(f"{path}: skipped {found.blank_lines} blank line(s)", highlight=False)
    texts = found.texts
    if not texts:
        raise InputError(f"{path} holds no {what}")
    return texts


def read_labels(path: Path, name: str) -> list[str]:
    """The ``name`` field/column of a table file (plain text files have no labels)."""
    if path.suffix.lower() not in (".jsonl", ".csv", ".tsv", ".parquet"):
        raise InputError(
            f"labels need a table (.csv, .tsv, .jsonl or .parquet); {path} is plain text"
        )
    return read_texts(path, name, "labels", "--label-column")


def embed_texts(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    return encoder.encode(list(texts), truncation="count", show_progress=len(texts) > 256)


def refuse_with_index(**given: object) -> None:
    """Options that choose how texts are read do not apply to an index (it holds its texts):
    giving one is an error, not a silent no-op."""
    named = [name for name, value in given.items() if value not in (None, False, [], ())]
    if named:
        raise InputError(
            f"{' and '.join(named)} cannot be used with --index (the index holds its texts)"
        )


def open_index(path: Path, model: str | None, how: Engine) -> Index:
    """The index at ``path``; ``model`` (another folder of the same model) is checked by content,
    and queries are embedded on the index's recorded engine unless ``how`` says otherwise."""
    from distilmarco.index import Index

    if not path.is_file():
        raise InputError(f"index file {path} does not exist")
    return Index(path, model, create=False, engine=how)


def check_outputs(output: Path | None, *others: tuple[str, Path | None]) -> None:
    """Check every destination before any work: the right suffix, an existing writable folder."""
    from distilmarco.textio import check_destination

    if output is not None:
        if output.suffix.lower() not in (".jsonl", ".csv"):
            raise InputError(f"output {output} must end in .jsonl or .csv")
        check_destination(output)
    for option, path in others:
        if path is not None:
            check_destination(path, option)


def emit(rows: Sequence[dict[str, Any]], output: Path | None) -> None:
    """Rows as JSONL on stdout, or into ``output`` (.jsonl, or .csv with lists joined by '|')."""
    if output is None:
        for row in rows:
            out.print(json.dumps(row, ensure_ascii=False), markup=False, highlight=False)
        return
    suffix = output.suffix.lower()
    if suffix == ".jsonl":
        with open(output, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    elif suffix == ".csv":
        with open(output, "w", encoding="utf-8", newline="") as f:
            fields = list(rows[0]) if rows else []
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: "|".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()}
                )
    else:
        raise InputError(f"output {output} must end in .jsonl or .csv")
    err.print(f"wrote {len(rows)} row(s) to {output}", highlight=False)
