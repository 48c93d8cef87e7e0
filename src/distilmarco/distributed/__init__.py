"""Bulk embedding on Ray Data (the ``distributed`` extra): ``embed_dataset`` composes into a Ray
pipeline; ``run_job`` embeds a Parquet or JSONL file into an embeddings folder, resumably;
``verify`` checks such a folder against its input. Ray is imported only when used."""

from distilmarco.errors import MissingExtraError

try:
    import pyarrow  # noqa: F401  (ray[data] brings it; rows and shards are Arrow tables)
except ImportError as exc:
    raise MissingExtraError("ray[data]", "distributed", "distilmarco.distributed") from exc

from distilmarco.distributed.embed import Chunking, EmbedBatchError, FaultPlan, embed_dataset
from distilmarco.distributed.job import EmbedJobError, JobReport, JobSettings, run_job
from distilmarco.distributed.manifest import Manifest, Verdict, verify
from distilmarco.distributed.rows import row_schema

__all__ = [
    "Chunking",
    "EmbedBatchError",
    "EmbedJobError",
    "FaultPlan",
    "JobReport",
    "JobSettings",
    "Manifest",
    "Verdict",
    "embed_dataset",
    "row_schema",
    "run_job",
    "verify",
]
