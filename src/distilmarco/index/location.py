"""Where an index lives: a SQLite file, or a Milvus collection named ``milvus://HOST:PORT/NAME``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from distilmarco.index.ann import AnnConfig
from distilmarco.index.milvus.address import is_milvus
from distilmarco.index.searcher import AnnPolicy
from distilmarco.index.sqlite import SqliteStorage
from distilmarco.index.storage import Storage, VectorSpace


def open_storage(
    path: str | os.PathLike[str],
    space: Callable[[], VectorSpace],
    *,
    ann: AnnPolicy,
    matrix_dtype: str,
    busy_timeout: float,
    create: bool,
    ann_config: AnnConfig | None,
) -> Storage:
    """The storage at ``path``; ``space`` gives a new one's vector length and similarity."""
    if is_milvus(path):  # a collection on a Milvus server, which runs its own vector index
        from distilmarco.index.milvus.storage import MilvusStorage

        local = ann != "auto" or matrix_dtype != "float32" or ann_config is not None
        return MilvusStorage(
            os.fspath(path), space, create=create, timeout=busy_timeout, refuse_local_options=local
        )
    return SqliteStorage(
        Path(path),
        space,
        ann=ann,
        matrix_dtype=matrix_dtype,
        busy_timeout=busy_timeout,
        create=create,
        ann_config=ann_config,
    )
