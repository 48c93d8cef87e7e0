"""A training batch: each text column tokenised and right-padded, plus the labels as a tensor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from distilmarco.batching import pad_batch
from distilmarco.tokenizer import Tokenizer


@dataclass(frozen=True)
class Tokens:
    """(B, T) int64 ids and attention mask of one column, right-padded."""

    ids: torch.Tensor
    mask: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.mask.sum())

    def slice(self, begin: int, end: int) -> Tokens:
        """Rows [begin, end), trimmed to their longest row."""
        mask = self.mask[begin:end]
        width = max(int(mask.sum(dim=1).max()), 1)
        return Tokens(self.ids[begin:end, :width], mask[:, :width])

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(self.ids.to(device), self.mask.to(device))

    @staticmethod
    def concat(columns: Sequence[Tokens]) -> Tokens:
        """Rows of every column stacked, padded to the widest."""
        if len(columns) == 1:
            return columns[0]
        width = max(c.ids.shape[1] for c in columns)

        def pad(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, width - x.shape[1]))

        return Tokens(
            torch.cat([pad(c.ids) for c in columns]), torch.cat([pad(c.mask) for c in columns])
        )


@dataclass(frozen=True)
class Batch:
    """Columns of texts (query, positive, negatives...; or sentence1, sentence2) and labels:
    (B,) scores, (B, K) margins, (B, D) or (B, C, D) teacher vectors, or None."""

    columns: tuple[Tokens, ...]
    labels: torch.Tensor | None

    @property
    def rows(self) -> int:
        return self.columns[0].rows

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.columns)

    def to(self, device: torch.device | str) -> Batch:
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(tuple(c.to(device) for c in self.columns), labels)


def tokenize_column(tokenizer: Tokenizer, texts: Sequence[str]) -> Tokens:
    tok = tokenizer.encode(list(texts))
    ids, mask = pad_batch(tok.ids, tokenizer.pad_id)
    return Tokens(torch.from_numpy(ids), torch.from_numpy(mask))


def collate(
    tokenizer: Tokenizer,
    columns: Sequence[Sequence[str]],
    labels: Sequence[float | Sequence[float] | np.ndarray] | None,
) -> Batch:
    """Tokenise each column and stack the labels (float32)."""
    tensor = None
    if labels is not None:
        tensor = torch.from_numpy(np.asarray(labels, dtype=np.float32))
    return Batch(tuple(tokenize_column(tokenizer, col) for col in columns), tensor)
