"""Benchmark inputs and the arithmetic around them: texts of chosen token lengths, FLOP counts.

Texts are made of real English words (from the STS Benchmark) cut to a target number of tokens,
so every runtime tokenises exactly what a user would send. Seeded: the same inputs every run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import read_sts_sentences

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    texts: tuple[str, ...]
    lengths: tuple[int, ...]  # tokens per text, [CLS] and [SEP] included

    @property
    def tokens(self) -> int:
        return int(sum(self.lengths))

    def summary(self) -> dict[str, float | int | str]:
        arr = np.array(self.lengths)
        return {
            "name": self.name,
            "description": self.description,
            "texts": len(self.texts),
            "tokens": self.tokens,
            "mean_tokens": round(float(arr.mean()), 1),
            "min_tokens": int(arr.min()),
            "max_tokens": int(arr.max()),
        }


def word_pool() -> list[str]:
    words: list[str] = []
    for sentence in read_sts_sentences("train"):
        words += _WORD.findall(sentence)
    return words


def make_texts(
    tokenizer_file: Path, targets: Sequence[int], seed: int
) -> tuple[list[str], list[int]]:
    """One text per target length (in tokens, specials included) and its actual length."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    rng = random.Random(seed)
    pool = word_pool()
    texts: list[str] = []
    for target in targets:
        words = " ".join(rng.choices(pool, k=target))  # >= target - 2 tokens
        enc = tok.encode(words, add_special_tokens=False)
        keep = max(1, min(target - 2, len(enc.offsets)))
        texts.append(words[: enc.offsets[keep - 1][1]])
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    return texts, lengths


def standard_workloads(tokenizer_file: Path, quick: bool, seed: int = 0) -> list[Workload]:
    """Short queries, MS MARCO-like passages, long documents and a realistic mix of the three."""
    rng = np.random.default_rng(seed)
    n = {"short": 32, "passage": 12, "p128": 4, "long": 2, "mix": 24}
    if not quick:
        n = {"short": 512, "passage": 192, "p128": 64, "long": 32, "mix": 256}
    plans = {
        "short": ("queries, ~10 tokens", rng.integers(6, 15, n["short"])),
        "passage": ("MS MARCO-like passages, 60-120 tokens", rng.integers(60, 121, n["passage"])),
        "p128": ("passages of 128 tokens (for the matmul-peak figure)", np.full(n["p128"], 128)),
        "long": ("long documents, 300-512 tokens", rng.integers(300, 513, n["long"])),
    }
    mix_kind = rng.choice(3, size=n["mix"], p=[0.4, 0.5, 0.1])
    ranges = [(6, 15), (60, 121), (300, 513)]
    mix = np.array([rng.integers(*ranges[k]) for k in mix_kind])
    plans["mix"] = ("mix: 40% queries, 50% passages, 10% long, shuffled", mix)
    out = []
    for i, (name, (desc, targets)) in enumerate(plans.items()):
        texts, lengths = make_texts(tokenizer_file, [int(t) for t in targets], seed + i)
        out.append(Workload(name, desc, tuple(texts), tuple(lengths)))
    return out


def flops_per_text(length: int, hidden: int = 768, layers: int = 6, ffn: int = 3072) -> float:
    """Forward FLOPs for one text of ``length`` real tokens (multiply-add = 2 FLOPs).

    Per layer and token: Q, K, V and output projections (4 D^2 MACs), the FFN (2 D F MACs) and
    attention scores and mix (2 T D MACs). Embeddings, LayerNorm, softmax and GELU are ignored.
    """
    per_token = 4 * hidden * hidden + 2 * hidden * ffn + 2 * length * hidden
    return 2.0 * layers * length * per_token


def useful_flops(lengths: Sequence[int]) -> float:
    return float(sum(flops_per_text(n) for n in lengths))


def st_padding_fraction(
    lengths: Sequence[int], texts: Sequence[str], batch_size: int = 32
) -> float:
    """Padding in sentence-transformers' batches: sorted by character length, ``batch_size`` rows,
    each padded to its longest row."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    real = padded = 0
    for start in range(0, len(order), batch_size):
        rows = [lengths[i] for i in order[start : start + batch_size]]
        real += sum(rows)
        padded += max(rows) * len(rows)
    return 1.0 - real / padded if padded else 0.0
