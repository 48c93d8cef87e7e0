"""A short model card (``README.md``) for a trained model folder."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from distilmarco.training.config import TrainResult

if TYPE_CHECKING:
    from distilmarco.training.trainer import Job

_HYPER = (
    "epochs",
    "batch_size",
    "lr",
    "warmup",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "max_seq_length",
    "scale",
    "similarity",
)


def write_card(job: Job, base_model: str, result: TrainResult) -> None:
    cfg = asdict(job.config)
    spec = job.module.spec
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, sentence-similarity, distilmarco]",
        "---",
        "",
        f"# Fine-tuned from {base_model}",
        "",
        f"A {spec.transformer.architecture} sentence-embedding model "
        f"({spec.dimension} dimensions, {spec.similarity} similarity) trained with distilmarco.",
        "",
        "## Training",
        "",
        f"- base model: `{base_model}`",
        f"- data: `{job.data}` ({result.examples} examples seen in the last run)",
        f"- loss: `{job.config.loss}`",
        f"- steps: {result.steps}, precision: {result.precision}",
        "- hyper-parameters: " + ", ".join(f"{k}={cfg[k]}" for k in _HYPER),
    ]
    if result.evaluations:
        lines += ["", "## Dev evaluation", ""]
        lines += ["| step | " + " | ".join(result.evaluations[0].metrics) + " |"]
        lines += ["|---" * (len(result.evaluations[0].metrics) + 1) + "|"]
        for rec in result.evaluations:
            values = " | ".join(f"{v:.4f}" for v in rec.metrics.values())
            lines.append(f"| {rec.step} | {values} |")
        lines += ["", f"The folder holds the model of step {result.best_step} (best dev score)."]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from distilmarco import Encoder",
        "vectors = Encoder('path/to/this/folder').encode(['a sentence'])",
        "# or: sentence_transformers.SentenceTransformer('path/to/this/folder')",
        "```",
        "",
    ]
    (job.output / "README.md").write_text("\n".join(lines), encoding="utf-8")
