"""Small PNG charts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def bar_chart(
    path: Path,
    values: Mapping[str, float],
    *,
    title: str,
    ylabel: str,
    secondary: Mapping[str, float] | None = None,
    secondary_label: str = "",
) -> Path:
    """One bar per label (e.g. metric per backend), the value printed on each bar; an optional
    second series (e.g. throughput) is drawn as dots on a right-hand axis."""
    if not values:
        raise InputError("nothing to plot: no values")
    if path.suffix.lower() != ".png":
        raise InputError(f"plot file {path} must end in .png")
    plt = _pyplot()
    labels: Sequence[str] = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.6), dpi=100)
    bars = ax.bar(labels, [values[k] for k in labels], color="#4C72B0")
    ax.bar_label(bars, fmt="%.4f", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    low = min(values.values())
    ax.set_ylim(bottom=min(0.0, low), top=max(values.values()) * 1.12 or 1.0)
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
    return path
