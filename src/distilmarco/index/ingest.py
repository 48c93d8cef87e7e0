"""Incremental indexing of files and folders.

A text file (``.txt``, ``.md``, ``.rst``, ``.html``) is one document whose id is its resolved path;
a table (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``) gives one document per row. A row keeps its
own id (the ``id_column``; by default ``id`` or ``_id`` when the file's rows have one, else
``<path>#<row>``) and every other field as metadata, unchanged. Where a document came from is
recorded under keys of ours, ``distilmarco:source`` (the file) and ``distilmarco:row`` (the row,
from 1), a prefix that input fields may not use. Only new or changed texts (SHA-256 of the text)
are embedded; ``-`` reads JSONL rows from standard input; with ``sync`` the documents of files (or rows) that are gone are removed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from distilmarco.errors import InputError, MissingExtraError
from distilmarco.index.core import Index
from distilmarco.index.validate import content_hash
from distilmarco.textio import csv_rows, is_stdin, jsonl_objects

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".html", ".htm")
TABLE_SUFFIXES = (".jsonl", ".csv", ".tsv", ".parquet")
SUFFIXES = TEXT_SUFFIXES + TABLE_SUFFIXES
BATCH_DOCUMENTS = 64  # documents embedded and written per transaction
RESERVED_PREFIX = "distilmarco:"
SOURCE_KEY = RESERVED_PREFIX + "source"
ROW_KEY = RESERVED_PREFIX + "row"
DEFAULT_ID_COLUMNS = ("id", "_id")


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
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # files left out by suffix


@dataclass(frozen=True)
class FileWalk:
    files: list[Path]
    skipped: dict[str, int]  # files left out, by suffix ("" for none), in a folder walk


def find_files(
    paths: Sequence[Path], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> FileWalk:
    """The files under ``paths`` to index: supported suffixes, or those matching an ``include``
    glob (read as text), minus those matching an ``exclude`` glob; hidden ones are left out.
    Globs match a file's name or its path below the folder given (``*.py``, ``tests/*``)."""
    found: list[Path] = []
    skipped: dict[str, int] = {}
    stdin = [p for p in paths if is_stdin(p)]
    for path in paths:
        if is_stdin(path):
            continue
        if not path.exists():
            raise InputError(f"path {path} does not exist")
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                rel = p.relative_to(path)
                if not p.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if _wanted(rel, include, exclude):
                    found.append(p)
                elif not _matches(rel, exclude):
                    suffix = p.suffix.lower()
                    skipped[suffix] = skipped.get(suffix, 0) + 1
        elif _wanted(Path(path.name), include, exclude):
            found.append(path)
        elif _matches(Path(path.name), exclude):
            continue
        else:
            raise InputError(
                f"{path} has an unsupported suffix; supported: {', '.join(SUFFIXES)} "
                "(or name it with --include, e.g. --include '*.py', to read it as text)"
            )
    files = sorted({p.resolve() for p in found}) + stdin[:1]
    return FileWalk(files, dict(sorted(skipped.items())))


def _matches(rel: Path, globs: Sequence[str]) -> bool:
    return any(fnmatch(rel.name, g) or fnmatch(rel.as_posix(), g) for g in globs)


