"""Semantic textual similarity: Spearman (and Pearson) correlation between the model's similarity
of each sentence pair and the gold score — the MTEB STS protocol (its main score is cosine Spearman).

Reads the STS Benchmark files (TAB-separated, no quoting, score in field 4, sentences in 5 and 6,
extra trailing fields ignored), a CSV/TSV with a header ``sentence1, sentence2, score``, or JSONL with
those fields.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilmarco.errors import FormatError, InputError
from distilmarco.evaluation.ir import Throughput, embed
from distilmarco.textio import jsonl_objects
from distilmarco.vectors import pair_scores

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder

HEADER = ("sentence1", "sentence2", "score")


@dataclass(frozen=True)
class Pair:
    sentence1: str
    sentence2: str
    score: float


@dataclass(frozen=True)
class STSResult:
    spearman: float  # of the model's similarity (cosine for cosine models) with the gold score
    pearson: float
    pairs: int
    similarity: str
    throughput: Throughput

    @property
    def metrics(self) -> dict[str, float]:
        return {"spearman": self.spearman, "pearson": self.pearson}


def read_pairs(path: Path) -> list[Pair]:
    """Sentence pairs with gold scores; the format follows the file (see the module notes)."""
    if path.is_dir():
        path = path / "sts-test.csv"
    if not path.is_file():
        raise InputError(f"STS file {path} does not exist")
    if path.suffix.lower() == ".jsonl":
        return _read_jsonl(path)
    with open(path, encoding="utf-8", newline="") as f:
        first = f.readline()
    delimiter = "\t" if "\t" in first else ","
    names = [c.strip().lower() for c in first.rstrip("\r\n").split(delimiter)]
    if all(h in names for h in HEADER):
        return _read_table(path, delimiter)
    return _read_stsbenchmark(path)


def _read_stsbenchmark(path: Path) -> list[Pair]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 7:
                raise FormatError(
                    f"{path}:{n}: expected at least 7 TAB-separated fields (genre, file, year, id, "
                    f"score, sentence1, sentence2), got {len(fields)}"
                )
            pairs.append(Pair(fields[5], fields[6], _score(fields[4], path, n)))
    return pairs


def _read_table(path: Path, delimiter: str) -> list[Pair]:
    pairs = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        reader.fieldnames = [c.strip().lower() for c in reader.fieldnames or []]
        for row in reader:
            n = reader.line_num
            if any(row.get(h) is None for h in HEADER):
                raise FormatError(f"{path}:{n}: missing one of the columns {', '.join(HEADER)}")
            pairs.append(Pair(row["sentence1"], row["sentence2"], _score(row["score"], path, n)))
    return pairs


def _read_jsonl(path: Path) -> list[Pair]:
    pairs = []
    for n, row in jsonl_objects(path):
        if not all(h in row for h in HEADER):
            raise FormatError(f"{path}:{n}: expected an object with {', '.join(HEADER)}")
        s1, s2 = row["sentence1"], row["sentence2"]
        if not isinstance(s1, str) or not isinstance(s2, str):
            raise FormatError(f"{path}:{n}: sentence1 and sentence2 must be strings")
        pairs.append(Pair(s1, s2, _score(str(row["score"]), path, n)))
    return pairs


def _score(text: str, path: Path, n: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"{path}:{n}: score {text!r} is not a number") from None
    if not np.isfinite(value):
        raise FormatError(f"{path}:{n}: score {text!r} is not finite")
    return value


def evaluate_sts(
    encoder: Encoder, pairs: Sequence[Pair], *, batch_tokens: int | None = None
) -> STSResult:
    """Embed each distinct sentence once, then correlate pair similarity with the gold scores."""
    from scipy.stats import pearsonr, spearmanr

    if len(pairs) < 3:
        raise InputError(f"need at least 3 sentence pairs to correlate, got {len(pairs)}")
    sentences = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))
    vectors, spent = embed(encoder, sentences, batch_tokens=batch_tokens)
    row = {s: i for i, s in enumerate(sentences)}
    a = vectors[[row[p.sentence1] for p in pairs]]
    b = vectors[[row[p.sentence2] for p in pairs]]
    predicted = pair_scores(a, b, encoder.similarity)
    gold = np.array([p.score for p in pairs])
    return STSResult(
        spearman=float(spearmanr(predicted, gold).statistic),
        pearson=float(pearsonr(predicted, gold).statistic),
        pairs=len(pairs),
        similarity=encoder.similarity,
        throughput=spent,
    )
