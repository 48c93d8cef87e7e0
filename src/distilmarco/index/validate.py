"""Checking documents before anything is embedded or written."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distilmarco.errors import InputError
from distilmarco.index.filters import metadata_json


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CheckedDocuments:
    """A batch that passed ``validate_documents``: ids, texts and canonical metadata JSON."""

    ids: list[str]
    texts: list[str]
    metadata_json: list[str]


def validate_documents(
    ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, Any] | None] | None
) -> CheckedDocuments:
    """Check a whole batch before anything is embedded or written; errors name the position."""
    ids = check_ids(ids, allow_duplicates=False)
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputError(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) != len(ids):
        raise InputError(f"got {len(ids)} ids but {len(texts)} texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} (id {ids[i]!r}) is {type(text).__name__}, expected str")
        if not text.strip():
            raise InputError(f"text {i} (id {ids[i]!r}) is empty")
    from distilmarco.encoder import validate_texts

    validate_texts(texts)
    if metadata is None:
        metas = ["{}"] * len(ids)
    elif isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
        raise InputError("metadata must be a list with one dict (or None) per document")
    elif len(metadata) != len(ids):
        raise InputError(f"got {len(ids)} ids but {len(metadata)} metadata entries")
    else:
        metas = [metadata_json(m, i) for i, m in enumerate(metadata)]
    return CheckedDocuments(ids, list(texts), metas)


def check_ids(ids: Sequence[str], *, allow_duplicates: bool) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InputError(f"ids must be a list of strings, got {type(ids).__name__}")
    seen: set[str] = set()
    for i, id_ in enumerate(ids):
        if not isinstance(id_, str):
            raise InputError(f"id {i} is {type(id_).__name__} ({id_!r}); ids must be strings")
        if not id_:
            raise InputError(f"id {i} is an empty string")
        if id_ in seen and not allow_duplicates:
            raise InputError(f"id {id_!r} appears more than once in this batch (again at {i})")
        seen.add(id_)
    return list(ids)
