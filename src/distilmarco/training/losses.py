"""Training losses as pure functions over embeddings, plus the ``Loss`` objects the trainer calls.

Each loss object knows which input columns it needs and runs forward and backward for one batch
through an ``embed`` callable (tokens -> (B, D) embeddings), so the trainer stays generic and the
cached variant can run its three GradCache passes itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F

from distilmarco.errors import InputError
from distilmarco.training.batch import Batch, Tokens

LossName = Literal["mnrl", "cached-mnrl", "margin-mse", "cosent", "mse"]
LOSSES: tuple[str, ...] = ("mnrl", "cached-mnrl", "margin-mse", "cosent", "mse")
ScoreFn = Literal["cosine", "dot"]
Embed = Callable[[Tokens], torch.Tensor]
LabelKind = Literal["none", "score", "margins", "vectors"]


# --- the maths -------------------------------------------------------------------------------


def similarity_matrix(a: torch.Tensor, b: torch.Tensor, similarity: ScoreFn) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) cosine or dot-product scores."""
    if similarity == "cosine":
        a, b = F.normalize(a, p=2.0, dim=-1), F.normalize(b, p=2.0, dim=-1)
    return a @ b.T


def pairwise_similarity(a: torch.Tensor, b: torch.Tensor, similarity: ScoreFn) -> torch.Tensor:
    """(N, D), (N, D) -> (N,) scores of row i with row i."""
    if similarity == "cosine":
        a, b = F.normalize(a, p=2.0, dim=-1), F.normalize(b, p=2.0, dim=-1)
    return (a * b).sum(dim=-1)


def mnrl_loss(
    queries: torch.Tensor,
    documents: Sequence[torch.Tensor],
    scale: float = 20.0,
    similarity: ScoreFn = "cosine",
) -> torch.Tensor:
    """Multiple negatives ranking (InfoNCE with in-batch negatives).

    ``documents[0]`` holds each query's positive, ``documents[1:]`` optional hard-negative columns.
    With s_ij = scale * sim(q_i, d_j) over all B * C documents j,
    ``loss = mean_i [ logsumexp_j s_ij - s_ii ]``.
    """
    return mnrl_rows(queries, documents, 0, queries.shape[0], scale, similarity)


def mnrl_rows(
    queries: torch.Tensor,
    documents: Sequence[torch.Tensor],
    begin: int,
    end: int,
    scale: float,
    similarity: ScoreFn,
) -> torch.Tensor:
    """The MNRL terms of query rows [begin, end), summed and divided by the whole batch size."""
    scores = scale * similarity_matrix(queries[begin:end], torch.cat(list(documents)), similarity)
    rows = torch.arange(end - begin, device=queries.device)
    positive = scores[rows, rows + begin]
    return (torch.logsumexp(scores, dim=1) - positive).sum() / queries.shape[0]


def cosent_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    labels: torch.Tensor,
    scale: float = 20.0,
    similarity: ScoreFn = "cosine",
) -> torch.Tensor:
    """CoSENT: with s_i = scale * sim(a_i, b_i), every pair (i, j) whose gold label_i < label_j
    should score s_i < s_j: ``loss = log(1 + sum_{label_i < label_j} exp(s_i - s_j))``."""
    scores = scale * _full(pairwise_similarity(a, b, similarity))
    labels = labels.reshape(-1).to(scores.dtype)
    diff = scores[:, None] - scores[None, :]  # (B, B): s_i - s_j
    wrong = labels[:, None] < labels[None, :]  # pairs that should be ordered the other way
    diff = diff.masked_fill(~wrong, float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.reshape(-1)]), dim=0)


def margin_mse_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: Sequence[torch.Tensor],
    margins: torch.Tensor,
    similarity: ScoreFn = "dot",
) -> torch.Tensor:
    """MarginMSE: the student's margins sim(q, p) - sim(q, n_k) regress on the teacher's.

    ``margins`` is (B, K) teacher margins, one per negative column; ``loss = mean (m - m_hat)^2``.
    """
    pos = pairwise_similarity(queries, positives, similarity)
    predicted = torch.stack(
        [pos - pairwise_similarity(queries, n, similarity) for n in negatives], dim=1
    )  # (B, K)
    return F.mse_loss(predicted, margins.to(predicted.dtype).reshape(predicted.shape))


def mse_loss(student: Sequence[torch.Tensor], teacher: torch.Tensor) -> torch.Tensor:
    """Mean over columns of the mean squared error between each column's embeddings and the
    teacher vectors: ``teacher`` is (B, D) for every column or (B, C, D), one per column."""
    targets = [teacher] * len(student) if teacher.dim() == 2 else list(teacher.unbind(1))
    return torch.stack(
        [F.mse_loss(s, t.to(s.dtype)) for s, t in zip(student, targets, strict=True)]
    ).mean()


# --- loss objects ----------------------------------------------------------------------------


class Loss(Protocol):
    """What the trainer needs from a loss."""

    @property
    def name(self) -> str: ...

    @property
    def min_columns(self) -> int: ...

    @property
    def max_columns(self) -> int | None: ...

    @property
    def label(self) -> LabelKind: ...

    def compute(self, embed: Embed, batch: Batch) -> torch.Tensor:
        """The batch's loss, with a graph back to the model's parameters."""
        ...

    def backward(self, embed: Embed, batch: Batch) -> torch.Tensor:
        """Accumulate the batch's gradients into the model; returns the detached loss."""
        ...


def embed_all(embed: Embed, batch: Batch) -> list[torch.Tensor]:
    """One forward over every column at once (rows of all columns stacked), split per column."""
    merged = embed(Tokens.concat(batch.columns))
    return list(merged.split([c.rows for c in batch.columns]))


