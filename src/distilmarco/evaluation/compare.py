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


@dataclass(frozen=True)
class CompareRow:
    combo: Combo
    metrics: dict[str, float]  # empty when the combination could not run
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
    run: Callable[[object], tuple[dict[str, float], Throughput]],
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


def deltas(rows: Sequence[CompareRow]) -> list[dict[str, float | None]]:
    """Per row, each metric minus torch fp32's (None where either is missing)."""
    base = next(
        (r for r in rows if (r.combo.backend, r.combo.precision) == BASELINE and r.ok), None
    )
    out = []
    for r in rows:
        out.append(
            {
                name: (value - base.metrics[name] if base and name in base.metrics else None)
                for name, value in r.metrics.items()
            }
        )
    return out


def as_records(rows: Sequence[CompareRow]) -> list[dict[str, object]]:
    """JSON-ready rows: backend, precision, metrics, deltas, throughput, error."""
    return [
        {
            "backend": r.combo.backend,
            "precision": r.combo.precision,
            "metrics": r.metrics,
            "delta_vs_torch_fp32": d,
            "texts_per_second": r.throughput.texts_per_second if r.ok else None,
            "tokens_per_second": r.throughput.tokens_per_second if r.ok else None,
            "seconds": r.throughput.seconds if r.ok else None,
            "error": r.error,
        }
        for r, d in zip(rows, deltas(rows), strict=True)
    ]
