"""Altair figures of a study: the paper's Figs. 1-3, clock laws and mechanism diagnostics.

Each `fig_*` returns an `alt.Chart` (or layered/concatenated chart) or raises `FigureSkipped`
when the study lacks its inputs. Bands over seeds are precomputed (mean, min, max) and drawn with
`mark_area(y, y2)`, so the same inputs give byte-identical PNG/SVG; trajectories are thinned to a
log+linear spaced subset of at most `MAX_POINTS` log points per line (never truncated), and every
chart stays under altair's 5,000-row limit. Log axes span the data (`log_domain`), and a figure
that leaves data out (non-positive values on a log axis, cells without an ok law fit, weight
decays without a ratio) says so in its subtitle, which the PNG/SVG carry too.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import vl_convert as vlc
import xarray as xr

from twoclocks.analyze import claims as cl
from twoclocks.analyze.clocks import model_kind
from twoclocks.config import cell_default, section_default

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
) -> alt.LayerChart:
    """Seed band (area between min and max) under the seed-mean line, per colour (and dash)."""
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
        line_enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=None)
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


# --- the paper's figures --------------------------------------------------------------------
def fig_loss(study: Any, max_points: int = MAX_POINTS) -> alt.LayerChart:
    """Fig. 1: train and test CE vs step per cell (weight decay), log y; band = seed min-max."""
    cells = _relu(study) or cl.cell_datasets(study)
    df = _bands(cells, {"train": "train_loss", "test": "test_loss"}, max_points=max_points)
    return _band_chart(df, "Train and test loss (Fig. 1)", "cross-entropy (nats)")


def fig_loss_srank(
    study: Any, matrix: str | None = None, max_points: int = MAX_POINTS
) -> alt.LayerChart:
    """Fig. 3: test loss (log, left axis) and stable rank (right axis) vs step per cell."""
    cells = _relu(study) or cl.cell_datasets(study)
    cells = [c for c in cells if "srank" in c[2]]
    if not cells:
        raise FigureSkipped("no stable rank logged")
    mat = matrix or cl.srank_matrix(cells[0][2])
    n_lines = 2 * len(cells)
    loss = _bands(cells, {"test loss": "test_loss"}, n_lines, max_points)
    get = {f"srank({mat})": lambda ds: ds["srank"].sel(matrix=mat)}
    srank = _bands(cells, get, n_lines, max_points)
    left = _band_chart(loss, "", "test cross-entropy (nats, log)", log_y=True)
    right = _band_chart(srank, "", f"stable rank of {mat}", log_y=False)
    return (
        alt.layer(left, right)
        .resolve_scale(y="independent")
        .properties(title=f"Test loss and stable rank (Fig. 3), matrix {mat}")
    )


def primitive_root(p: int) -> int:
    """Smallest generator of the multiplicative group of Z/p (p prime)."""
    factors = {q for q in range(2, p) if (p - 1) % q == 0 and all(q % r for r in range(2, q))}
    for g in range(2, p):
        if all(pow(g, (p - 1) // q, p) != 1 for q in factors):
            return g
    return 1


def generator_order(p: int) -> np.ndarray:
    """Residues g^0, g^1, ..., g^(p-2) mod p for the smallest generator g (Fig. 2 ordering)."""
    g = primitive_root(p)
    return np.array([pow(g, i, p) for i in range(p - 1)])


def additive_order(rows: np.ndarray, p: int) -> tuple[np.ndarray, int, int]:
    """Residues i * g mod p (i = 0..p-1) with g = k^-1 mod p for the dominant non-zero
    frequency k of `rows` (p, n): the additive generator g turns the key Fourier mode into one
    smooth cycle down the rows. Returns (order, g, k)."""
    energy = fourier_spectrum(rows, "add")
    k = int(np.argmax(energy[1:]) + 1)
    g = pow(k, p - 2, p)
    return (np.arange(p) * g) % p, g, k


def _pick_cell(study: Any, cell: str | None, var: str) -> tuple[str, dict, xr.Dataset]:
    cells = [c for c in cl.cell_datasets(study) if var in c[2] and c[1].get("modulus")]
    if cell is not None:
        cells = [c for c in cells if c[0] == cell]
    if not cells:
        raise FigureSkipped(f"no modular cell with {var} snapshots")
    return cells[-1]  # cells are sorted: the last has the largest weight decay in a wd grid


def _residue_rows(snap: np.ndarray, p: int) -> np.ndarray:
    """Orient a snapshot (row, col) so rows are residues 0..p-1 (rows or columns of size >= p)."""
    return snap[:p] if snap.shape[0] >= p else snap.T[:p]


def fig_generator_heatmap(
    study: Any, block: str = "E", cell: str | None = None, seed_index: int = 0
) -> alt.HConcatChart:
    """Fig. 2: rows of E (or class rows of U) re-ordered by a generator of Z/p, first vs last
    checkpoint. add/sub: the additive generator g = k^-1 of the dominant frequency k (rows
    i * g mod p); mul/div: the multiplicative generator (rows g^i mod p).

    Columns are the top HEATMAP_COLUMNS principal directions of the final matrix.
    """
    var = f"snap_{block}"
    cid, params, ds = _pick_cell(study, cell, var)
    p = int(params["modulus"])
    snaps = ds[var].isel(seed=seed_index).to_numpy()
    first, last = _residue_rows(snaps[0], p), _residue_rows(snaps[-1], p)
    if params.get("op", "add") in ("add", "sub"):
        order, g, k = additive_order(last, p)
        how, ylab = f"i*g mod {p} (g = {g} = k^-1, key frequency k = {k})", "residue i*g mod p"
    else:
        order, g = generator_order(p), primitive_root(p)
        how, ylab = f"g^i mod {p} (g = {g})", "residue g^i mod p"
    n_rows = len(order)
    n_cols = min(HEATMAP_COLUMNS, last.shape[1], max(1, MAX_ROWS // (2 * n_rows)))
    # Columns: the final matrix's principal directions (both panels in that basis); each carries
    # one Fourier mode after grokking, so the key mode shows as a smooth cycle down the rows.
    basis = np.linalg.svd(last - last.mean(0), full_matrices=False)[2][:n_cols].T
    n_cols = basis.shape[1]
    cols = np.arange(n_cols)
    steps = ds["checkpoint_step"].to_numpy() if "checkpoint_step" in ds else [0, -1]
    panels = []
    for snap, step in ((first, steps[0]), (last, steps[-1])):
        m = (snap @ basis)[order]
        i, j = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
        df = pd.DataFrame(
            {"i": i.ravel(), "residue": order[i.ravel()], "col": cols[j.ravel()], "w": m.ravel()}
        )
        vmax = float(np.abs(m).max()) or 1.0
        panels.append(
            alt.Chart(df)
            .mark_rect()
            .encode(
                x=alt.X("col:O", title=f"principal direction of final {block}"),
                y=alt.Y(
                    "residue:O",
                    sort=order.tolist(),
                    title=ylab,
                    axis=alt.Axis(labelOverlap="parity"),
                ),
                color=alt.Color(
                    "w:Q",
                    scale=alt.Scale(scheme="redblue", domain=[-vmax, vmax], reverse=True),
                    legend=alt.Legend(title=["projection", f"(step {int(step)})"], format=".2g"),
                ),
                tooltip=["residue:Q", "col:Q", alt.Tooltip("w:Q", format=".3f")],
            )
            .properties(title=f"step {int(step)}", width=150, height=min(260, 12 * n_rows))
        )
    return (
        alt.hconcat(*panels)
        .resolve_scale(color="independent")
        .properties(
            title=f"{block} rows by residue {how}, {cid}, seed {int(ds['seed'][seed_index])}"
        )
    )


def fourier_spectrum(rows: np.ndarray, op: str = "add") -> np.ndarray:
    """Energy per frequency k = 0..p//2 of a (p, n) matrix over residues, summed over columns:
    ``metrics.fourier_energy`` (the helper the logged Fourier gap uses) of the centred rows.

    Additive tasks use the natural residue order; multiplicative ones (mul/div) the discrete-log
    order given by the generator (row 0 dropped), where their Fourier structure lives.
    """
    import torch

    from twoclocks.train.metrics import fourier_energy

    rows = np.asarray(rows, float)
    if op in {"mul", "div"}:
        rows = rows[generator_order(rows.shape[0])]
    centred = torch.as_tensor(rows - rows.mean(axis=0))
    return fourier_energy(centred[None])[0].numpy()


def fig_fourier_spectra(study: Any, cell: str | None = None, seed_index: int = 0) -> alt.Chart:
    """Fig. 2 (spectra): normalised Fourier energy of E and U rows, first vs last checkpoint."""
    cid, params, ds = _pick_cell(study, cell, "snap_E")
    p, op = int(params["modulus"]), str(params.get("op", "add"))
    frames = []
    for block in ("E", "U"):
        var = f"snap_{block}"
        if var not in ds:
            continue
        snaps = ds[var].isel(seed=seed_index).to_numpy()
        for when, snap in (("first checkpoint", snaps[0]), ("last checkpoint", snaps[-1])):
            spec = fourier_spectrum(_residue_rows(snap, p), op)
            frames.append(
                pd.DataFrame(
                    {
                        "block": block,
                        "when": when,
                        "k": np.arange(spec.size),
                        "energy": spec / (spec.sum() or 1.0),
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("k:O", title="frequency k"),
            y=alt.Y("energy:Q", title="energy fraction"),
            color=alt.Color("when:N", title=None),
            xOffset="when:N",
            row=alt.Row("block:N", title=None),
        )
        .properties(width=WIDTH, height=140, title=f"Fourier spectra of E and U rows, {cid}")
    )


# --- clock figures ----------------------------------------------------------------------------
def _clock_points(clocks: pd.DataFrame, clock: str, study: Any) -> pd.DataFrame:
    df = cl.usable(clocks, clock)
    df = df[~df["censored"].astype(bool) & df["step"].notna() & (df["level"] > 0)]
    if df.empty:
        raise FigureSkipped(f"no uncensored {clock} clocks")
    agg = (
        df.groupby(["cell_id", "level"], sort=True)["step"]
        .agg(mean="mean", lo="min", hi="max")
        .reset_index()
    )
    agg["label"] = agg["cell_id"]  # readable ids name the grid axes that vary
    return agg


def _clock_chart(pts: pd.DataFrame, lines: pd.DataFrame, x: str, x_title: str, log: bool, title):
    xs = alt.Scale(type="log") if log else alt.Scale(zero=False)
    ys = alt.Scale(type="log") if log else alt.Scale(zero=False)
    sort = list(dict.fromkeys(pts["label"]))
    col = alt.Color("label:N", sort=sort, title=None)
    base = alt.Chart(pts).encode(x=alt.X(f"{x}:Q", scale=xs, title=x_title), color=col)
    rule = base.mark_rule().encode(y=alt.Y("lo:Q", scale=ys), y2="hi:Q")
    dots = base.mark_point(filled=True).encode(
        y=alt.Y("mean:Q", scale=ys, title="step (mean, seed min-max)")
    )
    layers = [rule, dots]
    if not lines.empty:
        layers.append(
            alt.Chart(lines)
            .mark_line(strokeDash=[4, 3])
            .encode(
                x=f"{x}:Q",
                y="fit:Q",
                color=col,
                detail="cell_id:N",
                tooltip=["cell_id:N", *(["law:N"] if "law" in lines else [])],
            )
        )
    return alt.layer(*layers).properties(title=title, width=WIDTH, height=HEIGHT)


def fig_cls_clock(clocks: pd.DataFrame, fits: dict | None = None, study: Any = None) -> alt.Chart:
    """T_cls(eps) vs log(1/eps) per cell with the law fits.json chose (Thm 3.5, eq. 2.1): the
    log law a + b log(1/eps) (a straight line here) or the power law T0 + C eps^-k. Cells
    without an ok law fit are drawn without a line and named in the subtitle."""
    pts = _clock_points(clocks, "cls", study)
    pts["x"] = np.log(1.0 / pts["level"])
    laws = cl.law_fits(clocks, fits)["cls"]
    rows, unfit = [], []
    for cid, g in pts.groupby("cell_id", sort=True):
        f = laws.get(str(cid)) or {}
        xs = np.linspace(g["x"].min(), g["x"].max(), 20)
        if np.isfinite(f.get("slope", np.nan)) and np.isfinite(f.get("intercept", np.nan)):
            fit, law = f["intercept"] + f["slope"] * xs, f"log, b = {f['slope']:.3g}"
        elif np.isfinite(f.get("exponent", np.nan)) and np.isfinite(f.get("log_prefactor", np.nan)):
            fit = f.get("t_kl", 0.0) + np.exp(f["log_prefactor"] + f["exponent"] * xs)
            law = f"power, k = {f['exponent']:.2g}"
        else:
            unfit.append(str(cid))
            continue
        rows.append(
            pd.DataFrame(
                {"cell_id": cid, "label": g["label"].iloc[0], "x": xs, "fit": fit, "law": law}
            )
        )
    lines = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    note = f"no ok law fit (no line): {', '.join(unfit)}" if unfit else ""
    title = _title("Classifier clock T_cls (chosen law dashed)", note)
    return _clock_chart(pts, lines, "x", "log(1/eps)", False, title)


def fig_rep_clock(
    clocks: pd.DataFrame, fits: dict | None = None, study: Any = None, clock: str = cl.REP_CLOCK
) -> alt.Chart:
    """T_rep(eta) vs eta on log-log axes with the law fits.json chose for each cell: the power
    law T0 + C eta^-k (k = 2 theta - 1, Thm 4.8) or the log law a + b log(1/eta) (theta = 1/2).
    Cells without an ok law fit are drawn without a line and named in the subtitle."""
    pts = _clock_points(clocks, clock, study)
    laws = cl.law_fits(clocks, fits, clock)[clock]
    rows, unfit = [], []
    for cid, g in pts.groupby("cell_id", sort=True):
        f = laws.get(str(cid)) or {}
        eta = np.geomspace(g["level"].min(), g["level"].max(), 20)
        if np.isfinite(f.get("exponent", np.nan)) and np.isfinite(f.get("log_prefactor", np.nan)):
            fit = f.get("t_kl", 0.0) + np.exp(f["log_prefactor"]) * eta ** -f["exponent"]
            law = f"power, k = {f['exponent']:.2g}"
        elif np.isfinite(f.get("slope", np.nan)) and np.isfinite(f.get("intercept", np.nan)):
            fit = f["intercept"] + f["slope"] * np.log(1.0 / eta)
            law = f"log, b = {f['slope']:.3g}"
        else:
            unfit.append(str(cid))
            continue
        rows.append(
            pd.DataFrame(
                {"cell_id": cid, "label": g["label"].iloc[0], "level": eta, "fit": fit, "law": law}
            )
        )
    lines = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if len(lines):
        lines = lines[lines["fit"] > 0]  # a log axis cannot show non-positive fitted steps
    note = f"no ok law fit (no line): {', '.join(unfit)}" if unfit else ""
    return _clock_chart(
        pts, lines, "level", "eta", True, _title(f"Representation clock ({clock})", note)
    )


def fig_separation_ratio(clocks: pd.DataFrame, study: Any = None) -> alt.Chart:
    """Separation ratios T_gen/T_cls and T_rep/T_cls per run vs weight decay (docs/science.md 7)."""
    cells = cl.cell_table(study, clocks)
    if "weight_decay" not in cells:
        raise FigureSkipped("weight decay is not a grid axis")
    frames = []
    no_ratio = []  # slow clocks with no run at all: named in the subtitle, never dropped silently
    for slow in ("gen", cl.REP_CLOCK):
        df = cl.separation_ratios(clocks, slow)
        df = df[df["ratio"].notna()]
        if not df.empty:
            df["ratio_of"] = f"{df['slow_clock'].iloc[0]} / cls"
            frames.append(df)
        else:
            no_ratio.append(f"T_{slow} / T_cls: no run with both clocks")
    if not frames:
        raise FigureSkipped("no run with both clocks")
    df = pd.concat(frames, ignore_index=True).merge(
        cells[["cell_id", "weight_decay", "model"]], on="cell_id"
    )
    df = df[["cell_id", "seed", "weight_decay", "model", "ratio", "ratio_of"]]
    agg = (
        df.groupby(["ratio_of", "model", "weight_decay"], sort=True)["ratio"]
        .agg(mean="mean", lo="min", hi="max")
        .reset_index()
    )
    all_wd = sorted({float(w) for w in cells["weight_decay"].dropna()})
    missing = [w for w in all_wd if not np.isclose(agg["weight_decay"], w).any()]
    partial = []
    for ratio_of, g in agg.groupby("ratio_of", sort=True):
        absent = [
            w for w in all_wd if w not in missing and not np.isclose(g["weight_decay"], w).any()
        ]
        if absent:
            partial.append(
                f"{ratio_of}: no run at weight decay {', '.join(f'{w:g}' for w in absent)}"
            )
    note = [
        *(
            [f"weight decay {', '.join(f'{w:g}' for w in missing)}: no run with both clocks"]
            if missing
            else []
        ),
        *partial,
        *no_ratio,
    ]
    base = alt.Chart(agg).encode(
        x=alt.X("weight_decay:Q", title="weight decay", scale=alt.Scale(zero=False)),
        color=alt.Color("ratio_of:N", title=None),
        shape=alt.Shape("model:N", title=None),
    )
    y = alt.Y("mean:Q", scale=alt.Scale(type="log"), title="separation ratio (mean, min-max)")
    return alt.layer(
        base.mark_rule().encode(y=alt.Y("lo:Q", scale=alt.Scale(type="log")), y2="hi:Q"),
        base.mark_line(point=True).encode(y=y, detail="model:N"),
        alt.Chart(pd.DataFrame({"r": [cl.SEPARATION_MIN_RATIO]}))
        .mark_rule(strokeDash=[2, 2], color="gray")
        .encode(y="r:Q"),
    ).properties(
        title=_title("Separation ratio vs weight decay", *note), width=WIDTH, height=HEIGHT
    )


def fig_depth_clocks(clocks: pd.DataFrame, study: Any = None) -> alt.Chart:
    """Deep linear nets: T_cls(eps) and T_rep(eta) vs depth L (mean, seed min-max)."""
    cells = cl.cell_table(study, clocks)
    if "depth" not in cells or not (cells["model"] == "deep_linear").any():
        raise FigureSkipped("no deep linear cells")
    deep = cells[cells["model"] == "deep_linear"][["cell_id", "depth"]]
    sub = clocks[clocks["cell_id"].isin(deep["cell_id"])]
    frames = []
    for clock, level in (
        ("cls", cl.pick_level(sub, "cls", cl.CLS_EPS)),
        (cl.REP_CLOCK, cl.strictest_level(sub, cl.REP_CLOCK)),
    ):
        t = cl.clock_times(sub, clock, level).dropna(subset=["step"])
        if not t.empty:
            t["clock"] = f"{clock} @ {level:g}"
            frames.append(t)
    if not frames:
        raise FigureSkipped("no uncensored deep linear clocks")
    df = pd.concat(frames, ignore_index=True).merge(deep, on="cell_id")
    agg = (
        df.groupby(["clock", "depth"], sort=True)["step"]
        .agg(mean="mean", lo="min", hi="max")
        .reset_index()
    )
    base = alt.Chart(agg).encode(
        x=alt.X("depth:O", title="depth L"), color=alt.Color("clock:N", title=None)
    )
    y = alt.Y("mean:Q", scale=alt.Scale(type="log"), title="step (mean, seed min-max)")
    return alt.layer(
        base.mark_rule().encode(y=alt.Y("lo:Q", scale=alt.Scale(type="log")), y2="hi:Q"),
        base.mark_line(point=True).encode(y=y),
    ).properties(title="Deep linear: clocks vs depth", width=WIDTH, height=HEIGHT)


# --- mechanism figures --------------------------------------------------------------------------
def _one(cells, cell: str | None, what: str):
    if cell is not None:
        cells = [c for c in cells if c[0] == cell]
    if not cells:
        raise FigureSkipped(f"no cell for {what}")
    return cells[-1]


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


# --- all figures, saving ----------------------------------------------------------------------
def build_figures(
    study: Any, clocks: pd.DataFrame | None, fits: dict | None, max_points: int = MAX_POINTS
) -> tuple[dict[str, alt.TopLevelMixin], list[str]]:
    """All figures this study supports, keyed by file stem, and notes on the skipped ones.

    `max_points`: log points per line after thinning (config `report.max_points_per_line`).
    """
    clocks = clocks if clocks is not None else pd.DataFrame()
    makers = {
        "fig1_loss": lambda: fig_loss(study, max_points),
        "fig3_loss_srank": lambda: fig_loss_srank(study, max_points=max_points),
        "fig2_embedding": lambda: fig_generator_heatmap(study, "E"),
        "fig2_head": lambda: fig_generator_heatmap(study, "U"),
        "fig2_spectra": lambda: fig_fourier_spectra(study),
        "clock_cls": lambda: fig_cls_clock(clocks, fits, study),
        "clock_rep": lambda: fig_rep_clock(clocks, fits, study),
        "separation_ratio": lambda: fig_separation_ratio(clocks, study),
        "clocks_depth": lambda: fig_depth_clocks(clocks, study),
        "grad_bounds": lambda: fig_grad_bounds(study, max_points=max_points),
        "gates": lambda: fig_gates(study, max_points),
        "deep_singular_values": lambda: fig_singular_values(study, max_points=max_points),
        "deep_schatten": lambda: fig_schatten(study, max_points),
        "deep_lazy": lambda: fig_deep_lazy(study, max_points=max_points),
    }
    charts, notes = {}, []
    for name, make in makers.items():
        try:
            charts[name] = make()
        except FigureSkipped as err:
            notes.append(f"{name}: skipped ({err})")
        except KeyError as err:
            notes.append(f"{name}: skipped (missing {err})")
    return charts, notes


@functools.cache
def js_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one offline script (vl-convert), safe inside <script>."""
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert()).replace(
        "</script", "<\\/script"
    )


