"""Small PNG charts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distilmarco.errors import InputError, MissingExtraError


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "eval", "plots") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Chart:
    """What a chart shows: its file, the bars in order and the value axis's range."""

    path: Path
    bars: tuple[str, ...]
    ylim: tuple[float, float]


ZOOM_BELOW = (
    0.25  # bars closer than this fraction of the largest get an axis that does not start at 0
)


def value_axis(values: Sequence[float]) -> tuple[float, float]:
    """The value axis's range: from 0 when the bars differ a lot, else zoomed on the bars so that
    small differences (the point of comparing backends) are visible."""
    lo, hi = min(values), max(values)
    span = hi - lo
    if lo < 0 or span >= ZOOM_BELOW * abs(hi) or len(values) == 1:
        return min(0.0, lo), (hi * 1.12 if hi > 0 else 1.0)
    pad = max(span * 0.6, abs(hi) * 0.002, 1e-6)
    return max(0.0, lo - pad), hi + pad


def bar_chart(
    path: Path,
    values: Mapping[str, float],
    *,
    title: str,
    ylabel: str,
    secondary: Mapping[str, float] | None = None,
    secondary_label: str = "",
) -> Chart:
    """One bar per label (e.g. metric per backend), the value printed on each bar; an optional
    second series (e.g. throughput) is drawn as dots on a right-hand axis. Close values get a
    zoomed axis (``value_axis``), said in the title."""
    if not values:
        raise InputError("nothing to plot: no values")
    if path.suffix.lower() != ".png":
        raise InputError(f"plot file {path} must end in .png")
    plt = _pyplot()
    labels: Sequence[str] = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.6), dpi=100)
    bars = ax.bar(labels, [values[k] for k in labels], color="#4C72B0")
    ax.bar_label(bars, fmt="%.4f", fontsize=8)
    ylim = value_axis([values[k] for k in labels])
    zoomed = ylim[0] > 0
    ax.set_title(title + (f" (axis from {ylim[0]:.4g})" if zoomed else ""), fontsize=10)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    if secondary:
        ax2 = ax.twinx()
        ax2.plot(
            [k for k in labels if k in secondary],
            [secondary[k] for k in labels if k in secondary],
            "o",
            color="#DD8452",
        )
        ax2.set_ylabel(secondary_label, color="#DD8452")
        ax2.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Chart(path, tuple(labels), ylim)
