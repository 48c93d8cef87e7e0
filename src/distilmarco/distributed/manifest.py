"""The embeddings folder: ``manifest.json`` plus Parquet shards, and checking it against its input.

Written by ``embed --ray`` and read by ``index push``; the keys are a fixed contract (see README).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilmarco.embeddings_format import FORMAT, MANIFEST
from distilmarco.errors import FormatError, InputError

__all__ = ["FORMAT", "MANIFEST", "Manifest", "Verdict", "verify"]


@dataclass(frozen=True)
class InputInfo:
    path: str
    fingerprint: str  # sha256:<hex> of the input file's bytes
    rows: int
    id_column: str
    column: str


@dataclass(frozen=True)
class ShardFile:
    path: str  # relative to the folder
    rows: int


@dataclass(frozen=True)
class Manifest:
    model: str
    revision: str
    backend: str
    precision: str
    dimension: int
    similarity: str
    model_meta: dict[str, str]
    chunking: dict[str, int] | None
    input: InputInfo
    files: tuple[ShardFile, ...]
    rows: int
    documents: int
    normalized: bool = False
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model": self.model,
            "revision": self.revision,
            "backend": self.backend,
            "precision": self.precision,
            "dimension": self.dimension,
            "similarity": self.similarity,
            "normalized": self.normalized,
            "model_meta": dict(self.model_meta),
            "chunking": self.chunking,
            "input": vars(self.input),
            "files": [vars(f) for f in self.files],
            "rows": self.rows,
            "documents": self.documents,
        }

    def write(self, folder: Path) -> Path:
        """Write ``folder/manifest.json`` atomically (the folder is complete once it exists)."""
        path = folder / MANIFEST
        tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise InputError(
                f"{folder} holds no {MANIFEST}: not an embeddings folder (or unfinished)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise FormatError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
            inp = data["input"]
            return cls(
                model=data["model"], revision=data["revision"], backend=data["backend"],
                precision=data["precision"], dimension=int(data["dimension"]),
                similarity=data["similarity"], model_meta=dict(data["model_meta"]),
                chunking=data["chunking"],
                input=InputInfo(inp["path"], inp["fingerprint"], int(inp["rows"]),
                                inp.get("id_column", "id"), inp.get("column", "text")),
                files=tuple(ShardFile(f["path"], int(f["rows"])) for f in data["files"]),
                rows=int(data["rows"]), documents=int(data["documents"]),
                normalized=bool(data["normalized"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise FormatError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from exc


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: every input id once, with all its passages, and nothing else."""

    documents: int  # input documents
    rows: int  # passage rows in the folder
    missing: tuple[str, ...] = ()  # input ids with no (or not every) passage
    duplicated: tuple[str, ...] = ()  # passage ids found more than once
    unexpected: tuple[str, ...] = ()  # document ids not in the input
    problems: tuple[str, ...] = field(default=())  # files, counts, fingerprint

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected or self.problems)


def verify(folder: Path, input_path: Path, id_column: str | None = None) -> Verdict:
    """Check an embeddings folder against its input file (ids read with ``id_column``)."""
    import pyarrow.parquet as pq

    from distilmarco.distributed.source import read_ids

    folder = Path(folder)
    manifest = Manifest.read(folder)
    problems = []
    if file_fingerprint(input_path) != manifest.input.fingerprint:
        problems.append(
            f"{input_path} is not the input the folder was made from (fingerprint differs)"
        )
    wanted = read_ids(input_path, id_column or manifest.input.id_column)
    seen: Counter[str] = Counter()
    expected: dict[str, int] = {}
    docs_with: dict[str, set[int]] = {}
    rows = 0
    for shard in manifest.files:
        path = folder / shard.path
        if not path.is_file():
            problems.append(f"shard {shard.path} is listed in the manifest but missing")
            continue
        table = pq.read_table(path, columns=["id", "doc_id", "passage", "passages"])
        if table.num_rows != shard.rows:
            problems.append(
                f"shard {shard.path} has {table.num_rows} rows, the manifest says {shard.rows}"
            )
        rows += table.num_rows
        for pid, doc, n, total in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):  # fmt: skip
            seen[pid] += 1
            expected[doc] = total
            docs_with.setdefault(doc, set()).add(n)
    if rows != manifest.rows:
        problems.append(f"the shards hold {rows} rows, the manifest says {manifest.rows}")
    wanted_set = set(wanted)
    missing = [d for d in wanted if docs_with.get(d) != set(range(expected.get(d, -1)))]
    return Verdict(
        documents=len(wanted),
        rows=rows,
        missing=tuple(missing),
        duplicated=tuple(sorted(pid for pid, n in seen.items() if n > 1)),
        unexpected=tuple(sorted(d for d in docs_with if d not in wanted_set)),
        problems=tuple(problems),
    )