def spec_json(chart: alt.TopLevelMixin) -> str:
    """The chart's Vega-Lite spec as deterministic JSON, safe to embed in HTML."""
    import json

    return json.dumps(chart.to_dict(), sort_keys=True).replace("</", "<\\/")


def chart_html(chart: alt.TopLevelMixin, title: str = "figure") -> str:
    """A self-contained offline page for one chart (what altair's `save(inline=True)` writes)."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        f"{title}</title>\n<script>{js_bundle()}</script></head>\n<body>"
        '<div id="vis"></div>\n<script>vegaEmbed("#vis", '
        f'{spec_json(chart)}, {{"actions": false}}).catch(console.error);</script>'
        "\n</body></html>\n"
    )


def save_chart(chart: alt.TopLevelMixin, base_path: str | Path) -> list[Path]:
    """Write base.html (self-contained, offline), base.png and base.svg; return the paths.

    HTML inlines the cached vl-convert bundle (as `save(inline=True)` does, without rebuilding
    the bundle per chart); PNG and SVG come from vl-convert, deterministic for the same spec.
    """
    base = Path(base_path)
    base.parent.mkdir(parents=True, exist_ok=True)
    spec = chart.to_dict()
    paths = [base.with_suffix(".html"), base.with_suffix(".png"), base.with_suffix(".svg")]
    paths[0].write_text(chart_html(chart, base.name), encoding="utf-8")
    from altair.utils._importers import vl_version_for_vl_convert

    vl = vl_version_for_vl_convert()
    paths[1].write_bytes(vlc.vegalite_to_png(spec, vl_version=vl, scale=2))
    paths[2].write_text(stable_svg(vlc.vegalite_to_svg(spec, vl_version=vl)), encoding="utf-8")
    return paths


def stable_svg(svg: str) -> str:
    """Renumber Vega's process-global gradient ids (colour-scale legends) from 0 in order of
    appearance, so the same spec gives a byte-identical SVG however many charts came before."""
    import re

    ids: dict[str, str] = {}
    return re.sub(
        r"gradient_\d+", lambda m: ids.setdefault(m.group(0), f"gradient_{len(ids)}"), svg
    )
