"""PNG plots of report blocks (bar charts, heat maps, curves) with matplotlib's Agg backend.

Each function takes a block as ``finetune_kit.report_content`` builds it and returns PNG bytes; nothing
here reads a file or the network. Figures are small and rendered at a modest resolution, so a
whole report's plots take a fraction of a second after matplotlib's import.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

DPI = 100
MAX_INCHES = 12.0  # many labels (POS tags) make wide charts; beyond this they are squeezed


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def bar_chart_png(block: dict[str, Any]) -> bytes:
    """Grouped bars: one group per category, one bar per series (e.g. precision, recall, F1)."""
    plt = _pyplot()
    categories, series = block["categories"], block["series"]
    width = 0.8 / max(len(series), 1)
    width_inches = min(MAX_INCHES, max(4.0, 0.3 * len(categories) * max(len(series), 1) + 2))
    figure, axes = plt.subplots(figsize=(width_inches, 3.2))
    positions = np.arange(len(categories))
    for k, (name, values) in enumerate(series.items()):
        axes.bar(positions + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    axes.set_xticks(positions, [str(c) for c in categories], rotation=30 if len(categories) > 6 else 0,
                    ha="right" if len(categories) > 6 else "center", fontsize=8)
    axes.set_ylabel(block.get("ylabel", ""))
    if block.get("ylim"):
        axes.set_ylim(*block["ylim"])
    _title(axes, block["title"], figure)
    if len(series) > 1:
        axes.legend(fontsize=8)
    return _png(figure)


def _title(axes: Any, title: str, figure: Any) -> None:
    """The plot's title, wrapped to the figure's width so that a long one is not cut off."""
    import textwrap

    characters = max(20, int(figure.get_figwidth() * 11))
    axes.set_title("\n".join(textwrap.wrap(title, characters)), fontsize=10)


def heatmap_png(block: dict[str, Any]) -> bytes:
    """A matrix with its values written in the cells (rows: gold, columns: predicted)."""
    plt = _pyplot()
    labels, matrix = block["labels"], np.asarray(block["matrix"], dtype=np.float64)
    size = min(MAX_INCHES, max(3.2, 0.5 * len(labels) + 2))
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), 1e-9) if matrix.size else 1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center",
                    fontsize=8)
    axes.set_yticks(ticks, labels, fontsize=8)
    axes.set_xlabel(block.get("xlabel", "predicted"))
    axes.set_ylabel(block.get("ylabel", "gold"))
    if len(labels) <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (i, j), value in np.ndenumerate(matrix):
            text = f"{value:.2f}" if block.get("normalised") else f"{int(value)}"
            axes.text(j, i, text, ha="center", va="center", fontsize=7,
                      color="white" if value > threshold else "black")
    _title(axes, block["title"], figure)
    return _png(figure)


def curve_png(block: dict[str, Any]) -> bytes:
    """Lines (x, y) per series, with vertical markers (e.g. the tuned threshold)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.0, 3.2))
    for name, points in block["series"].items():
        if block.get("steps"):  # constant between points: show the points, not lines between them
            axes.plot(points["x"], points["y"], "o", markersize=3 if len(points["x"]) <= 100 else 1.5, label=name)
        else:
            axes.plot(points["x"], points["y"], marker="o" if len(points["x"]) <= 30 else None, markersize=3,
                      label=name)
    for marker in block.get("markers", []):
        axes.axvline(marker["x"], color="red", linestyle="--", linewidth=1)
        axes.annotate(marker["label"], (marker["x"], axes.get_ylim()[1]), fontsize=7, color="red",
                      ha="left", va="top", rotation=90)
    axes.set_xlabel(block.get("xlabel", ""))
    axes.set_ylabel(block.get("ylabel", ""))
    if len(block["series"]) > 1:
        axes.legend(fontsize=8)
    _title(axes, block["title"], figure)
    return _png(figure)


def scatter_png(block: dict[str, Any]) -> bytes:
    """Points (small and translucent where there are many), equal axes, and the line y = x."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.2, 4.2))
    many = len(block["x"]) > 300
    axes.scatter(block["x"], block["y"], s=4 if many else 12, alpha=0.35 if many else 0.8, linewidths=0)
    if block["x"]:
        low = min(min(block["x"]), min(block["y"]))
        high = max(max(block["x"]), max(block["y"]))
        margin = (high - low) * 0.03 or 0.5
        limits = (low - margin, high + margin)
        if block.get("diagonal"):
            axes.plot(limits, limits, color="gray", linestyle="--", linewidth=1)
        axes.set_xlim(limits)
        axes.set_ylim(limits)
        axes.set_aspect("equal")
    axes.set_xlabel(block.get("xlabel", ""))
    axes.set_ylabel(block.get("ylabel", ""))
    _title(axes, block["title"], figure)
    return _png(figure)


RENDERERS = {"bars": bar_chart_png, "heatmap": heatmap_png, "curve": curve_png, "scatter": scatter_png}


def render_png(block: dict[str, Any]) -> bytes:
    return RENDERERS[block["kind"]](block)
