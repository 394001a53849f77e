"""What every figure shares: data shaping (thinning, seed bands), model selection, band charts.

Bands over seeds are precomputed (mean, min, max) and drawn with `mark_area(y, y2)`, so the same
inputs give byte-identical PNG/SVG; trajectories are thinned to a log+linear spaced subset of at
most `MAX_POINTS` log points per line (never truncated), and every chart stays under altair's
5,000-row limit. Log axes span the data (`log_domain`), and a figure that leaves data out says
so in its subtitle, which the PNG/SVG carry too.
"""

from __future__ import annotations

import warnings
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

# the study's results are read through this one alias (the package's other modules use it too)
from twoclocks.analyze import results as cl
from twoclocks.analyze.clocks import model_kind
from twoclocks.config import section_default

# log points per line after thinning: the schema default of report.max_points_per_line
MAX_POINTS = section_default("report", "max_points_per_line")
MAX_ROWS = 4800  # rows per chart (altair raises past 5,000)
WIDTH, HEIGHT = 400, 260
HEATMAP_COLUMNS = 20  # embedding/head columns shown in the Fig. 2 heatmaps (largest final norm)
FLOOR = 1e-30  # positive floor for log axes


class FigureSkipped(Exception):
    """The study has no inputs for this figure (e.g. no deep linear cells)."""


# --- data shaping -----------------------------------------------------------------------------
def thin_indices(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """At most `max_points` sorted indices of range(n): half log-spaced, half linear, ends kept."""
    if n <= max_points:
        return np.arange(n)
    half = max_points // 2
    log_idx = np.round(np.geomspace(1, n, half)).astype(int) - 1
    lin_idx = np.round(np.linspace(0, n - 1, max_points - half)).astype(int)
    return np.unique(np.concatenate([[0, n - 1], log_idx, lin_idx]))[:max_points]


def _seed_band(da: xr.DataArray, n_points: int) -> pd.DataFrame:
    """Thin `da` (seed, step) over steps and reduce over seeds to step, mean, lo, hi."""
    da = da.isel(step=thin_indices(da.sizes["step"], n_points))
    vals = da.transpose("seed", "step").to_numpy().astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        df = pd.DataFrame(
            {
                "step": da["step"].to_numpy().astype(float),
                "mean": np.nanmean(vals, axis=0),
                "lo": np.nanmin(vals, axis=0),
                "hi": np.nanmax(vals, axis=0),
            }
        )
    return df[np.isfinite(df["mean"])]


def _bands(
    cells: list[tuple[str, dict, xr.Dataset]],
    series: dict[str, Any],
    n_lines: int | None = None,
    max_points: int = MAX_POINTS,
) -> pd.DataFrame:
    """Long table cell_id, label, series, step, mean, lo, hi for callables/names per series;
    the label is the readable cell id, which names exactly the grid axes that vary."""
    n_lines = n_lines or max(1, len(cells) * len(series))
    n_points = max(10, min(max_points, MAX_ROWS // n_lines))
    frames = []
    for cid, _params, ds in cells:
        for name, get in series.items():
            da = get(ds) if callable(get) else ds[get] if get in ds else None
            if da is None:
                continue
            df = _seed_band(da, n_points)
            df.insert(0, "series", name)
            df.insert(0, "label", cid)
            df.insert(0, "cell_id", cid)
            frames.append(df)
    if not frames:
        raise FigureSkipped("no trajectories with " + ", ".join(series))
    return pd.concat(frames, ignore_index=True)


def _relu(study: Any) -> list[tuple[str, dict, xr.Dataset]]:
    return [c for c in cl.cell_datasets(study) if model_kind(c[2]) == "relu_embed"]


def _deep(study: Any) -> list[tuple[str, dict, xr.Dataset]]:
    return [c for c in cl.cell_datasets(study) if model_kind(c[2]) == "deep_linear"]


def _band_chart(
    df: pd.DataFrame,
    title: str,
    y_title: str,
    log_y: bool = True,
    color: str = "label",
    dash: str | None = "series",
    dash_order: list[str] | None = None,
) -> alt.LayerChart:
    """Seed band (area between min and max) under the seed-mean line, per colour (and dash;
    `dash_order` fixes which series is solid: the first)."""
    df = df.copy()
    note = ""
    if log_y:
        df, note = log_domain(df)
    scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    col = alt.Color(f"{color}:N", sort=list(dict.fromkeys(df[color])), title=None)
    base = alt.Chart(df).encode(x=alt.X("step:Q", title="step"), color=col)
    detail = [alt.Detail("cell_id:N")] + ([alt.Detail(f"{dash}:N")] if dash else [])
    area = base.mark_area(opacity=0.18).encode(
        y=alt.Y("lo:Q", scale=scale, title=y_title), y2="hi:Q", detail=detail
    )
    line_enc = {"y": alt.Y("mean:Q", scale=scale, title=y_title), "detail": detail}
    if dash:
        order = {"sort": dash_order} if dash_order else {}
        line_enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=None, **order)
    line = base.mark_line(strokeWidth=1.5).encode(**line_enc)
    return alt.layer(area, line).properties(title=_title(title, note), width=WIDTH, height=HEIGHT)


def _title(text: str, *notes: str) -> alt.Title | str:
    """A chart title with the notes (data left out, floors) as its subtitle, drawn in the PNG."""
    notes = [n for n in notes if n]
    return alt.Title(text, subtitle=notes, subtitleColor="#a04000") if notes else text


def log_domain(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Make seed bands drawable on a log axis without hiding the data.

    Rows whose mean is not positive are left out (counted in the returned note); band lower
    ends at or below zero are raised to the smallest positive value in the data, so the axis
    spans the data, not an arbitrary floor (a min of exactly 0, e.g. no gate flipped, would
    otherwise stretch it to 1e-30). Returns the rows to draw and a note ("" when nothing moved).
    """
    vals = df[["mean", "lo", "hi"]].to_numpy(float)
    pos = vals[np.isfinite(vals) & (vals > 0)]
    keep = df["mean"].to_numpy(float) > 0
    floor = float(pos.min()) if pos.size else FLOOR
    n_lo = int(((df["lo"].to_numpy(float) <= 0) & keep).sum())
    out = df[keep].copy()
    out["lo"] = out["lo"].clip(lower=floor)
    out["hi"] = out["hi"].clip(lower=floor)
    notes = []
    if (~keep).sum():
        notes.append(f"{int((~keep).sum())} points with mean <= 0 not drawn (log axis)")
    if n_lo:
        notes.append(f"{n_lo} band lower ends <= 0 drawn at {floor:.2g}")
    return out, "; ".join(notes)


def _one(cells, cell: str | None, what: str):
    if cell is not None:
        cells = [c for c in cells if c[0] == cell]
    if not cells:
        raise FigureSkipped(f"no cell for {what}")
    return cells[-1]
