"""``embed_dataset``: documents to passage rows with vectors, as a step of a Ray Data pipeline.

Each actor of the pool builds one ``Encoder`` with as many threads as the CPUs Ray gave it, and cuts
documents with the index's chunker. A batch whose embedding raises is retried a bounded number of
times in the actor, then fails the job with an error naming its document ids: Ray Data fails the
whole job on a failed block, so nothing is silently dropped. Actors that die (a killed process, a
lost node) are restarted by Ray and their batches run again.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distilmarco.distributed.ray_import import require_ray
from distilmarco.distributed.rows import Columns, passage_rows
from distilmarco.errors import DistilmarcoError
from distilmarco.index.identity import Engine

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

log = logging.getLogger(__name__)

BATCH_DOCUMENTS = 64  # documents per map_batches call: one output block, one committed shard
ATTEMPTS = 3  # tries of one batch in an actor before the job fails


class EmbedBatchError(DistilmarcoError):
    """A batch kept failing in its actor; the message names its document ids."""


@dataclass(frozen=True)
class Chunking:
    """Cut documents into the index's passages (``None`` = the index's default sizes)."""

    tokens: int | None = None
    overlap: int | None = None


@dataclass(frozen=True)
class FaultPlan:
    """Test hook: faults injected inside the actors (never set in normal use).

    ``kill_once_on``: the first actor to see this document id ends its own process (once per
    ``marker`` file); ``crash_on``: every batch holding this id raises; ``delay_s``: a pause per
    batch, to give a test time to act while the job runs.
    """

    kill_once_on: str | None = None
    marker: str | None = None
    crash_on: str | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class ActorSpec:
    """What every actor needs to build its encoder and cut documents."""

    model: str
    engine: Engine
    columns: Columns
    chunking: Chunking | None
    faults: FaultPlan | None


class EmbedActor:
    """Ray Data callable class: one encoder per actor, reused for every batch it gets."""

    def __init__(self, spec: ActorSpec) -> None:
        import ray

        from distilmarco.index.model import IndexModel

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        threads = max(1, int(cpus))
        engine = Engine(spec.engine.backend, spec.engine.precision, spec.engine.device,
                        spec.engine.batch_tokens, threads)  # fmt: skip
        self.encoder = engine.encoder(spec.model)
        self.spec = spec
        self.spans = None
        if spec.chunking is not None:
            model = IndexModel(lambda: {}, engine, spec.chunking.tokens, spec.chunking.overlap)
            model.use(self.encoder)
            self.spans = model.spans
        log.info("actor %d: %s with %d thread(s)", os.getpid(), self.encoder.model_id, threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = [str(v) for v in batch.column(self.spec.columns.id).to_pylist()]
        faults = self.spec.faults
        if faults is not None:
            _inject(faults, ids)
        error: Exception | None = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if faults is not None and faults.crash_on in ids:
                    raise RuntimeError(f"injected crash on document {faults.crash_on}")
                return passage_rows(batch, self.spec.columns, self.encoder, self.spans)
            except DistilmarcoError:
                raise  # bad input fails the same way every time: no retry
            except Exception as exc:  # a fault in the engine: retried, then reported with the ids
                error = exc
                log.warning("batch of %d document(s) failed (try %d of %d): %s",
                            len(ids), attempt, ATTEMPTS, exc)  # fmt: skip
        raise EmbedBatchError(  # every id: a batch holds at most batch_documents of them
            f"a batch of {len(ids)} document(s) failed {ATTEMPTS} times, last with "
            f"{type(error).__name__}: {error}; its ids: {', '.join(ids)}"
        )


def _inject(faults: FaultPlan, ids: list[str]) -> None:
    if faults.delay_s:
        time.sleep(faults.delay_s)
    if faults.kill_once_on in ids and faults.marker:
        try:
            fd = os.open(faults.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)  # the actor's process dies as if killed


def embed_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str],
    *,
    id_column: str = "id",
    column: str = "text",
    chunking: Chunking | None = None,
    engine: Engine | None = None,
    actors: tuple[int, int] = (1, 1),
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    resources: dict[str, float] | None = None,
    batch_documents: int = BATCH_DOCUMENTS,
    faults: FaultPlan | None = None,
) -> ray.data.Dataset:
    """Passage rows with vectors for the documents of ``ds`` (lazy: runs when consumed).

    ``actors``: the (min, max) size of the actor pool; each actor gets ``cpus_per_actor`` CPUs
    (its encoder's threads), ``gpus_per_actor`` GPUs and the custom Ray ``resources`` (to place
    actors on a kind of node). Rows follow the embeddings folder's
    schema (``rows.row_schema``) and carry their ids: never rely on their order.
    """
    ray = require_ray("embedding on Ray")
    lo, hi = actors
    if not 1 <= lo <= hi:
        raise ValueError(f"actors {actors!r} must be (min, max) with 1 <= min <= max")
    engine = engine or Engine()
    if gpus_per_actor and engine.device == "cpu":
        engine = Engine(engine.backend, engine.precision, "cuda", engine.batch_tokens)
    model_name = str(Path(model).resolve()) if Path(model).exists() else str(model)
    spec = ActorSpec(model_name, engine, Columns(id_column, column), chunking, faults)
    return ds.map_batches(
        EmbedActor,
        fn_constructor_args=(spec,),
        batch_size=batch_documents,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
        resources=resources,
    )  # Ray Data restarts dead actors and retries their batches by default
