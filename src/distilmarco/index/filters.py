"""Metadata: validating what is stored and compiling ``where`` filters to SQL."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distilmarco.errors import InputError

Scalar = str | int | float | bool | None


def metadata_json(metadata: object, position: int) -> str:
    """Canonical JSON of one document's metadata: a dict with string keys, JSON values only."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping):
        raise InputError(
            f"metadata {position} is {type(metadata).__name__}; it must be a dict (JSON object)"
        )
    for key in metadata:
        if not isinstance(key, str):
            raise InputError(f"metadata {position} has a key {key!r} that is not a string")
    try:
        return json.dumps(dict(metadata), sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata {position} is not JSON-serialisable: {exc}") from exc


def parse_where_pairs(pairs: Sequence[str]) -> dict[str, Scalar]:
    """CLI ``--where key=value`` items; values that parse as JSON scalars keep their type."""
    out: dict[str, Scalar] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--where {pair!r} must look like key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value if isinstance(value, str | int | float | bool) or value is None else raw
    return out


MAX_WHERE_VALUES = 10_000  # values in one where-clause, all keys together
_PLAIN_KEY = re.compile(r'[^"\\]*')  # keys a quoted JSON path can name (no quote, no backslash)


@dataclass(frozen=True)
class SqlFilter:
    """A compiled ``where``: an SQL condition over ``documents.metadata`` and its parameters."""

    sql: str
    params: tuple[Any, ...]


def compile_where(where: Mapping[str, Any], known_keys: Sequence[str]) -> SqlFilter:
    """SQL over ``documents.metadata`` for equality filters; a list value means "any of".

    Every key must occur in some stored document: a misspelt key is an error, not zero hits.
    A key's values become one ``IN`` list (a chain of ORs would overflow SQLite's expression
    depth near a thousand values).
    """
    if not isinstance(where, Mapping):
        raise InputError(
            f"where must be a dict of metadata key -> value, got {type(where).__name__}"
        )
    clauses: list[str] = []
    params: list[Any] = []
    total = 0
    for key, value in where.items():
        if not isinstance(key, str) or key not in known_keys:
            raise InputError(
                f"where-clause key {key!r} is not a metadata key of any document; "
                f"known keys: {', '.join(known_keys) or '(none)'}"
            )
        values = list(value) if isinstance(value, list | tuple) else [value]
        if not values:
            raise InputError(f"where-clause key {key!r} has an empty list of values")
        total += len(values)
        if total > MAX_WHERE_VALUES:
            raise InputError(
                f"the where-clause holds more than {MAX_WHERE_VALUES} values; filter on fewer"
            )
        for v in values:
            _check_scalar(key, v)
        some = [int(v) if isinstance(v, bool) else v for v in values if v is not None]
        null = len(some) < len(values)
        if _PLAIN_KEY.fullmatch(key):
            clause, args = _by_path('$."' + key + '"', some, null)
        else:  # SQLite's JSON paths cannot quote these keys: match decoded keys instead
            clause, args = _by_each(key, some, null)
        clauses.append(clause)
        params.extend(args)
    return SqlFilter(" AND ".join(clauses) or "1", tuple(params))


def _by_path(path: str, values: list[Any], null: bool) -> tuple[str, list[Any]]:
    parts, params = [], []
    if values:
        parts.append(f"json_extract(metadata, ?) IN ({', '.join('?' * len(values))})")
        params.extend([path, *values])
    if null:
        parts.append("json_type(metadata, ?) = 'null'")
        params.append(path)
    return "(" + " OR ".join(parts) + ")", params


def _by_each(key: str, values: list[Any], null: bool) -> tuple[str, list[Any]]:
    parts = []
    if values:
        parts.append(f"j.value IN ({', '.join('?' * len(values))})")
    if null:
        parts.append("j.type = 'null'")
    sql = (
        "EXISTS (SELECT 1 FROM json_each(metadata) AS j WHERE j.key = ? AND ("
        + " OR ".join(parts)
        + "))"
    )
    return sql, [key, *values]


def _check_scalar(key: str, value: object) -> None:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise InputError(
            f"where-clause value for {key!r} is {type(value).__name__}; use a string, number, "
            "boolean, null or a list of those"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"where-clause value for {key!r} must be finite, got {value}")
