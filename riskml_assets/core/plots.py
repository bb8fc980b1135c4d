"""Small report figures rendered to PNG bytes, plus a helper to inline them in markdown.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure`` on an Agg canvas),
never through ``pyplot``: nothing here changes the global backend or pyplot's figure registry, so
the module is safe in headless workers and does not leak figures. Figures are ~6x4 in at 80 dpi so
the base64 of one plot stays well under ~60 KB.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from .lazy import lazy_attr, lazy_module

np = lazy_module("numpy")

# imported on first use (code location load time)
FigureCanvasAgg = lazy_attr("matplotlib.backends.backend_agg", "FigureCanvasAgg")
Figure = lazy_attr("matplotlib.figure", "Figure")

from .metrics import _arr, _same_length, ece, reliability_table

__all__ = [
    "PNG_SIGNATURE", "png_markdown", "reliability_diagram", "feature_importance_plot",
    "fan_chart", "bar_chart",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 80
FIGSIZE = (6.0, 4.0)


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _render(fig: Figure) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    finally:
        fig.clf()  # release artists; the figure is not registered anywhere else
    return buf.getvalue()


def png_markdown(png_bytes: bytes, alt: str = "") -> str:
    """Markdown image with the PNG inlined: ``![alt](data:image/png;base64,...)``."""
    if not isinstance(png_bytes, (bytes, bytearray)) or not bytes(png_bytes).startswith(PNG_SIGNATURE):
        raise ValueError("png_markdown expects PNG bytes (as returned by the functions of riskml_assets.core.plots)")
    alt = " ".join(str(alt).replace("[", "(").replace("]", ")").split())
    return f"![{alt}](data:image/png;base64,{base64.b64encode(bytes(png_bytes)).decode('ascii')})"


def reliability_diagram(y: Any, curves: Mapping[str, Any], n_bins: int = 10,
                        title: str = "Reliability diagram") -> bytes:
    """Calibration curves (uniform bins) of several probability vectors against the same labels.

    Top: the diagonal and one line with markers per curve (mean predicted vs observed frequency,
    ECE in the legend). Bottom: histogram of each curve's predictions.
    """
    if not curves:
        raise ValueError("reliability_diagram needs at least one curve")
    fig = _new_figure((6.0, 4.5))
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(gs[0])
    axh = fig.add_subplot(gs[1], sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for name, p in curves.items():
        t = reliability_table(y, p, n_bins=n_bins)
        t = t[t["count"] > 0]
        e = ece(y, p, n_bins=n_bins)
        (line,) = ax.plot(t["mean_pred"], t["frac_pos"], marker="o", markersize=4, linewidth=1.5,
                          label=f"{name} (ECE {e:.3f})")
        axh.hist(np.asarray(p, dtype=float), bins=edges, histtype="step", color=line.get_color(), linewidth=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.tick_params(labelbottom=False)
    axh.set_xlabel("predicted probability")
    axh.set_ylabel("count")
    return _render(fig)


def feature_importance_plot(importances: Mapping[str, float], top: int = 20,
                            title: str = "Feature importance") -> bytes:
    """Horizontal bars of the ``top`` features by absolute importance, largest at the top."""
    if not importances:
        raise ValueError("feature_importance_plot needs at least one feature")
    items = sorted(((str(k), float(v)) for k, v in importances.items()), key=lambda kv: -abs(kv[1]))[:top]
    names = [k for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    fig = _new_figure((6.0, max(2.5, 0.22 * len(items) + 1.0)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(values)), values, color="#4C72B0")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("importance")
    ax.set_title(title)
    return _render(fig)


def fan_chart(x: Any, p10: Any, p50: Any, p90: Any, actual: Any = None, title: str = "Forecast") -> bytes:
    """Shaded p10-p90 band, p50 line and optionally the actual values, over ``x``.

    ``x`` may be numbers, dates or strings (categorical axis).
    """
    xs = np.asarray(x)
    lo, mid, hi = _arr(p10, "p10"), _arr(p50, "p50"), _arr(p90, "p90")
    _same_length(x=xs, p10=lo, p50=mid, p90=hi)
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.fill_between(xs, lo, hi, alpha=0.25, color="#4C72B0", label="p10-p90")
    ax.plot(xs, mid, color="#4C72B0", linewidth=1.8, label="p50")
    if actual is not None:
        act = np.asarray(actual, dtype=float)  # may hold NaN for periods not yet observed
        if act.shape != mid.shape:
            raise ValueError(f"actual must have the same length as p50, got {act.shape} vs {mid.shape}")
        ax.plot(xs, act, color="black", marker="o", markersize=3, linewidth=1, label="actual")
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    if not np.issubdtype(xs.dtype, np.number):  # dates or labels: slant them so they do not overlap
        fig.autofmt_xdate()
    return _render(fig)


def bar_chart(values: Mapping[str, float], title: str = "", ylabel: str = "") -> bytes:
    """Vertical bars, one per key in the given order."""
    if not values:
        raise ValueError("bar_chart needs at least one value")
    names = [str(k) for k in values]
    vals = [float(v) for v in values.values()]
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(vals)), vals, color="#4C72B0")
    ax.set_xticks(range(len(names)))
    rotate = len(names) > 6 or max(len(n) for n in names) > 10
    ax.set_xticklabels(names, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _render(fig)
