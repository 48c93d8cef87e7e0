"""Input files for bulk embedding: Parquet or JSON Lines, read by Ray and checked on the driver."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from distilmarco.errors import FormatError, InputError

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

SUFFIXES = (".parquet", ".jsonl")
# Read, filter and write tasks reserve no CPU: they are light next to embedding, and an actor pool
# holding every CPU of the cluster would otherwise starve them (the job would never start).
IO_CPUS = 0.0


def check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{path}: bulk embedding reads {' or '.join(SUFFIXES)} files, not {suffix or 'no suffix'!r}"
        )
    if not path.is_file():
        raise InputError(f"input {path} does not exist")
    return suffix


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """The input as one Arrow table on the driver (only ``columns`` when given)."""
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    suffix = check_suffix(path)
    try:
        if suffix == ".parquet":
            names = pq.read_schema(path).names
            _check_columns(path, names, columns)
            return pq.read_table(path, columns=columns)
        if path.stat().st_size == 0:
            return pa.table({name: pa.array([], pa.string()) for name in columns or []})
        table = pj.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FormatError(f"{path}: cannot be read ({exc})") from exc
    _check_columns(path, table.column_names, columns)
    return table.select(columns) if columns else table


def _check_columns(path: Path, names: list[str], wanted: list[str] | None) -> None:
    for name in wanted or []:
        if name not in names:
            raise InputError(
                f"{path} has no column {name!r}; its columns: {', '.join(names) or 'none'}"
            )


def read_ids(path: Path, id_column: str) -> list[str]:
    """The document ids of an input file, as strings, in file order."""
    from distilmarco.distributed.rows import doc_ids

    return doc_ids(read_table(path, [id_column]), id_column)


def check_ids(path: Path, id_column: str, text_column: str) -> list[str]:
    """The input's ids, or InputError for an empty input, a missing column or duplicate ids."""
    table = read_table(path, [id_column, text_column])
    if table.num_rows == 0:
        raise InputError(f"{path} holds no rows: nothing to embed")
    from distilmarco.distributed.rows import doc_ids

    ids = doc_ids(table, id_column)
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise InputError(
            f"{path}: {len(dupes)} id(s) occur more than once in column {id_column!r}: "
            f"{', '.join(dupes[:10])}; ids must be unique"
        )
    texts = table.column(text_column)
    if texts.null_count:
        bad = [i for i, t in zip(ids, texts.to_pylist(), strict=True) if t is None]
        raise InputError(
            f"{path}: {len(bad)} document(s) have no text in column {text_column!r}: "
            f"{', '.join(bad[:10])}"
        )
    return ids


def ray_dataset(path: Path) -> ray.data.Dataset:
    """The input as a lazy Ray dataset."""
    from distilmarco.distributed.ray_import import require_ray

    ray = require_ray("embedding on Ray")
    if check_suffix(path) != ".parquet":
        return ray.data.read_json(str(path.resolve()), num_cpus=IO_CPUS)
    # The newer Parquet reader lists files in a task that always takes a whole CPU; the read
    # operator of the older one takes IO_CPUS like every other step here.
    context = ray.data.DataContext.get_current()
    newer = getattr(context, "use_datasource_v2", False)
    context.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(str(path.resolve()), num_cpus=IO_CPUS)
    finally:
        context.use_datasource_v2 = newer
