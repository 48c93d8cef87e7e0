"""Training configuration (typed, validated) and the result of a run."""

from __future__ import annotations

from dataclasses import dataclass

from distilmarco.errors import InputError
from distilmarco.training.losses import LOSSES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run. ``warmup`` below 1 is a fraction of all steps, else a count."""

    loss: str = "mnrl"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    max_seq_length: int | None = None
    precision: str = "auto"
    device: str = "cpu"
    scale: float = 20.0
    similarity: str | None = None  # None: the model's own (cosine or dot)
    mini_batch_size: int = 32  # cached-mnrl only
    eval_steps: int | None = None  # evaluate on the dev set every N steps (and at the end)
    save_steps: int | None = None  # write a resumable checkpoint every N steps
    stop_at_step: int | None = None  # stop after N steps (with a checkpoint) to resume later
    shuffle_buffer: int = 10_000
    no_duplicates: bool | None = None  # None: on for the in-batch-negative losses
    score_range: tuple[float, float] | None = None
    layout: str = "st6"  # folder format written: st6 (sentence-transformers 6) or st2 (2.x)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        for name in ("epochs", "batch_size", "mini_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise InputError("warmup, weight_decay and max_grad_norm must be >= 0")
        for name in ("eval_steps", "save_steps", "stop_at_step"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.similarity not in (None, "cosine", "dot"):
            raise InputError(f"similarity {self.similarity!r} is not one of cosine, dot")
        if self.layout not in ("st2", "st6"):
            raise InputError(f"layout {self.layout!r} is not one of st2, st6")
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise InputError(f"score_range {self.score_range} must be (low, high) with low < high")

    def warmup_steps(self, total: int) -> int:
        return int(self.warmup * total) if self.warmup < 1 else int(self.warmup)

    @property
    def in_batch_negatives(self) -> bool:
        return self.loss in ("mnrl", "cached-mnrl")


@dataclass(frozen=True)
class EvalRecord:
    step: int
    epoch: float
    metrics: dict[str, float]
    loss: float | None


@dataclass(frozen=True)
class TrainResult:
    """What a run did: where the model is, how far it went, how fast, and its dev figures."""

    output: str
    steps: int
    total_steps: int
    examples: int  # training examples seen in this process (not counting a resumed part)
    tokens: int  # real tokens embedded in training, all columns
    train_seconds: float  # optimisation only, evaluation and saving excluded
    final_loss: float | None
    best_metric: float | None
    best_step: int | None
    evaluations: tuple[EvalRecord, ...]
    precision: str

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0
