"""Training examples from JSONL, TSV or a BEIR folder, streamed, with errors naming file and line.

JSONL fields: texts from ``query`` / ``anchor`` / ``sentence1`` / ``text``, then ``positive`` /
``sentence2``, then ``negative`` (a string) or ``negatives`` (a list); labels from ``score`` (a
number; a list ``[positive, negative...]`` of teacher scores for MarginMSE), ``margin`` /
``margins`` (teacher margins) or ``vector`` / ``vectors`` (teacher embeddings, for MSE).
TSV: one example per line, texts in order (query, positive, negatives...), and a last numeric
column taken as the score when ``score_column`` is set; a first line of known field names is a
header. BEIR: ``queries.jsonl``, ``corpus.jsonl`` and ``qrels/train.tsv`` give (query, relevant
document) pairs.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilmarco.errors import FormatError, InputError
from distilmarco.textio import jsonl_objects

_FIRST = ("query", "anchor", "sentence1", "text")
_SECOND = ("positive", "sentence2")
_HEADER_NAMES = {
    "query",
    "anchor",
    "positive",
    "negative",
    "sentence1",
    "sentence2",
    "score",
    "text",
}

# np.ndarray: a teacher vector computed in memory (distillation), not read from a file.
Label = float | tuple[float, ...] | tuple[tuple[float, ...], ...] | np.ndarray | None


@dataclass(frozen=True)
class Example:
    """One training example: its texts in column order and its label, and where it came from."""

    texts: tuple[str, ...]
    label: Label
    source: str  # "path:line", for error messages


@dataclass(frozen=True)
class Requirements:
    """What a loss needs from every example (from its ``min_columns``, ``max_columns``, ``label``)."""

    loss: str
    min_columns: int
    max_columns: int | None
    label: str  # none, score, margins, vectors
    score_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class DataSummary:
    examples: int
    columns: int
    texts: int


def read_examples(path: Path) -> Iterator[Example]:
    """Examples one at a time, in file order; the format follows the path (see module notes)."""
    path = Path(path)
    if path.is_dir():
        yield from _read_beir(path)
    elif not path.is_file():
        raise InputError(f"training data {path} does not exist")
    elif path.suffix.lower() in (".tsv", ".csv", ".txt"):
        yield from _read_tsv(path)
    else:
        yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[Example]:
    for n, row in jsonl_objects(path):
        where = f"{path}:{n}"
        texts = [_text(row, _FIRST, where)]
        if any(k in row for k in _SECOND):
            texts.append(_text(row, _SECOND, where))
        if "negative" in row:
            texts.append(_text(row, ("negative",), where))
        if "negatives" in row:
            negs = row["negatives"]
            if not isinstance(negs, list) or not all(isinstance(x, str) for x in negs):
                raise FormatError(f"{where}: field 'negatives' must be a list of strings")
            for i, neg in enumerate(negs):
                texts.append(_nonempty(neg, f"negatives[{i}]", where))
        yield Example(tuple(texts), _label(row, where), where)


def _text(row: dict[str, Any], names: Sequence[str], where: str) -> str:
    for name in names:
        if name in row:
            value = row[name]
            if not isinstance(value, str):
                raise FormatError(f"{where}: field {name!r} must be a string")
            return _nonempty(value, name, where)
    raise FormatError(f"{where}: missing field {' / '.join(repr(n) for n in names)}")


def _nonempty(text: str, name: str, where: str) -> str:
    if not text.strip():
        raise FormatError(f"{where}: {name} is an empty text")
    return text


def _number(value: object, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FormatError(f"{where}: {name} {value!r} is not a finite number")
    return float(value)


def _label(row: dict[str, Any], where: str) -> Label:
    if "score" in row:
        score = row["score"]
        if isinstance(score, list):
            return tuple(_number(v, "score", where) for v in score)
        return _number(score, "score", where)
    for name in ("margin", "margins"):
        if name in row:
            value = row[name]
            values = value if isinstance(value, list) else [value]
            return tuple(_number(v, name, where) for v in values)
    for name in ("vector", "vectors"):
        if name in row:
            value = row[name]
            if not isinstance(value, list) or not value:
                raise FormatError(f"{where}: field {name!r} must be a non-empty list")
            if isinstance(value[0], list):
                return tuple(tuple(_number(v, name, where) for v in vec) for vec in value)
            return (tuple(_number(v, name, where) for v in value),)
    return None


def _read_tsv(path: Path) -> Iterator[Example]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header: list[str] | None = None
        for n, fields in enumerate(reader, start=1):
            if not fields or not any(x.strip() for x in fields):
                continue
            where = f"{path}:{n}"
            if n == 1 and {x.strip().lower() for x in fields} <= _HEADER_NAMES | {"negatives"}:
                header = [x.strip().lower() for x in fields]
                continue
            if header is not None:
                if len(fields) != len(header):
                    raise FormatError(
                        f"{where}: {len(fields)} fields, the header names {len(header)}"
                    )
                row: dict[str, Any] = dict(zip(header, fields, strict=True))
                if "score" in row:
                    row["score"] = _parse_float(row["score"], where)
                negs = [v for k, v in zip(header, fields, strict=True) if k == "negative"]
                row.pop("negative", None)
                if negs:
                    row["negatives"] = negs
                texts = [_text(row, _FIRST, where)]
                if any(k in row for k in _SECOND):
                    texts.append(_text(row, _SECOND, where))
                texts += [_nonempty(t, "negative", where) for t in negs]
                yield Example(tuple(texts), _label(row, where), where)
            else:
                texts = [_nonempty(t, f"column {i + 1}", where) for i, t in enumerate(fields)]
                yield Example(tuple(texts), None, where)


def _parse_float(text: str, where: str) -> float:
    try:
        return _number(float(text), "score", where)
    except ValueError:
        raise FormatError(f"{where}: score {text!r} is not a number") from None


def _read_beir(folder: Path) -> Iterator[Example]:
    from distilmarco.evaluation.formats import read_beir

    qrels_file = folder / "qrels" / "train.tsv"
    if not qrels_file.is_file():
        raise InputError(f"{folder} is not a BEIR folder with training judgements: no {qrels_file}")
    data = read_beir(folder, split="train")
    for qid in sorted(data.qrels):
        for doc_id, grade in sorted(data.qrels[qid].items()):
            if grade <= 0:
                continue
            where = f"{qrels_file} (query {qid}, document {doc_id})"
            if qid not in data.queries or doc_id not in data.corpus:
                raise FormatError(f"{where}: the query or the document is missing")
            query = _nonempty(data.queries[qid], "query", where)
            doc = _nonempty(data.corpus[doc_id].full_text, "document", where)
            yield Example((query, doc), None, where)


def check_example(example: Example, need: Requirements) -> None:
    """Raise a ``FormatError`` naming the example's file and line if ``need`` is not met."""
    where, n = example.source, len(example.texts)
    if n < need.min_columns or (need.max_columns is not None and n > need.max_columns):
        wanted = (
            f"{need.min_columns}"
            if need.max_columns == need.min_columns
            else f"at least {need.min_columns}"
            if need.max_columns is None
            else f"{need.min_columns} to {need.max_columns}"
        )
        raise FormatError(f"{where}: {n} text(s), the {need.loss} loss needs {wanted}")
    label = example.label
    if need.label == "none":
        return
    if need.label == "score":
        if not isinstance(label, float):
            raise FormatError(f"{where}: the {need.loss} loss needs a numeric 'score'")
        if need.score_range is not None:
            lo, hi = need.score_range
            if not lo <= label <= hi:
                raise FormatError(f"{where}: score {label} is outside the range [{lo}, {hi}]")
        return
    if need.label == "margins":
        if not isinstance(label, tuple) or not label or not isinstance(label[0], float):
            raise FormatError(
                f"{where}: the {need.loss} loss needs teacher 'margins' (one per negative) or "
                "'score' as [positive, negative...]"
            )
        if len(label) not in (n - 2, n - 1):
            raise FormatError(
                f"{where}: {len(label)} teacher score(s) for {n - 2} negative(s): give one margin "
                "per negative, or the positive's score then one per negative"
            )
        return
    if not isinstance(label, tuple) or not label or not isinstance(label[0], tuple):
        raise FormatError(f"{where}: the {need.loss} loss needs teacher 'vector' / 'vectors'")
    if len(label) not in (1, n):
        raise FormatError(f"{where}: {len(label)} teacher vectors for {n} text(s)")


