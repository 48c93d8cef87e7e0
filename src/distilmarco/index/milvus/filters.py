"""``where`` filters compiled to Milvus filter expressions, with user values never pasted raw.

A value reaches the server either as a template parameter (``metadata["lang"] == {p0}`` with
``filter_params``, which Milvus parses as data) or, for a server without expression templates
(Milvus Lite), as a literal escaped here so that it always parses back to exactly that value.
Metadata keys are always escaped literals: a JSON path cannot be a template parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distilmarco.errors import InputError
from distilmarco.index.filters import _check_scalar

MAX_VALUES = 1_000  # values in one where-clause: each is one comparison in the expression
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


@dataclass(frozen=True)
class MilvusFilter:
    """One compiled filter: the templated form with its parameters, and the escaped-literal form."""

    template: str
    params: dict[str, Any] = field(default_factory=dict)
    literal: str = ""

    def search_args(self, templates: bool) -> dict[str, Any]:
        """Keyword arguments for ``MilvusClient.search``/``query`` (no filter: none)."""
        if not self.template:
            return {}
        if templates:
            return {"filter": self.template, "filter_params": dict(self.params)}
        return {"filter": self.literal}

    def expr(self, templates: bool) -> tuple[str, dict[str, Any]]:
        """The expression and its parameters, as an ``AnnSearchRequest`` takes them."""
        if templates:
            return self.template, dict(self.params)
        return self.literal, {}


def quote(value: str) -> str:
    """A Milvus string literal that parses back to exactly ``value``."""
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def literal(value: str | int | float | bool) -> str:
    """A Milvus literal for a JSON scalar (strings quoted and escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"filter value {value} is not finite")
        return repr(value)
    return quote(value)


class _Builder:
    """Collects clauses in both forms at once, numbering the template parameters."""

    def __init__(self) -> None:
        self.template: list[str] = []
        self.literal: list[str] = []
        self.params: dict[str, Any] = {}

    def equals(self, path: str, value: str | int | float | bool) -> tuple[str, str]:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{path} == {{{name}}}", f"{path} == {literal(value)}"


def compile_where(
    where: Mapping[str, Any] | None,
    known: Callable[[str], bool],
    *,
    exclude_docs: tuple[str, ...] = (),
) -> MilvusFilter:
    """A filter keeping rows whose document metadata equals every given value (a list: any of
    them); ``known(key)`` says whether some stored document has the key (a misspelt key is an
    error, not zero hits). ``exclude_docs`` leaves those document ids out."""
    if where is not None and not isinstance(where, Mapping):
        raise InputError(
            f"where must be a dict of metadata key -> value, got {type(where).__name__}"
        )
    b = _Builder()
    total = 0
    for key, value in (where or {}).items():
        if not isinstance(key, str) or not known(key):
            raise InputError(f"where-clause key {key!r} is not a metadata key of any document")
        values = list(value) if isinstance(value, list | tuple) else [value]
        if not values:
            raise InputError(f"where-clause key {key!r} has an empty list of values")
        total += len(values)
        if total > MAX_VALUES:
            raise InputError(
                f"the where-clause holds more than {MAX_VALUES} values; filter on fewer"
            )
        for v in values:
            _check_scalar(key, v)
        path = f"metadata[{quote(key)}]"
        temp, lit = [], []
        for v in dict.fromkeys(values):
            if v is None:  # Milvus reads a missing key as null too (SQLite: an explicit null only)
                clause = f"{path} is null"
                temp.append(clause)
                lit.append(clause)
            else:
                t, x = b.equals(path, v)
                temp.append(t)
                lit.append(x)
        b.template.append("(" + " or ".join(temp) + ")")
        b.literal.append("(" + " or ".join(lit) + ")")
    if exclude_docs:
        name = f"p{len(b.params)}"
        b.params[name] = list(exclude_docs)
        b.template.append(f"doc_id not in {{{name}}}")
        b.literal.append("doc_id not in [" + ", ".join(quote(d) for d in exclude_docs) + "]")
    return MilvusFilter(" and ".join(b.template), b.params, " and ".join(b.literal))
