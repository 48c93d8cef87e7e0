"""Reading texts from and writing vectors to the file formats people keep them in.

Inputs: text lines (``.txt`` and anything unknown), JSONL (``--field``), CSV (``--column``), Parquet.
Outputs: ``.npy``, ``.parquet``, ``.jsonl``. Errors name the file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import FormatError, InputError, MissingExtraError


def read_texts(path: Path, field: str | None = None, column: str | None = None) -> list[str]:
    """The texts in ``path``; the format follows the suffix."""
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, field or "text")
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, column or "text", "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _read_parquet(path, column or field or "text")
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            return [line.rstrip("\r\n") for line in f]
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not valid UTF-8 text: {exc}") from exc


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file.

    A line that is not JSON, or not a JSON object, is a ``FormatError`` naming the file and line.
    """
    with open(path, encoding="utf-8") as f:
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


def _read_jsonl(path: Path, field: str) -> list[str]:
    texts = []
    for n, row in jsonl_objects(path):
        if field not in row:
            raise InputError(f"{path}:{n}: no field {field!r} (use --field to choose one)")
        if not isinstance(row[field], str):
            raise InputError(f"{path}:{n}: field {field!r} is not a string")
        texts.append(row[field])
    return texts


def _read_csv(path: Path, column: str, delimiter: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise InputError(
                f"{path} has no column {column!r}; columns: {reader.fieldnames} "
                "(use --column to choose one)"
            )
        return [row[column] or "" for row in reader]


def _read_parquet(path: Path, column: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "io", "reading Parquet") from exc
    table = pq.read_table(path)
    if column not in table.column_names:
        raise InputError(f"{path} has no column {column!r}; columns: {table.column_names}")
    return [v if isinstance(v, str) else "" for v in table.column(column).to_pylist()]


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
