"""Incremental indexing of files and folders.

Files are keyed by path: a text file (``.txt``, ``.md``, ``.rst``, ``.html``) is one document whose
id is its resolved path; a table (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``) gives one document
per row, with id ``<path>#<row>`` (or ``<path>#<id field>`` when rows carry an ``id``). Only new or
changed texts (SHA-256 of the text) are embedded; with ``sync`` the documents of files (or rows)
that are gone are removed.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from distilmarco.errors import InputError, MissingExtraError
from distilmarco.index.core import Index
from distilmarco.index.validate import content_hash
from distilmarco.textio import jsonl_objects

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".html", ".htm")
TABLE_SUFFIXES = (".jsonl", ".csv", ".tsv", ".parquet")
SUFFIXES = TEXT_SUFFIXES + TABLE_SUFFIXES
BATCH_DOCUMENTS = 64  # documents embedded and written per transaction


@dataclass(frozen=True)
class SourceDoc:
    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class IngestReport:
    files: int
    documents: int
    added: int
    updated: int
    unchanged: int
    deleted: int
    empty: int  # documents skipped because their text is empty


def find_files(paths: Sequence[Path]) -> list[Path]:
    """Every supported file under ``paths`` (files given directly must have a supported suffix)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise InputError(f"path {path} does not exist")
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and p.suffix.lower() in SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.suffix.lower() in SUFFIXES:
            found.append(path)
        else:
            raise InputError(f"{path} has an unsupported suffix; supported: {', '.join(SUFFIXES)}")
    return sorted({p.resolve() for p in found})


def read_documents(path: Path, field: str = "text") -> Iterator[SourceDoc]:
    """The documents one file holds."""
    suffix = path.suffix.lower()
    base = {"source": str(path)}
    if suffix in TEXT_SUFFIXES:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not valid UTF-8 text: {exc}") from exc
        if suffix in (".html", ".htm"):
            text = html_text(text)
        yield SourceDoc(str(path), text, {**base, "type": suffix.lstrip(".")})
        return
    for n, row in enumerate(_rows(path), start=1):
        text = row.pop(field, None)
        if not isinstance(text, str):
            raise InputError(f"{path}: row {n} has no string field {field!r}")
        key = row.pop("id", None)
        extra = {
            k: v for k, v in row.items() if isinstance(v, str | int | float | bool) or v is None
        }
        yield SourceDoc(f"{path}#{key if key is not None else n}", text, {**extra, **base})


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from (row for _, row in jsonl_objects(path))
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MissingExtraError("pyarrow", "io", "reading Parquet") from exc
        yield from pq.read_table(path).to_pylist()


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    """The visible text of an HTML page (scripts and styles dropped), whitespace collapsed."""
    parser = _TextOfHtml()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def ingest(
    index: Index,
    paths: Sequence[Path],
    *,
    sync: bool = False,
    field: str = "text",
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Index the files under ``paths``; re-embed only new or changed texts."""
    files = find_files(paths)
    docs = [d for f in files for d in read_documents(f, field)]
    empty = [d for d in docs if not d.text.strip()]
    docs = [d for d in docs if d.text.strip()]
    seen: dict[str, SourceDoc] = {}
    for d in docs:
        if d.id in seen:
            raise InputError(f"document id {d.id!r} occurs twice (duplicate row id in its file)")
        seen[d.id] = d
    stored = index.content_hashes(list(seen))
    todo = [d for d in docs if stored.get(d.id) != content_hash(d.text)]
    for lo in range(0, len(todo), BATCH_DOCUMENTS):
        batch = todo[lo : lo + BATCH_DOCUMENTS]
        index.upsert([d.id for d in batch], [d.text for d in batch], [d.metadata for d in batch])
        if progress is not None:
            progress(min(lo + BATCH_DOCUMENTS, len(todo)), len(todo))
    deleted = _sync(index, paths, set(seen)) if sync else 0
    return IngestReport(
        files=len(files),
        documents=len(docs),
        added=sum(d.id not in stored for d in todo),
        updated=sum(d.id in stored for d in todo),
        unchanged=len(docs) - len(todo),
        deleted=deleted,
        empty=len(empty),
    )


def _sync(index: Index, paths: Sequence[Path], present: set[str]) -> int:
    """Delete documents whose source lies under ``paths`` but was not seen in this walk."""
    roots = [str(p.resolve()) for p in paths]
    gone = []
    for doc in index.documents():
        source = doc.metadata.get("source")
        if isinstance(source, str) and doc.id not in present and _under(source, roots):
            gone.append(doc.id)
    return index.delete(gone) if gone else 0


def _under(source: str, roots: list[str]) -> bool:
    return any(source == r or source.startswith(r.rstrip("/") + "/") for r in roots)
