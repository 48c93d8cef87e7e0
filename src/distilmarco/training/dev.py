"""Dev-set evaluation during training, with our own evaluators (STS Spearman, IR nDCG@10 / MRR@10).

The model being trained is evaluated through an ``Encoder`` whose weights are refreshed from the
training module, so dev figures are exactly what the saved model will give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from distilmarco.errors import InputError

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder
    from distilmarco.evaluation.formats import IRDataset
    from distilmarco.evaluation.sts import Pair


class DevEvaluator(Protocol):
    @property
    def main(self) -> str:
        """The key of the metric that picks the best checkpoint (higher is better)."""
        ...

    def __call__(self, encoder: Encoder) -> dict[str, float]: ...


@dataclass(frozen=True)
class STSDev:
    """Spearman (and Pearson) of the model's similarity against gold scores."""

    pairs: Sequence[Pair]
    main: str = "spearman"

    def __post_init__(self) -> None:
        if len(self.pairs) < 3:
            raise InputError(f"an STS dev set needs at least 3 pairs, got {len(self.pairs)}")

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        from distilmarco.evaluation.sts import evaluate_sts

        return evaluate_sts(encoder, self.pairs).metrics


@dataclass(frozen=True)
class IRDev:
    """nDCG@10 and MRR@10 of exact dense retrieval over the dev corpus."""

    data: IRDataset
    main: str = "nDCG@10"

    def __post_init__(self) -> None:
        positives = sum(1 for docs in self.data.qrels.values() if any(g > 0 for g in docs.values()))
        if positives == 0:
            raise InputError(f"dev set {self.data.name!r} has no query with a relevant document")

    def __call__(self, encoder: Encoder) -> dict[str, float]:
        from distilmarco.evaluation.ir import evaluate_ir

        (result,) = evaluate_ir(encoder, self.data, k=10, metrics="nDCG@10,MRR@10")
        return dict(result.scores.mean)


def load_dev(path: Path) -> DevEvaluator:
    """An IR dev set for a BEIR (``qrels/dev.tsv``, else test) or Cranfield folder; STS pairs
    for a file or the STS Benchmark folder (``sts-dev.csv``)."""
    from distilmarco.evaluation import formats
    from distilmarco.evaluation.sts import read_pairs

    path = Path(path)
    if path.is_dir() and (path / "sts-dev.csv").is_file():
        return STSDev(read_pairs(path / "sts-dev.csv"))  # the STS Benchmark folder: its dev split
    if path.is_dir() and not (path / "sts-test.csv").is_file():
        split = "dev" if (path / "qrels" / "dev.tsv").is_file() else "test"
        return IRDev(formats.load(path, split=split))
    return STSDev(read_pairs(path))


def queries_subset(data: IRDataset, query_ids: Sequence[str], name: str) -> IRDataset:
    """The same corpus with only ``query_ids`` (for a fixed train/test split of one collection)."""
    keep = set(query_ids)
    return replace(
        data,
        name=name,
        queries={q: t for q, t in data.queries.items() if q in keep},
        qrels={q: d for q, d in data.qrels.items() if q in keep},
    )
