"""Reading texts from and writing vectors to the file formats people keep them in.

Inputs: text lines (``.txt`` and anything unknown), and tables whose text is in one ``column``:
JSONL (a field), CSV/TSV and Parquet (a column). A column given for plain text is an error.
Outputs: ``.npy``, ``.parquet``, ``.jsonl``. Errors name the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import FormatError, InputError, MissingExtraError

TABLE_SUFFIXES = (".jsonl", ".csv", ".tsv", ".parquet")
STDIN = "-"


def is_table(path: Path) -> bool:
    return path.suffix.lower() in TABLE_SUFFIXES


@dataclass(frozen=True)
class TextFile:
    """The texts of one input, and how many blank lines of plain text were left out."""

    texts: list[str]
    blank_lines: int = 0


def read_texts(path: Path, column: str | None = None, option: str = "--column") -> list[str]:
    """The texts in ``path`` (see ``read_text_file``)."""
    return read_text_file(path, column, option).texts


def is_stdin(path: Path) -> bool:
    return str(path) == STDIN


def read_text_file(path: Path, column: str | None = None, option: str = "--column") -> TextFile:
    """The texts in ``path``; the format follows the suffix. Plain text gives one text per line,
    blank lines skipped and counted. ``-`` is standard input: text lines, or JSONL when a
    ``column`` is given. ``option`` names the command-line option that chose ``column``, for the
    error messages."""
    if is_stdin(path):
        if column is None:
            return lines_of(sys.stdin)
        return TextFile(_texts_of_rows(jsonl_objects(path), path, column, option))
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if column is not None and not is_table(path):
        raise InputError(
            f"{option} {column!r} applies to tables ({', '.join(TABLE_SUFFIXES)}); {path} is "
            "plain text, one text per line"
        )
    if suffix == ".jsonl":
        return TextFile(_read_jsonl(path, column or "text", option))
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        return TextFile(_read_csv(path, column or "text", delimiter, option))
    if suffix == ".parquet":
        return TextFile(_read_parquet(path, column or "text", option))
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            return lines_of(f)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not valid UTF-8 text: {exc}") from exc


def lines_of(lines: Iterable[str]) -> TextFile:
    """One text per line; blank (or whitespace-only) lines are not texts."""
    texts, blank = [], 0
    for line in lines:
        text = line.rstrip("\r\n")
        if text.strip():
            texts.append(text)
        else:
            blank += 1
    return TextFile(texts, blank)


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (``-``: standard input).

    A line that is not JSON, or not a JSON object, is a ``FormatError`` naming the file and line.
    """
    with nullcontext(sys.stdin) if is_stdin(path) else open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise FormatError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            yield n, row


def _read_jsonl(path: Path, field: str, option: str) -> list[str]:
    return _texts_of_rows(jsonl_objects(path), path, field, option)


def _texts_of_rows(
    rows: Iterable[tuple[int, dict[str, Any]]], path: Path, field: str, option: str
) -> list[str]:
    texts = []
    for n, row in rows:
        if field not in row:
            raise InputError(f"{path}:{n}: no field {field!r} (use {option} to choose one)")
        if not isinstance(row[field], str):
            raise InputError(f"{path}:{n}: field {field!r} is not a string")
        texts.append(row[field])
    return texts


def _read_csv(path: Path, column: str, delimiter: str, option: str) -> list[str]:
    texts = []
    for _, row in csv_rows(path, delimiter):
        if column not in row:
            raise InputError(
                f"{path} has no column {column!r}; columns: {list(row)} "
                f"(use {option} to choose one)"
            )
        texts.append(row[column])
    return texts


def csv_rows(path: Path, delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row by column name) for each non-empty row of a CSV/TSV file with a header.

    A quoted field that never closes, or a row with more or fewer fields than the header, is a
    ``FormatError`` naming the file and the line where the row starts.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                return
            start = reader.line_num + 1
            for row in reader:
                if row:
                    if len(row) != len(header):
                        raise FormatError(
                            f"{path}:{start}: {len(row)} field(s), but the header has "
                            f"{len(header)} ({', '.join(header)})"
                        )
                    yield start, dict(zip(header, row, strict=True))
                start = reader.line_num + 1
        except csv.Error as exc:
            raise FormatError(
                f"{path}:{start}: malformed CSV ({exc}; is a quote left open on this line?)"
            ) from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not valid UTF-8 text: {exc}") from exc


def _read_parquet(path: Path, column: str, option: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "io", "reading Parquet") from exc
    table = pq.read_table(path)
    if column not in table.column_names:
        raise InputError(
            f"{path} has no column {column!r}; columns: {table.column_names} "
            f"(use {option} to choose one)"
        )
    return [v if isinstance(v, str) else "" for v in table.column(column).to_pylist()]


def check_destination(path: Path, option: str = "--output") -> None:
    """Refuse, before any work is done, an output whose folder is missing or not writable."""
    folder = path.parent
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{option} {path}: the folder {folder} is not writable")


def write_vectors(path: Path, vectors: np.ndarray, texts: list[str]) -> None:
    """Write ``vectors`` (row i for texts[i]) in the format named by the suffix."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, vectors)
    elif suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for text, vec in zip(texts, vectors, strict=True):
                f.write(json.dumps({"text": text, "embedding": vec.tolist()}) + "\n")
    elif suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MissingExtraError("pyarrow", "io", "writing Parquet") from exc
        dim = vectors.shape[1]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
        pq.write_table(pa.table({"text": texts, "embedding": emb}), path)
    else:
        raise InputError(f"output {path} must end in .npy, .jsonl or .parquet")
