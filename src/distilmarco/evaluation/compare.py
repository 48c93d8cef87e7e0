"""The same evaluation across backends x precisions: one row per combination with the metric, its
difference from torch fp32, and throughput. Combinations that cannot run here are rows too, with
the reason, so a missing backend is visible rather than absent."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distilmarco.errors import DistilmarcoError, InputError
from distilmarco.evaluation.ir import Throughput

log = logging.getLogger(__name__)

BASELINE = ("torch", "fp32")
BACKENDS = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEFAULT_COMBOS = "torch:fp32,torch:bf16,onnx:fp32,onnx:int8,openvino:fp32,openvino:int8"


@dataclass(frozen=True)
class Combo:
    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


@dataclass(frozen=True, order=True)
class MetricKey:
    """One reported figure: a metric (``"nDCG@10"``) of a mode (``"bm25"``; ``""`` when the task
    has one mode)."""

    mode: str
    metric: str

    @property
    def label(self) -> str:
        """The report's name for it: ``"bm25 nDCG@10"``, or the metric alone."""
        return f"{self.mode} {self.metric}" if self.mode else self.metric


def keyed(metrics: dict[str, float], mode: str = "") -> dict[MetricKey, float]:
    """A task's ``{metric: value}`` as figures of ``mode``."""
    return {MetricKey(mode, name): value for name, value in metrics.items()}


@dataclass(frozen=True)
class CompareRow:
    combo: Combo
    metrics: dict[MetricKey, float]  # empty when the combination could not run
    throughput: Throughput
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_combos(text: str) -> tuple[Combo, ...]:
    """``"all"``, ``"default"`` or ``"torch:fp32,onnx:int8,..."``; torch fp32 always comes first."""
    text = text.strip().lower()
    if text == "all":
        items = [f"{b}:{p}" for b in BACKENDS for p in PRECISIONS]
    elif text in ("", "default"):
        items = DEFAULT_COMBOS.split(",")
    else:
        items = [t.strip() for t in text.split(",") if t.strip()]
    combos = []
    for item in items:
        backend, _, precision = item.partition(":")
        precision = precision or "fp32"
        if backend not in BACKENDS or precision not in PRECISIONS:
            raise InputError(
                f"--compare entry {item!r} is not backend:precision with backend in "
                f"{', '.join(BACKENDS)} and precision in {', '.join(PRECISIONS)} (or 'all')"
            )
        combos.append(Combo(backend, precision))
    ordered = [Combo(*BASELINE)] + [c for c in combos if (c.backend, c.precision) != BASELINE]
    return tuple(dict.fromkeys(ordered))


def compare(
    combos: Sequence[Combo],
    make_encoder: Callable[[str, str], object],
    run: Callable[[object], tuple[dict[MetricKey, float], Throughput]],
) -> list[CompareRow]:
    """Build an encoder per combination and run the evaluation; failures become rows with reasons."""
    rows = []
    for combo in combos:
        try:
            encoder = make_encoder(combo.backend, combo.precision)
        except (DistilmarcoError, ImportError, RuntimeError) as exc:
            log.info("%s unavailable: %s", combo.label, exc)
            rows.append(CompareRow(combo, {}, Throughput(), f"unavailable: {exc}"))
            continue
        try:
            metrics, spent = run(encoder)
        except (DistilmarcoError, RuntimeError) as exc:
            log.info("%s failed: %s", combo.label, exc)
            rows.append(CompareRow(combo, {}, Throughput(), f"failed: {exc}"))
            continue
        finally:
            del encoder
            gc.collect()
        rows.append(CompareRow(combo, metrics, spent))
    return rows


@dataclass(frozen=True)
class CompareRecord:
    """One combination's figures as reported: its metrics, each one's difference from torch fp32
    (None where either is missing), and its throughput (None when it could not run)."""

    backend: str
    precision: str
    metrics: dict[MetricKey, float]
    deltas: dict[MetricKey, float | None]
    texts_per_second: float | None
    tokens_per_second: float | None
    seconds: float | None
    error: str | None

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"

    def to_json(self) -> dict[str, object]:
        """The report's row: metrics keyed by their labels."""
        return {
            "backend": self.backend,
            "precision": self.precision,
            "metrics": {k.label: v for k, v in self.metrics.items()},
            "delta_vs_torch_fp32": {k.label: v for k, v in self.deltas.items()},
            "texts_per_second": self.texts_per_second,
            "tokens_per_second": self.tokens_per_second,
            "seconds": self.seconds,
            "error": self.error,
        }


def deltas(rows: Sequence[CompareRow]) -> list[dict[MetricKey, float | None]]:
    """Per row, each metric minus torch fp32's (None where either is missing)."""
    base = next(
        (r for r in rows if (r.combo.backend, r.combo.precision) == BASELINE and r.ok), None
    )
    return [
        {
            key: (value - base.metrics[key] if base and key in base.metrics else None)
            for key, value in r.metrics.items()
        }
        for r in rows
    ]


def as_records(rows: Sequence[CompareRow]) -> list[CompareRecord]:
    """One record per row, with its deltas; throughput only where it ran."""
    return [
        CompareRecord(
            backend=r.combo.backend,
            precision=r.combo.precision,
            metrics=r.metrics,
            deltas=d,
            texts_per_second=r.throughput.texts_per_second if r.ok else None,
            tokens_per_second=r.throughput.tokens_per_second if r.ok else None,
            seconds=r.throughput.seconds if r.ok else None,
            error=r.error,
        )
        for r, d in zip(rows, deltas(rows), strict=True)
    ]
