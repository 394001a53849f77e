"""Deep linear figures: singular values of the end-to-end map, the Schatten energy identity,
and the lazy next to the rich regime."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import xarray as xr

from twoclocks.config import cell_default
from twoclocks.report.figures.common import (
    HEIGHT,
    MAX_POINTS,
    MAX_ROWS,
    WIDTH,
    FigureSkipped,
    _band_chart,
    _bands,
    _deep,
    _one,
    _seed_band,
    cl,
)
from twoclocks.report.figures.registry import figure


@figure(
    "deep_singular_values",
    "Deep linear: the largest singular values of the end-to-end map A vs step (Prop. 4.3); line "
    "= seed mean, band = seed min-max.",
)
def fig_singular_values(
    study: Any, cell: str | None = None, top: int = 8, max_points: int = MAX_POINTS
) -> alt.Chart:
    """Deep linear: the `top` singular values of the end-to-end map A over time (Prop. 4.3)."""
    cid, _p, ds = _one([c for c in _deep(study) if "singular_values" in c[2]], cell, "svs")
    k = min(top, ds.sizes["sv"])
    frames = []
    for i in range(k):
        df = _seed_band(ds["singular_values"].isel(sv=i), max(10, min(max_points, MAX_ROWS // k)))
        df.insert(0, "label", f"s{i + 1}")
        df.insert(0, "cell_id", f"s{i + 1}")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    return _band_chart(df, f"Singular values of A, {cid}", "singular value", dash=None)


@figure(
    "deep_schatten",
    "Deep linear: sum of squared layer norms next to L times the Schatten-2/L energy of A "
    "(eq. 2.7) vs step per cell.",
)
def fig_schatten(study: Any, max_points: int = MAX_POINTS) -> alt.Chart:
    """Deep linear: sum_l ||W_l||_F^2 vs L * ||A||_{S_2/L}^{2/L} (eq. 2.7) per cell."""
    cells = [c for c in _deep(study) if "schatten_energy" in c[2] and "sqnorm_total" in c[2]]
    if not cells:
        raise FigureSkipped("no deep linear cells with Schatten energy")
    series = {
        "sum ||W_l||^2": "sqnorm_total",
        "L * Schatten energy": lambda ds: ds["schatten_energy"] * _depth(ds),
    }
    df = _bands(cells, series, max_points=max_points)
    return _band_chart(df, "Schatten energy vs sum of squared norms", "value", log_y=True)


@figure(
    "deep_lazy",
    "Deep linear at one depth, lazy (orthogonal init) next to rich (small init): train CE, "
    "spurious energy ||A P_perp||_F^2, stable rank of A and test accuracy vs step per optimiser "
    "and weight decay.",
)
def fig_deep_lazy(
    study: Any, depth: int | None = None, max_points: int = MAX_POINTS
) -> alt.VConcatChart:
    """Deep linear, lazy next to rich (issue 13, docs/science.md 6): train CE, spurious energy
    ||A P_perp||_F^2 (log), stable rank of A and test accuracy vs step per optimizer and weight
    decay, at one depth (default: the middle of those logged). Lazy = orthogonal init."""
    cells = [c for c in _deep(study) if "spurious_energy" in c[2]]
    if not cells:
        raise FigureSkipped("no deep linear cells with the spurious energy (teacher, n < d)")

    def get(params: dict, key: str):
        return params.get(key, cell_default(key))  # stores from other code may lack a key

    depths = sorted({int(get(c[1], "depth")) for c in cells})
    depth = depth if depth is not None else depths[len(depths) // 2]
    cells = [c for c in cells if int(get(c[1], "depth")) == depth]
    if not cells:
        raise FigureSkipped(f"no deep linear cells with the spurious energy at depth {depth}")

    def label(params: dict) -> str:
        return f"{get(params, 'optimizer')} wd={get(params, 'weight_decay')}"

    regimes = {
        "lazy (orthogonal init)": [c for c in cells if c[1].get("init_scheme") == "orthogonal"],
        "rich (small init)": [c for c in cells if c[1].get("init_scheme") != "orthogonal"],
    }
    quantities = [
        ("train CE (nats)", "train_loss", True),
        ("spurious energy ||A P_perp||_F^2", "spurious_energy", True),
        ("stable rank of A", lambda ds: ds["srank"].sel(matrix="A"), False),
        ("test accuracy", "test_acc", False),
    ]
    out = []
    for title, var, log_y in quantities:
        charts = []
        for regime, group in regimes.items():
            try:
                df = _bands(group, {title: var}, max(1, len(group)), max_points)
            except (FigureSkipped, KeyError):
                continue  # no cell of this regime logs this quantity
            df["label"] = df["cell_id"].map({c[0]: label(c[1]) for c in group})
            head = f"{regime}, L = {depth}" if not out else ""  # regime named once, atop its column
            chart = _band_chart(df, head, title, log_y, dash=None)
            charts.append(chart.properties(width=WIDTH * 3 // 4, height=HEIGHT // 3))
        if charts:
            out.append(alt.hconcat(*charts))
    return alt.vconcat(*out).properties(
        title=f"Deep linear, lazy vs rich regime (L = {depth}): clocks on the spurious energy"
    )


def _depth(ds: xr.Dataset) -> int:
    params = cl._json(ds.attrs.get("cell"), {}) or {}
    return int(params.get("depth", sum(str(b).startswith("W") for b in ds["block"].values)))
