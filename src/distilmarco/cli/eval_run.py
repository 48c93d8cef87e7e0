"""What every ``distilmarco eval`` command shares: its engine and report options (one
``EvalOptions``, added to each command by ``with_eval_options``), running the evaluation once or
per ``--compare`` combination, and the table, JSON report and plot of the result."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich import box
from rich.table import Table

from distilmarco.cli.app import BatchTokensOption, DeviceOption, JsonFlag, ModelOption, err, out
from distilmarco.errors import InputError

if TYPE_CHECKING:
    from distilmarco.encoder import Encoder
    from distilmarco.evaluation.compare import CompareRecord, MetricKey
    from distilmarco.evaluation.ir import Throughput

    # What one evaluation returns: its figures, the encoding it spent, details for the report.
    Outcome = tuple[dict[MetricKey, float], Throughput, dict[str, Any]]

F = TypeVar("F", bound=Callable[..., None])


@dataclass(frozen=True)
class EvalOptions:
    """The engine and report options of every ``eval`` command."""

    model: str | None = None
    backend: str = "auto"
    precision: str = "fp32"
    device: str = "cpu"
    batch_tokens: int | None = None
    compare: str | None = None
    report: Path | None = None
    as_json: bool = False
    plot: Path | None = None


# (parameter, annotation, Typer option): appended to each eval command's own parameters.
_SHARED: tuple[tuple[str, Any, Any], ...] = (
    ("model", str | None, ModelOption),
    ("backend", str, typer.Option("auto", help="auto (the fastest here), torch, onnx or openvino")),
    ("precision", str, typer.Option("fp32", help="fp32 (exact), int8, fp16 or bf16")),
    ("device", str, DeviceOption),
    ("batch_tokens", int | None, BatchTokensOption),
    (
        "compare",
        str | None,
        typer.Option(
            None,
            "--compare",
            help="Run for several backend:precision pairs ('all', 'default' or e.g. "
            "'torch:fp32,onnx:int8'); prints metric, delta vs torch fp32 and throughput",
        ),
    ),
    ("report", Path | None, typer.Option(None, "--report", help="Write the full report as JSON here")),
    ("as_json", bool, JsonFlag),
    ("plot", Path | None, typer.Option(None, "--plot", help="Write a bar chart (.png) of the main metric")),
)  # fmt: skip


def with_eval_options(command: F) -> F:
    """``command(..., options: EvalOptions)`` as a Typer command taking the shared options."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hint)
        for name, hint, option in _SHARED
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        options = EvalOptions(**{name: kwargs.pop(name) for name, _, _ in _SHARED})
        command(**kwargs, options=options)

    wrapper.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{k: v for k, v in command.__annotations__.items() if k != "options"},
        **{name: hint for name, hint, _ in _SHARED},
    }
    return wrapper  # type: ignore[return-value]


def run_eval(task: str, options: EvalOptions, evaluate: Callable[[Encoder], Outcome]) -> None:
    """Evaluate once (or per combination with ``--compare``), print, and write JSON/PNG."""
    from distilmarco.encoder import Encoder
    from distilmarco.evaluation import compare as cmp
    from distilmarco.model.hub import DEFAULT_MODEL

    o = options
    name = o.model or DEFAULT_MODEL
    details: dict[str, dict[str, Any]] = {}

    def make(b: str, p: str) -> Encoder:
        return Encoder(name, backend=b, precision=p, device=o.device)

    def run(encoder: object) -> tuple[dict[MetricKey, float], Throughput]:
        assert isinstance(encoder, Encoder)
        metrics, spent, extra = evaluate(encoder)
        details[f"{encoder.backend.name}/{encoder.backend.precision}"] = extra
        return metrics, spent

    if o.compare is None:
        encoder = make(o.backend, o.precision)
        metrics, spent = run(encoder)
        ran = cmp.Combo(encoder.backend.name, encoder.backend.precision)  # what auto chose
        rows = [cmp.CompareRow(ran, metrics, spent)]
    else:
        rows = cmp.compare(cmp.parse_combos(o.compare), make, run)
    records = cmp.as_records(rows)
    report = {
        "task": task,
        "model": name,
        "device": o.device,
        "rows": [r.to_json() for r in records],
        "details": details,
    }
    if o.as_json:
        out.print_json(json.dumps(report, default=str))
    else:
        print_table(task, name, records, with_delta=o.compare is not None)
    if o.report is not None:
        o.report.parent.mkdir(parents=True, exist_ok=True)
        o.report.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        err.print(f"wrote {o.report}")
    if o.plot is not None:
        _plot(o.plot, task, records)
    if not any(r.ok for r in rows):
        raise InputError(f"no backend/precision could run: {rows[0].error}")


def print_table(task: str, model: str, records: list[CompareRecord], *, with_delta: bool) -> None:
    """One row per combination (and per mode, when the task reports several)."""
    modes = list(dict.fromkeys(k.mode for r in records for k in r.metrics))
    names = list(dict.fromkeys(k.metric for r in records for k in r.metrics))
    table = Table(title=f"{task} · {model}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("backend")
    if modes != [""]:
        table.add_column("mode")
    for n in names:
        table.add_column(n, justify="right")
        if with_delta:
            table.add_column("Δ", justify="right")
    table.add_column("texts/s", justify="right")
    table.add_column("tokens/s", justify="right")
    from distilmarco.evaluation.compare import MetricKey

    for r in records:
        for mode in modes:
            lead = [r.label] if modes == [""] else [r.label, mode or "-"]
            if r.error:
                blanks = ["-"] * (len(names) * (2 if with_delta else 1) + 2)
                table.add_row(*lead, *blanks)
                break
            cells = []
            for n in names:
                value = r.metrics.get(MetricKey(mode, n))
                cells.append("-" if value is None else f"{value:.4f}")
                if with_delta:
                    d = r.deltas.get(MetricKey(mode, n))
                    cells.append("-" if d is None else f"{d:+.4f}")
            speed = [f"{r.texts_per_second or 0:,.0f}", f"{r.tokens_per_second or 0:,.0f}"]
            table.add_row(*lead, *cells, *speed)
    out.print(table)
    for r in records:
        if r.error:
            err.print(f"{r.label}: {r.error}", highlight=False, markup=False)


def _plot(path: Path, task: str, records: list[CompareRecord]) -> None:
    from distilmarco.evaluation.plots import bar_chart

    values, speed, metric = plot_values(records)
    if not values:
        return
    bar_chart(
        path,
        values,
        title=f"{task}: {metric}",
        ylabel=metric,
        secondary=speed if len(speed) > 1 else None,
        secondary_label="texts/s",
    )
    err.print(f"wrote {path}")


def plot_values(records: list[CompareRecord]) -> tuple[dict[str, float], dict[str, float], str]:
    """The main metric (the first one reported) per backend and per mode, as bars, the throughput
    per bar, and the metric's name; one bar per mode when several modes ran."""
    ok = [r for r in records if not r.error]
    if not ok:
        return {}, {}, ""
    metric = next(iter(ok[0].metrics)).metric
    values: dict[str, float] = {}
    speed: dict[str, float] = {}
    for r in ok:
        for key, value in r.metrics.items():
            if key.metric == metric:
                label = f"{r.label} {key.mode}" if key.mode else r.label
                values[label] = value
                speed[label] = r.texts_per_second or 0.0
    return values, speed, metric
