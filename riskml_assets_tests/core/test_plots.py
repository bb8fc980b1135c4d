"""Plots render small PNGs and inline as markdown data URIs."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from riskml_assets.core import plots


def test_plots_return_small_pngs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    raw = rng.random(500)
    figs = {
        "reliability": plots.reliability_diagram(y, {"raw": raw, "calibrated": np.sqrt(raw)}, n_bins=10),
        "importance": plots.feature_importance_plot({f"feature_{i}": float(v) for i, v in enumerate(rng.normal(size=30))}, top=20),
        "fan": plots.fan_chart(np.arange(12), np.arange(12) - 2.0, np.arange(12.0), np.arange(12) + 2.0,
                               actual=np.r_[np.arange(8.0), [np.nan] * 4], title="pipeline"),
        "bar": plots.bar_chart({"commercial": 3.0, "timeline": -1.0, "technical": 2.5}, title="risk"),
    }
    for name, png in figs.items():
        assert isinstance(png, bytes) and png.startswith(plots.PNG_SIGNATURE), name
        assert len(base64.b64encode(png)) < 60_000, name


def test_png_markdown():
    png = plots.bar_chart({"a": 1.0, "b": 2.0})
    md = plots.png_markdown(png, "my [chart]")
    assert md.startswith("![my (chart)](data:image/png;base64,")
    assert "data:image/png;base64," in md and md.endswith(")")
    encoded = md.split("base64,", 1)[1][:-1]
    assert base64.b64decode(encoded) == png
    with pytest.raises(ValueError):
        plots.png_markdown(b"not a png", "x")


def test_plots_leave_pyplot_alone():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.bar_chart({"a": 1.0})
    assert plt.get_fignums() == before
