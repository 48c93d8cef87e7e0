"""Documents to passage rows: the embeddings folder's row schema and the pure batch transform.

A batch of input rows (an Arrow table) becomes one row per passage, cut with the index's own chunker
so the passages and offsets are those ``Index`` stores. Nothing here needs Ray.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from distilmarco.errors import InputError

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

ROW_COLUMNS = (
    "id", "doc_id", "passage", "passages", "start", "end", "text", "document", "metadata",
    "vector", "tokens", "truncated",
)  # fmt: skip
SpansFn = Callable[[str], list[tuple[int, int]]]  # a document's text -> its passages' spans


def row_schema(dimension: int) -> pa.Schema:
    """The Arrow schema of one passage row (the embeddings folder's contract)."""
    i32, text = pa.int32(), pa.string()
    return pa.schema(
        [
            ("id", text), ("doc_id", text), ("passage", i32), ("passages", i32),
            ("start", i32), ("end", i32), ("text", text), ("document", text),
            ("metadata", text), ("vector", pa.list_(pa.float32(), dimension)),
            ("tokens", i32), ("truncated", pa.bool_()),
        ]
    )  # fmt: skip


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the document id and the text."""

    id: str
    text: str

    def check(self, names: Sequence[str], where: str) -> None:
        """Raise InputError naming the missing column and the ones there are."""
        for role, name in (("id", self.id), ("text", self.text)):
            if name not in names:
                raise InputError(
                    f"{where} has no {role} column {name!r}; its columns: {', '.join(names)} "
                    f"(choose with --{'id-column' if role == 'id' else 'column'})"
                )


def doc_ids(table: pa.Table, column: str) -> list[str]:
    """A table's document ids as strings, or InputError naming the rows without one."""
    values = table.column(column).to_pylist()
    missing = [i for i, v in enumerate(values) if v is None or v == ""]
    if missing:
        raise InputError(
            f"{len(missing)} row(s) have no id in column {column!r}: rows {missing[:10]}"
        )
    return [str(v) for v in values]


def passage_rows(
    table: pa.Table, columns: Columns, encoder: Encoder, spans: SpansFn | None
) -> pa.Table:
    """One row per passage of the documents in ``table``, with their raw vectors."""
    ids = doc_ids(table, columns.id)
    texts = table.column(columns.text).to_pylist()
    bad = [d for d, t in zip(ids, texts, strict=True) if not isinstance(t, str)]
    if bad:
        raise InputError(f"documents {', '.join(bad[:10])} have no text in column {columns.text!r}")
    extra = [n for n in table.column_names if n not in (columns.id, columns.text)]
    metas = _metadata(table.select(extra).to_pylist()) if extra else ["{}"] * len(ids)
    cut = [spans(t) if spans else [(0, len(t))] for t in texts]
    passages = [t[s:e] for t, doc in zip(texts, cut, strict=True) for s, e in doc]
    dim = encoder.dimension
    if passages:
        vectors = encoder.encode(passages, truncation="count")
        tok = encoder.tokenizer.encode(passages)
        tokens, truncated = tok.lengths.astype(np.int32), tok.truncated.astype(bool)
    else:
        vectors = np.empty((0, dim), dtype=np.float32)
        tokens, truncated = np.empty(0, np.int32), np.empty(0, bool)
    cols: dict[str, list[Any]] = {
        n: [] for n in ROW_COLUMNS if n not in ("vector", "tokens", "truncated")
    }
    for doc, text, meta, doc_spans in zip(ids, texts, metas, cut, strict=True):
        for n, (s, e) in enumerate(doc_spans):
            cols["id"].append(f"{doc}#{n}")
            cols["doc_id"].append(doc)
            cols["passage"].append(n)
            cols["passages"].append(len(doc_spans))
            cols["start"].append(s)
            cols["end"].append(e)
            cols["text"].append(text[s:e])
            cols["document"].append(text if n == 0 else None)
            cols["metadata"].append(meta)
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
    arrays = {**cols, "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
              "tokens": pa.array(tokens, pa.int32()), "truncated": pa.array(truncated, pa.bool_())}  # fmt: skip
    schema = row_schema(dim)
    return pa.Table.from_arrays([pa.array(arrays[f.name], f.type) for f in schema], schema=schema)


def _metadata(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's other columns as a JSON object (values JSON lacks, such as dates, as text)."""
    return [json.dumps(r, ensure_ascii=False, default=str, sort_keys=True) for r in rows]