def _wanted(rel: Path, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if _matches(rel, exclude):
        return False
    if include:
        return _matches(rel, include)
    return rel.suffix.lower() in SUFFIXES


def read_documents(
    path: Path, field: str = "text", id_column: str | None = None
) -> Iterator[SourceDoc]:
    """The documents one file holds; table rows keep their ids and fields."""
    suffix = ".jsonl" if is_stdin(path) else path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:  # text files, and any file an --include glob chose
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not valid UTF-8 text: {exc}") from exc
        if suffix in (".html", ".htm"):
            text = html_text(text)
        meta = {SOURCE_KEY: str(path), RESERVED_PREFIX + "type": suffix.lstrip(".")}
        yield SourceDoc(str(path), text, meta)
        return
    key_column = id_column
    for n, row in enumerate(_rows(path), start=1):
        if n == 1 and key_column is None:
            key_column = next((c for c in DEFAULT_ID_COLUMNS if c in row), None)
        ours = [k for k in row if isinstance(k, str) and k.startswith(RESERVED_PREFIX)]
        if ours:
            raise InputError(
                f"{path}: row {n} has the field {ours[0]!r}; fields starting with "
                f"{RESERVED_PREFIX!r} are reserved for where a document came from"
            )
        text = row.pop(field, None)
        if not isinstance(text, str):
            raise InputError(f"{path}: row {n} has no string field {field!r} (see --column)")
        doc_id = f"{path}#{n}"
        if key_column is not None:
            key = row.pop(key_column, None)
            if key is None or isinstance(key, bool) or not isinstance(key, str | int) or key == "":
                raise InputError(
                    f"{path}: row {n} has no id in {key_column!r} (a string or integer; "
                    "see --id-column)"
                )
            doc_id = str(key)
        meta = {k: _json_value(v) for k, v in row.items()}
        yield SourceDoc(doc_id, text, {**meta, SOURCE_KEY: str(path), ROW_KEY: n})


def _json_value(value: object) -> Any:
    """A table cell as JSON: scalars, lists and objects as they are, anything else as text."""
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or is_stdin(path):
        yield from (row for _, row in jsonl_objects(path))
    elif suffix in (".csv", ".tsv"):
        yield from (row for _, row in csv_rows(path, "\t" if suffix == ".tsv" else ","))
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
    field: str | None = None,
    id_column: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Index the files under ``paths``; re-embed only new or changed texts."""
    walk = find_files(paths, include, exclude)
    files = walk.files
    if not files and walk.skipped:
        raise InputError(f"no file to index: {describe_skipped(walk.skipped)}")
    tables = [f for f in files if f.suffix.lower() in TABLE_SUFFIXES or is_stdin(f)]
    for option, value in (("--column", field), ("--id-column", id_column)):
        if value is not None and not tables:
            raise InputError(
                f"{option} {value!r} applies to tables ({', '.join(TABLE_SUFFIXES)}), and "
                "there are none here: each text file is one document"
            )
    docs = [d for f in files for d in read_documents(f, field or "text", id_column)]
    empty = [d for d in docs if not d.text.strip()]
    docs = [d for d in docs if d.text.strip()]
    seen: dict[str, SourceDoc] = {}
    for d in docs:
        if d.id in seen:
            raise InputError(
                f"document id {d.id!r} occurs twice: {_where(seen[d.id])} and {_where(d)}"
            )
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
        skipped=walk.skipped,
    )


def describe_skipped(skipped: dict[str, int]) -> str:
    """One line on the files a walk left out, and how to take them in."""
    kinds = ", ".join(f"{n} {suffix or '(no suffix)'}" for suffix, n in skipped.items())
    example = next((s for s in skipped if s), "")
    how = f"--include '*{example}'" if example else "--include 'NAME'"
    return (
        f"skipped {sum(skipped.values())} file(s) of other types ({kinds}); supported: "
        f"{', '.join(SUFFIXES)}; {how} indexes them as text"
    )


def _where(doc: SourceDoc) -> str:
    row = doc.metadata.get(ROW_KEY)
    return f"{doc.metadata.get(SOURCE_KEY)}" + (f" row {row}" if row is not None else "")


def _sync(index: Index, paths: Sequence[Path], present: set[str]) -> int:
    """Delete documents whose source lies under ``paths`` but was not seen in this walk."""
    roots = [str(p.resolve()) for p in paths if not is_stdin(p)]
    gone = []
    for doc in index.documents():
        source = _source_of(doc.id, doc.metadata)
        if source is not None and doc.id not in present and _under(source, roots):
            gone.append(doc.id)
    return index.delete(gone) if gone else 0


def _source_of(doc_id: str, metadata: dict[str, Any]) -> str | None:
    """The file a document was read from; documents indexed before provenance had its own key
    carry it in ``source`` and an id made from it, and only those count (a user's ``source``
    field is their data)."""
    source = metadata.get(SOURCE_KEY)
    if isinstance(source, str):
        return source
    legacy = metadata.get("source")
    if isinstance(legacy, str) and (doc_id == legacy or doc_id.startswith(legacy + "#")):
        return legacy
    return None


def _under(source: str, roots: list[str]) -> bool:
    return any(source == r or source.startswith(r.rstrip("/") + "/") for r in roots)
