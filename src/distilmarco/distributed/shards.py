"""Committed shards in a checkpoint folder: what a re-run keeps and what it embeds again.

A shard is committed once its Parquet footer is readable (Parquet writes it last). A document counts
as done when all of its passages are in one committed shard; rows of any other document are removed
from their shard (rewritten atomically), so a re-run embeds it once more and never duplicates it.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Committed:
    """The shards a folder holds after clean-up, and the documents they complete."""

    files: tuple[Path, ...]
    documents: frozenset[str]
    rows: int


def collect(folder: Path) -> Committed:
    """Clean ``folder`` up (unreadable shards deleted, incomplete documents removed) and say what
    it holds."""
    files: list[Path] = []
    done: set[str] = set()
    rows = 0
    for path in sorted(folder.glob("*.parquet")):
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            log.warning("removing %s, a shard that was not finished (%s)", path.name, exc)
            path.unlink()
            continue
        keep = _complete(table, done)
        if not keep:
            path.unlink()
            continue
        kept = table.filter(pc.is_in(table.column("doc_id"), pa.array(sorted(keep), pa.string())))
        if kept.num_rows < table.num_rows:
            table = kept
            _rewrite(path, table)
        done.update(keep)
        files.append(path)
        rows += table.num_rows
    return Committed(tuple(files), frozenset(done), rows)


def _complete(table: pa.Table, done: set[str]) -> set[str]:
    """Documents with every passage in ``table`` that no earlier shard already completed."""
    docs = table.column("doc_id").to_pylist()
    totals = dict(zip(docs, table.column("passages").to_pylist(), strict=True))
    counts = Counter(docs)
    return {d for d, n in counts.items() if n == totals[d] and d not in done}


def _rewrite(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    log.info("kept %d complete row(s) of %s", table.num_rows, path.name)
