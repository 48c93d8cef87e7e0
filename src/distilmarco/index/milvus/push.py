"""``index push``: load an embeddings folder (``embed --ray``'s Parquet shards and manifest) into a
Milvus collection without re-embedding.

Everything that can be checked is checked before the first row is written: the manifest's format
and keys, that every listed shard exists with the row count the manifest gives, its columns and
the vectors' length, and the model's identity against what the collection records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilmarco.embeddings_format import FORMAT, MANIFEST
from distilmarco.errors import FormatError, InputError, MissingExtraError
from distilmarco.index.identity import check_same_model
from distilmarco.index.milvus.schema import PassageRow, check_sizes
from distilmarco.index.storage import VectorSpace
from distilmarco.index.validate import content_hash
from distilmarco.vectors import prepare

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

REQUIRED = ("format", "model_meta", "dimension", "similarity", "files", "rows")
COLUMNS = ("id", "doc_id", "passage", "passages", "start", "end", "text", "document", "metadata",
           "vector")  # fmt: skip


@dataclass(frozen=True)
class Shard:
    path: Path
    rows: int


@dataclass(frozen=True)
class EmbeddingsFolder:
    """A checked embeddings folder: where its shards are and what embedded them."""

    folder: Path
    meta: dict[str, str]  # the identity the index records (model and chunking)
    dimension: int
    similarity: str
    shards: tuple[Shard, ...]
    rows: int

    @classmethod
    def open(cls, folder: Path) -> EmbeddingsFolder:
        """Read and check the manifest and every shard's row count and columns."""
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise InputError(
                f"{folder} holds no {MANIFEST}: it is not an embeddings folder (make one with "
                "distilmarco embed INPUT -o FOLDER --ray)"
            )
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict):
            raise FormatError(f"{path}: the manifest must be a JSON object")
        missing = [k for k in REQUIRED if k not in manifest]
        if missing:
            raise FormatError(f"{path}: the manifest lacks {', '.join(missing)}")
        if manifest["format"] != FORMAT:
            raise FormatError(
                f"{path}: format {manifest['format']!r} is not {FORMAT!r} (another version?)"
            )
        meta = manifest["model_meta"]
        if not isinstance(meta, dict) or not {"model_id", "dimension", "similarity"} <= set(meta):
            raise FormatError(f"{path}: model_meta must hold model_id, dimension and similarity")
        dimension, similarity = manifest["dimension"], manifest["similarity"]
        if not isinstance(dimension, int) or dimension < 1 or str(dimension) != meta["dimension"]:
            raise FormatError(
                f"{path}: dimension {dimension!r} disagrees with model_meta's {meta['dimension']!r}"
            )
        shards = tuple(_shard(Path(folder), f, path) for f in manifest["files"])
        total = sum(s.rows for s in shards)
        if total != manifest["rows"]:
            raise FormatError(
                f"{path}: the files hold {total} rows, the manifest says {manifest['rows']}"
            )
        for shard in shards:
            _check_columns(shard, dimension)
        return cls(Path(folder), {str(k): str(v) for k, v in meta.items()}, dimension,
                   str(similarity), shards, total)  # fmt: skip

    @property
    def space(self) -> VectorSpace:
        return VectorSpace(self.dimension, self.similarity)

    def batches(self, rows: int) -> Iterator[list[PassageRow]]:
        """The passages as rows to store, ``rows`` at a time, vectors prepared for the
        similarity (unit length for cosine)."""
        import pyarrow.parquet as pq

        added = time.time_ns()
        for shard in self.shards:
            for batch in pq.ParquetFile(shard.path).iter_batches(rows, columns=list(COLUMNS)):
                out = _rows(batch, self.dimension, self.similarity, added, shard.path)
                added += len(out)
                yield out


@dataclass(frozen=True)
class PushReport:
    location: str
    rows: int
    documents: int
    seconds: float


def push(
    folder: Path,
    location: str,
    *,
    batch_rows: int = 1_000,
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Upsert every passage of an embeddings folder into the Milvus collection at ``location``
    (created if new), refusing another model's collection before anything is written."""
    from distilmarco.index.milvus.storage import MilvusStorage

    if batch_rows < 1:
        raise InputError(f"batch_rows must be positive, got {batch_rows}")
    source = EmbeddingsFolder.open(folder)
    start = time.perf_counter()
    storage = MilvusStorage(location, lambda: source.space)
    try:
        fresh = storage.record(source.meta, check_same_model)
        done = 0
        for rows in source.batches(batch_rows):
            # a collection created by this push holds no older versions' passages to delete
            storage.write_passages(rows, replaced=set() if fresh else None)
            done += len(rows)
            if progress is not None:
                progress(done, source.rows)
        documents = storage.document_count()
    finally:
        storage.close()
    seconds = time.perf_counter() - start
    log.info("pushed %d passages to %s in %.1f s", done, location, seconds)
    return PushReport(str(storage.address), done, documents, seconds)


def _shard(folder: Path, entry: Any, manifest: Path) -> Shard:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str):
        raise FormatError(f"{manifest}: each entry of files needs a path and rows, got {entry!r}")
    path = (folder / entry["path"]).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise FormatError(f"{manifest}: file {entry['path']!r} lies outside {folder}")
    if not path.is_file():
        raise FormatError(f"{manifest}: listed file {entry['path']!r} is missing")
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(path).metadata.num_rows
    if rows != entry.get("rows"):
        raise FormatError(
            f"{path}: holds {rows} rows, the manifest says {entry.get('rows')!r} (incomplete?)"
        )
    return Shard(path, rows)


def _check_columns(shard: Shard, dimension: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(shard.path)
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise FormatError(f"{shard.path}: lacks the column(s) {', '.join(missing)}")
    vector = schema.field("vector").type
    if not pa.types.is_fixed_size_list(vector) or vector.list_size != dimension:
        raise InputError(
            f"{shard.path}: vectors are {vector}, but the manifest's model gives "
            f"{dimension}-d vectors (fixed_size_list<float>[{dimension}])"
        )


def _rows(
    batch: pa.RecordBatch, dimension: int, similarity: str, added: int, path: Path
) -> list[PassageRow]:
    cols = batch.to_pydict()
    flat = batch.column(batch.schema.get_field_index("vector")).flatten()
    vectors = prepare(np.asarray(flat, dtype=np.float32).reshape(-1, dimension), similarity)
    if not np.isfinite(vectors).all():
        raise InputError(f"{path}: some vectors hold NaN or infinity")
    out = []
    for i in range(batch.num_rows):
        doc_id, n = str(cols["doc_id"][i]), int(cols["passage"][i])
        if cols["id"][i] != f"{doc_id}#{n}":
            raise FormatError(f"{path}: row id {cols['id'][i]!r} is not {doc_id}#{n}")
        document = cols["document"][i] or ""
        if n == 0:
            check_sizes(doc_id, document)
        meta = cols["metadata"][i] or "{}"
        if not isinstance(json.loads(meta), dict):
            raise FormatError(f"{path}: metadata of {doc_id!r} is not a JSON object")
        out.append(
            PassageRow(
                doc_id,
                n,
                int(cols["passages"][i]),
                int(cols["start"][i]),
                int(cols["end"][i]),
                str(cols["text"][i]),
                document,
                content_hash(document) if n == 0 else "",
                meta,
                added + i,
                vectors[i],
            )
        )
    return out


def require_pyarrow() -> None:
    """Reading the Parquet shards needs pyarrow (the ``io`` extra)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "io", "index push") from exc
