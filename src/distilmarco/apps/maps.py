"""Maps of a collection: a 2-D projection of the vectors, drawn as a PNG (matplotlib) or as one
self-contained interactive HTML page (inline SVG + a few lines of JavaScript, no network).

Projection: UMAP when ``umap-learn`` is installed (the ``map`` extra), otherwise t-SNE for up to
5,000 points and PCA above (both scikit-learn).
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distilmarco.apps._extras import need
from distilmarco.apps.similarity import as_matrix
from distilmarco.errors import InputError, MissingExtraError
from distilmarco.vectors import normalize_rows

log = logging.getLogger(__name__)

PROJECTIONS = ("auto", "umap", "tsne", "pca")
TSNE_AUTO_LIMIT = 5_000
# Categorical palette (Tableau 10 + 10 lighter tones); more labels get generated colours.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
)  # fmt: skip


def project_2d(vectors: np.ndarray, method: str = "auto", *, seed: int = 0) -> np.ndarray:
    """(N, 2) float32 coordinates for N >= 3 vectors, compared by cosine."""
    if method not in PROJECTIONS:
        raise InputError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    x = normalize_rows(as_matrix(vectors))
    n = x.shape[0]
    if n < 3:
        raise InputError(f"a map needs at least 3 items, got {n}")
    if method == "auto":
        method = "umap" if _has_umap() else ("tsne" if n <= TSNE_AUTO_LIMIT else "pca")
        log.info("projection: %s", method)
    if method == "umap":
        need("umap", "map", "UMAP projection")
        import umap

        reducer = umap.UMAP(
            n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, n - 1)
        )
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
    if method == "tsne":
        need("sklearn", "apps", "t-SNE projection")
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (n - 1) / 3))
        tsne = TSNE(
            n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
        )
        return np.asarray(tsne.fit_transform(x), dtype=np.float32)
    need("sklearn", "apps", "PCA projection")
    from sklearn.decomposition import PCA

    return np.asarray(PCA(n_components=2, random_state=seed).fit_transform(x), dtype=np.float32)


def _has_umap() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def _check_points(
    coords: np.ndarray, texts: Sequence[str], labels: Sequence[str] | None
) -> np.ndarray:
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"coordinates must have shape (N, 2), got {xy.shape}")
    if xy.shape[0] == 0:
        raise InputError("nothing to draw: no points")
    if len(texts) != xy.shape[0]:
        raise InputError(f"{len(texts)} texts for {xy.shape[0]} points")
    if labels is not None and len(labels) != xy.shape[0]:
        raise InputError(f"{len(labels)} labels for {xy.shape[0]} points")
    if not np.isfinite(xy).all():
        raise InputError("coordinates contain NaN or infinite values")
    return xy


def palette(n: int) -> list[str]:
    """``n`` distinct colours: the fixed palette up to its size; beyond it, hues spread by the
    golden angle (so neighbours in the legend differ) at three lightness levels."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    import colorsys

    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n:
        hue = (i * 0.618033988749895) % 1.0
        light = (0.45, 0.62, 0.33)[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.65 + 0.2 * ((i // 3) % 2))
        code = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
        if code not in seen:
            seen.add(code)
            out.append(code)
        i += 1
    return out


def _colours(labels: Sequence[str] | None, n: int) -> tuple[list[str], list[str]]:
    """(distinct label names in first-seen order, colour of each point)."""
    if labels is None:
        return [], [PALETTE[0]] * n
    names = list(dict.fromkeys(str(v) for v in labels))
    colour = dict(zip(names, palette(len(names)), strict=True))
    return names, [colour[str(v)] for v in labels]


def write_png(
    path: Path,
    coords: np.ndarray,
    labels: Sequence[str] | None = None,
    *,
    width: int = 1200,
    height: int = 900,
    dpi: int = 100,
    title: str = "",
) -> None:
    """Draw the points, coloured by label, as a PNG of exactly ``width`` x ``height`` pixels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "apps", "PNG maps") from exc
    if width < 50 or height < 50:
        raise InputError(f"image size {width}x{height} is too small (at least 50x50)")
    xy = _check_points(coords, [""] * len(coords), labels)
    names, colours = _colours(labels, xy.shape[0])
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        ax = fig.add_axes((0.02, 0.02, 0.96, 0.92 if title else 0.96))
        ax.scatter(
            xy[:, 0], xy[:, 1], c=colours, s=max(2.0, 400.0 / np.sqrt(len(xy))), linewidths=0
        )
        ax.set_xticks([])
        ax.set_yticks([])
        if title:
            fig.suptitle(title)
        if 0 < len(names) <= 20:
            handles = [
                plt.Line2D([], [], marker="o", linestyle="", color=colour, label=nm)
                for nm, colour in zip(names, palette(len(names)), strict=True)
            ]
            ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.8)
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        plt.close(fig)


def render_html(
    coords: np.ndarray,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    title: str = "distilmarco map",
) -> str:
    """One self-contained HTML page: every point is an SVG circle; hovering shows its text and
    label; the legend toggles labels. The page records ``data-points`` on ``<body>`` once drawn."""
    xy = _check_points(coords, texts, labels)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    unit = (xy - lo) / span  # 0..1 on both axes
    names, colours = _colours(labels, xy.shape[0])
    data = {
        "x": [round(float(v), 5) for v in unit[:, 0]],
        "y": [round(float(v), 5) for v in unit[:, 1]],
        "text": list(texts),
        "label": [str(v) for v in labels] if labels is not None else None,
        "colour": colours,
        "legend": [list(pair) for pair in zip(names, palette(len(names)), strict=True)],
    }
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    return _PAGE.replace("@TITLE@", html.escape(title)).replace("@DATA@", payload)


def write_html(
    path: Path,
    coords: np.ndarray,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    title: str = "distilmarco map",
) -> None:
    path.write_text(render_html(coords, texts, labels, title=title), encoding="utf-8")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
body { margin: 0; font: 14px system-ui, sans-serif; color: #222; display: flex; height: 100vh; }
#plot { flex: 1; }
svg { width: 100%; height: 100%; display: block; }
circle { stroke: #fff; stroke-width: 0.5; vector-effect: non-scaling-stroke; }
circle:hover { stroke: #000; stroke-width: 2; }
aside { width: 300px; overflow: auto; padding: 8px; border-left: 1px solid #ddd; }
aside div { cursor: pointer; margin: 2px 0; padding-left: 16px; text-indent: -16px;
            overflow-wrap: anywhere; }
aside div.off { opacity: 0.3; }
aside span { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 6px; }
#tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #999;
       padding: 4px 6px; max-width: 420px; display: none; box-shadow: 0 1px 4px #0003; }
</style>
</head>
<body>
<div id="plot"><svg id="map" viewBox="-0.03 -0.03 1.06 1.06" preserveAspectRatio="xMidYMid meet"></svg></div>
<aside><h3>@TITLE@</h3><div id="legend"></div></aside>
<div id="tip"></div>
<script type="application/json" id="data">@DATA@</script>
<script>
"use strict";
window.addEventListener("error", function (e) { document.body.dataset.error = String(e.message); });
(function () {
  var d = JSON.parse(document.getElementById("data").textContent);
  var svg = document.getElementById("map"), tip = document.getElementById("tip");
  var ns = "http://www.w3.org/2000/svg", n = d.x.length, r = Math.max(0.002, 0.02 / Math.sqrt(n));
  var hidden = {};
  for (var i = 0; i < n; i++) {
    var c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", d.x[i]);
    c.setAttribute("cy", 1 - d.y[i]);
    c.setAttribute("r", r);
    c.setAttribute("fill", d.colour[i]);
    c.setAttribute("data-i", i);
    svg.appendChild(c);
  }
  svg.addEventListener("mousemove", function (e) {
    var i = e.target.getAttribute && e.target.getAttribute("data-i");
    if (i === null || i === undefined) { tip.style.display = "none"; return; }
    tip.textContent = (d.label ? "[" + d.label[i] + "] " : "") + d.text[i];
    tip.style.left = (e.clientX + 12) + "px";
    tip.style.top = (e.clientY + 12) + "px";
    tip.style.display = "block";
  });
  svg.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  var legend = document.getElementById("legend");
  d.legend.forEach(function (entry) {
    var row = document.createElement("div"), dot = document.createElement("span");
    dot.style.background = entry[1];
    row.appendChild(dot);
    row.appendChild(document.createTextNode(entry[0]));
    row.title = entry[0];
    row.addEventListener("click", function () {
      hidden[entry[0]] = !hidden[entry[0]];
      row.className = hidden[entry[0]] ? "off" : "";
      var dots = svg.querySelectorAll("circle");
      for (var j = 0; j < dots.length; j++) {
        dots[j].style.display = hidden[d.label[j]] ? "none" : "";
      }
    });
    legend.appendChild(row);
  });
  document.body.dataset.points = String(svg.querySelectorAll("circle").length);
})();
</script>
</body>
</html>
"""
