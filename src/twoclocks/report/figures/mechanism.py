"""Mechanism diagnostics of the ReLU net: gradient norms against the Prop. 4.2 bound terms,
gate flips and pre-activation margins."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from twoclocks.report.figures.common import (
    MAX_POINTS,
    MAX_ROWS,
    FigureSkipped,
    _band_chart,
    _bands,
    _one,
    _relu,
    _seed_band,
)
from twoclocks.report.figures.registry import figure


@figure(
    "grad_bounds",
    "Per-block gradient norms of one ReLU cell next to the Prop. 4.2 bound terms vs step; line = "
    "seed mean, band = seed min-max.",
)
def fig_grad_bounds(study: Any, cell: str | None = None, max_points: int = MAX_POINTS) -> alt.Chart:
    """Per-block gradient norms vs the Prop. 4.2 bound terms over time (one ReLU cell).

    ||grad_U|| vs ||delta|| ||h|| (equality), ||grad_W|| vs ||U||_2 ||z|| ||delta||,
    ||grad_E|| vs ||W||_2 ||U||_2 ||delta||.
    """
    cid, params, ds = _one([c for c in _relu(study) if "grad_norm" in c[2]], cell, "gradients")
    need = {"delta_norm", "h_norm", "z_norm", "U_spec", "W_spec"}
    if not need <= set(ds.data_vars):
        raise FigureSkipped("bound terms not logged: " + ", ".join(sorted(need - set(ds))))
    w = next((str(b) for b in ds["block"].values if str(b).startswith("W")), "W1")
    d = ds["delta_norm"]
    pairs = {
        "U": (ds["grad_norm"].sel(block="U"), d * ds["h_norm"]),
        "W": (ds["grad_norm"].sel(block=w), ds["U_spec"] * ds["z_norm"] * d),
        "E": (ds["grad_norm"].sel(block="E"), ds["W_spec"] * ds["U_spec"] * d),
    }
    n_points = max(10, min(max_points, MAX_ROWS // 6))
    frames = []
    for block, (grad, bound) in pairs.items():
        for series, da in (("measured ||grad||", grad), ("Prop. 4.2 term", bound)):
            df = _seed_band(da, n_points)
            df.insert(0, "series", series)
            df.insert(0, "block", block)
            frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["cell_id"] = df["label"] = df["block"]
    title = f"Gradient norms vs Prop. 4.2 bound terms, {cid}"
    return _band_chart(df, title, "norm", log_y=True, color="block", dash="series")


@figure(
    "gates",
    "ReLU gate flips per log interval and the smallest |pre-activation| on the train set vs step "
    "per cell; line = seed mean, band = seed min-max.",
)
def fig_gates(study: Any, max_points: int = MAX_POINTS) -> alt.VConcatChart:
    """Gate flip fraction per log interval and min |pre-activation| over time, per ReLU cell."""
    cells = [c for c in _relu(study) if "gate_flip_fraction" in c[2]]
    if not cells:
        raise FigureSkipped("no gate statistics logged")
    n_lines = 2 * len(cells)
    flips = _bands(cells, {"flips": "gate_flip_fraction"}, n_lines, max_points)
    margin = _bands(cells, {"margin": "preact_min_abs"}, n_lines, max_points)
    flip_title, margin_title = "Gate flip fraction since previous log", "Min |pre-activation|"
    return alt.vconcat(
        _band_chart(flips, flip_title, "fraction of gates flipped", dash=None),
        _band_chart(margin, margin_title + " on the train set", "min |pre-activation|", dash=None),
    )