def margins_of(example: Example) -> tuple[float, ...]:
    """Teacher margins (one per negative): given, or positive's score minus each negative's."""
    label = example.label
    assert isinstance(label, tuple)
    values = tuple(float(v) for v in label if isinstance(v, float))
    if len(values) == len(example.texts) - 1:
        return tuple(values[0] - v for v in values[1:])
    return values


def summarize(path: Path, need: Requirements) -> DataSummary:
    """Read every example once, checking each against ``need``; memory stays constant."""
    count = columns = texts = 0
    width: int | None = None
    vec_dim: int | None = None
    for ex in read_examples(path):
        check_example(ex, need)
        if width is None:
            width = len(ex.texts)
        elif len(ex.texts) != width:
            raise FormatError(
                f"{ex.source}: {len(ex.texts)} text(s), earlier examples have {width}; "
                "every example needs the same number of negatives"
            )
        if need.label == "vectors":
            assert isinstance(ex.label, tuple)
            dims = {len(v) for v in ex.label if isinstance(v, tuple)}
            if len(dims) != 1 or (vec_dim is not None and dims != {vec_dim}):
                raise FormatError(f"{ex.source}: teacher vectors of differing lengths")
            vec_dim = dims.pop()
        count += 1
        texts += len(ex.texts)
    if count == 0:
        raise InputError(f"training data {path} holds no examples")
    columns = width or 0
    return DataSummary(examples=count, columns=columns, texts=texts)