class _Plain:
    """A loss whose whole batch is embedded with gradients in one pass."""

    name: ClassVar[str] = ""
    min_columns: ClassVar[int] = 2
    max_columns: ClassVar[int | None] = None
    label: ClassVar[LabelKind] = "none"

    def compute(self, embed: Embed, batch: Batch) -> torch.Tensor:
        return self.from_embeddings(embed_all(embed, batch), batch.labels)

    def from_embeddings(self, emb: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, embed: Embed, batch: Batch) -> torch.Tensor:
        loss = self.compute(embed, batch)
        loss.backward()
        return loss.detach()


@dataclass
class MNRL(_Plain):
    """(query, positive[, negative...]) columns; see ``mnrl_loss``."""

    scale: float = 20.0
    similarity: ScoreFn = "cosine"
    name: ClassVar[str] = "mnrl"

    def from_embeddings(self, emb: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        return mnrl_loss(emb[0], emb[1:], self.scale, self.similarity)


@dataclass
class CoSENT(_Plain):
    """(sentence1, sentence2) columns with a gold score each; see ``cosent_loss``."""

    scale: float = 20.0
    similarity: ScoreFn = "cosine"
    name: ClassVar[str] = "cosent"
    max_columns: ClassVar[int | None] = 2
    label: ClassVar[LabelKind] = "score"

    def from_embeddings(self, emb: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        return cosent_loss(emb[0], emb[1], _needed(labels, self.name), self.scale, self.similarity)


@dataclass
class MarginMSE(_Plain):
    """(query, positive, negative...) columns with teacher margins; see ``margin_mse_loss``."""

    similarity: ScoreFn = "dot"
    name: ClassVar[str] = "margin-mse"
    min_columns: ClassVar[int] = 3
    label: ClassVar[LabelKind] = "margins"

    def from_embeddings(self, emb: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        return margin_mse_loss(emb[0], emb[1], emb[2:], _needed(labels, self.name), self.similarity)


@dataclass
class MSE(_Plain):
    """One or more text columns with teacher vectors; see ``mse_loss``."""

    name: ClassVar[str] = "mse"
    min_columns: ClassVar[int] = 1
    label: ClassVar[LabelKind] = "vectors"

    def from_embeddings(self, emb: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        return mse_loss(emb, _needed(labels, self.name))


@dataclass
class CachedMNRL:
    """MNRL over a large batch in bounded memory (GradCache, Gao et al. 2021).

    1. embed every column in mini-batches without a graph; 2. compute the loss on those embeddings
    and back-propagate it to them only; 3. embed each mini-batch again with a graph and back-propagate
    the cached embedding gradients into the model. Memory holds one mini-batch of activations; the
    gradients equal MNRL's on the whole batch (the model has no dropout, so both passes agree).
    """

    scale: float = 20.0
    similarity: ScoreFn = "cosine"
    mini_batch_size: int = 32
    name: ClassVar[str] = "cached-mnrl"
    min_columns: ClassVar[int] = 2
    max_columns: ClassVar[int | None] = None
    label: ClassVar[LabelKind] = "none"

    def __post_init__(self) -> None:
        if self.mini_batch_size < 1:
            raise InputError(f"mini_batch_size must be >= 1, got {self.mini_batch_size}")

    def compute(self, embed: Embed, batch: Batch) -> torch.Tensor:
        emb = embed_all(embed, batch)
        return mnrl_loss(emb[0], emb[1:], self.scale, self.similarity)

    def backward(self, embed: Embed, batch: Batch) -> torch.Tensor:
        size = self.mini_batch_size
        with torch.no_grad():
            reps = [
                torch.cat([embed(col.slice(i, i + size)) for i in range(0, col.rows, size)])
                for col in batch.columns
            ]
        reps = [_full(r.detach()).requires_grad_() for r in reps]
        total = reps[0].new_zeros(())
        for begin in range(0, reps[0].shape[0], size):
            end = min(begin + size, reps[0].shape[0])
            part = mnrl_rows(reps[0], reps[1:], begin, end, self.scale, self.similarity)
            part.backward()
            total += part.detach()
        for col, rep in zip(batch.columns, reps, strict=True):
            grad = rep.grad
            if grad is None:
                continue
            for i in range(0, col.rows, size):
                out = embed(col.slice(i, i + size))
                out.backward(grad[i : i + size].to(out.dtype))
        return total


def make_loss(
    name: str,
    *,
    similarity: ScoreFn = "cosine",
    scale: float = 20.0,
    mini_batch_size: int = 32,
) -> Loss:
    """The loss called ``name`` (one of ``LOSSES``); MarginMSE keeps dot products, as is usual."""
    if scale <= 0:
        raise InputError(f"scale must be positive, got {scale}")
    if name == "mnrl":
        return MNRL(scale, similarity)
    if name == "cached-mnrl":
        return CachedMNRL(scale, similarity, mini_batch_size)
    if name == "cosent":
        return CoSENT(scale, similarity)
    if name == "margin-mse":
        return MarginMSE("dot")
    if name == "mse":
        return MSE()
    raise InputError(f"loss {name!r} is not one of {', '.join(LOSSES)}")


def _full(x: torch.Tensor) -> torch.Tensor:
    """Half-precision scores go up to float32 before exp/log; float32 and float64 stay."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _needed(labels: torch.Tensor | None, loss: str) -> torch.Tensor:
    if labels is None:
        raise InputError(f"the {loss} loss needs labels, and the batch has none")
    return labels
