"""A whole bulk-embedding job: input file -> Ray Data -> an embeddings folder, resumable.

Shards are written to a checkpoint folder (``--checkpoint DIR``, else a scratch folder inside the
output that a failed run leaves behind for nothing) together with ``job.json``, which pins the
input, model and settings: a re-run with the same checkpoint embeds only the documents no
committed shard completes, and refuses a checkpoint made from another input or model. When every
input id is present exactly once, the shards move into ``OUT_DIR/shards/`` and the manifest is
written last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilmarco.distributed.embed import BATCH_DOCUMENTS, Chunking, FaultPlan, embed_dataset
from distilmarco.distributed.manifest import (
    MANIFEST,
    InputInfo,
    Manifest,
    ShardFile,
    file_fingerprint,
)
from distilmarco.distributed.ray_import import require_ray
from distilmarco.distributed.shards import collect
from distilmarco.distributed.source import IO_CPUS, check_ids, ray_dataset
from distilmarco.errors import DistilmarcoError, InputError
from distilmarco.index.identity import Engine, model_meta

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
SCRATCH = ".partial"


class EmbedJobError(DistilmarcoError):
    """The Ray job failed; the message says why (for a failing batch, with its document ids)."""


@dataclass(frozen=True)
class JobSettings:
    input: Path
    output: Path
    model: str
    id_column: str = "id"
    column: str = "text"
    chunking: Chunking | None = None
    engine: Engine = field(default_factory=Engine)
    actors: tuple[int, int] = (1, 1)
    cpus_per_actor: float = 1
    gpus_per_actor: float = 0
    resources: dict[str, float] | None = None  # custom Ray resources each actor needs
    checkpoint: Path | None = None
    batch_documents: int = BATCH_DOCUMENTS
    faults: FaultPlan | None = None


@dataclass(frozen=True)
class JobReport:
    documents: int  # in the input
    rows: int  # passages in the folder
    resumed_documents: int  # found complete in the checkpoint, not embedded again
    embedded_rows: int  # passages embedded by this run
    files: int
    seconds: float
    manifest: Path


def run_job(settings: JobSettings, address: str | None = "auto") -> JobReport:
    """Embed ``settings.input`` into ``settings.output`` on the Ray cluster at ``address``
    (``auto``: the running cluster, else a local one; ``None``: Ray as already initialised)."""
    start = time.perf_counter()
    out = settings.output
    if (out / MANIFEST).exists():
        raise InputError(f"{out} already holds embeddings ({MANIFEST}); choose another folder")
    if settings.checkpoint is not None and settings.checkpoint.resolve() == out.resolve():
        raise InputError(f"--checkpoint {settings.checkpoint} must be another folder than -o")
    ids = check_ids(settings.input, settings.id_column, settings.column)
    asked = settings.engine
    # The driver only needs the model's identity: it loads it on CPU, whatever the actors use.
    encoder = Engine(asked.backend, asked.precision, "cpu", asked.batch_tokens).encoder(
        settings.model
    )
    # CPU actors run the backend resolved here (the one the manifest records); GPU actors
    # resolve the backend asked for on their own device.
    backend = asked.backend if settings.gpus_per_actor else encoder.backend.name
    engine = Engine(backend, encoder.backend.precision, asked.device, asked.batch_tokens)
    meta, chunking = _identity(encoder, settings.chunking)
    fingerprint = file_fingerprint(settings.input)
    record = {"input": fingerprint, "model_meta": meta, "chunking": chunking,
              "id_column": settings.id_column, "column": settings.column}  # fmt: skip
    scratch = settings.checkpoint or out / SCRATCH
    shards = scratch / "shards"
    _open_checkpoint(scratch, record, resume=settings.checkpoint is not None)
    before = collect(shards)
    if before.documents:
        log.info("resuming: %d of %d document(s) already embedded", len(before.documents), len(ids))
    with _ray(address):
        ds = ray_dataset(settings.input)
        if before.documents:
            ds = _without(ds, settings.id_column, sorted(before.documents))
        rows = embed_dataset(
            ds, encoder.model_id,
            id_column=settings.id_column, column=settings.column, chunking=settings.chunking,
            engine=engine, actors=settings.actors, cpus_per_actor=settings.cpus_per_actor,
            gpus_per_actor=settings.gpus_per_actor, resources=settings.resources,
            batch_documents=settings.batch_documents,
            faults=settings.faults,
        )  # fmt: skip
        if len(before.documents) < len(ids):
            try:
                rows.write_parquet(str(shards.resolve()), ray_remote_args={"num_cpus": IO_CPUS})
            except (DistilmarcoError, KeyboardInterrupt):
                raise
            except Exception as exc:
                raise EmbedJobError(_explain(exc)) from exc
    after = collect(shards)
    missing = [i for i in ids if i not in after.documents]
    if missing or len(after.documents) != len(ids):
        raise EmbedJobError(
            f"the job finished but {len(missing)} document(s) have no complete set of passages: "
            f"{', '.join(missing[:10])}; re-run with the same --checkpoint to embed them"
        )
    manifest = _finish(settings, encoder, meta, chunking, fingerprint, len(ids), after.files)
    _remove_checkpoint(scratch)
    return JobReport(
        documents=len(ids), rows=manifest.rows, resumed_documents=len(before.documents),
        embedded_rows=after.rows - before.rows, files=len(manifest.files),
        seconds=time.perf_counter() - start, manifest=out / MANIFEST,
    )  # fmt: skip


def _identity(
    encoder: Any, chunking: Chunking | None
) -> tuple[dict[str, str], dict[str, int] | None]:
    """The identity the SQLite index records for this encoder (and chunking, when documents are
    cut), and the chunk settings for the manifest."""
    from distilmarco.index.model import IndexModel

    if chunking is None:
        return model_meta(encoder), None
    model = IndexModel(lambda: {}, Engine(), chunking.tokens, chunking.overlap)
    model.use(encoder)
    return model.meta(), {"window": model.chunking.window, "overlap": model.chunking.overlap}


def _open_checkpoint(folder: Path, record: dict[str, Any], resume: bool) -> None:
    path = folder / JOB_FILE
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if resume and found == record:
            return
        if resume:
            changed = ", ".join(k for k in record if found.get(k) != record[k])
            raise InputError(
                f"checkpoint {folder} was made for another job (its {changed} differ); "
                "pass a new --checkpoint folder or remove this one"
            )
    if (folder / "shards").is_dir():
        shutil.rmtree(folder / "shards")  # a scratch folder from an earlier failed run
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{JOB_FILE}.tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _without(ds: Any, id_column: str, done: list[str]) -> Any:
    """``ds`` minus the rows whose id is in ``done`` (a vectorised filter per block)."""
    import pyarrow as pa

    done_ids = pa.array(done, pa.string())  # Ray moves a large argument to its object store
    return ds.map_batches(_drop_done, fn_kwargs={"id_column": id_column, "done": done_ids},
                          batch_format="pyarrow", batch_size=None, num_cpus=IO_CPUS)  # fmt: skip


def _drop_done(batch: Any, id_column: str, done: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pc.cast(batch.column(id_column), pa.string())
    return batch.filter(pc.invert(pc.is_in(ids, value_set=done)))


def _finish(
    settings: JobSettings, encoder: Any, meta: dict[str, str], chunking: dict[str, int] | None,
    fingerprint: str, documents: int, files: tuple[Path, ...],
) -> Manifest:  # fmt: skip
    import pyarrow.parquet as pq

    out = settings.output
    (out / "shards").mkdir(parents=True, exist_ok=True)
    listed = []
    for n, path in enumerate(files):
        name = f"shards/part-{n:05d}.parquet"
        shutil.move(str(path), str(out / name))
        listed.append(ShardFile(name, pq.ParquetFile(out / name).metadata.num_rows))
    manifest = Manifest(
        model=encoder.model_id, revision=encoder.revision or "", backend=encoder.backend.name,
        precision=encoder.backend.precision, dimension=encoder.dimension,
        similarity=encoder.similarity, model_meta=meta, chunking=chunking,
        input=InputInfo(str(settings.input.resolve()), fingerprint, documents,
                        settings.id_column, settings.column),
        files=tuple(listed), rows=sum(f.rows for f in listed), documents=documents,
    )  # fmt: skip
    manifest.write(out)
    return manifest


def _remove_checkpoint(folder: Path) -> None:
    """Remove what the job put in its checkpoint folder (and the folder, once empty)."""
    (folder / JOB_FILE).unlink(missing_ok=True)
    shards = folder / "shards"
    if shards.is_dir():
        shutil.rmtree(shards)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _explain(exc: BaseException) -> str:
    """The root cause of a failed Ray job: our batch error's message when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen)
        if "EmbedBatchError" in text or "InputError" in text:
            for line in reversed(text.splitlines()):
                if "Error:" in line and ("EmbedBatchError" in line or "InputError" in line):
                    return line.split("Error:", 1)[1].strip()
        seen = seen.__cause__
    return (
        f"the Ray job failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    )


@contextlib.contextmanager
def _ray(address: str | None) -> Iterator[Any]:
    """Ray connected to ``address``; a connection (or local Ray) made here is closed here."""
    ray = require_ray("embedding on Ray")
    if address is None or ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError:
        if address != "auto":
            raise
        log.info("no running Ray cluster found: starting a local one")
        ray.init(address="local", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
