"""Clock figures: T_cls and T_rep per level with their fitted laws, separation ratios, and the
deep linear clocks vs depth."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from twoclocks.analyze.claims.spec import resolve_claim_settings
from twoclocks.report.figures.common import HEIGHT, WIDTH, FigureSkipped, _title, cl
from twoclocks.report.figures.registry import figure


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


@figure(
    "clock_cls",
    "Classifier clock: T_cls(eps) in steps vs log(1/eps) per cell (mean, seed min-max); dashed = "
    "the law fits.json chose for the cell.",
)
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


@figure(
    "clock_rep",
    "Representation clock: T_rep(eta) in steps vs eta, log-log, per cell (mean, seed min-max); "
    "dashed = the law chosen by AIC (log or power law).",
)
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


@figure(
    "separation_ratio",
    "R = T_gen / T_cls(cls_eps) (the separation claim's ratio) and T_rep / T_cls vs weight "
    "decay: per-cell median, bar = seed range; dotted = threshold.",
)
def fig_separation_ratio(
    clocks: pd.DataFrame, study: Any = None, claim_settings: dict | None = None
) -> alt.Chart:
    """Per-cell medians of T_gen/T_cls and T_rep/T_cls vs weight decay (docs/science.md 7):
    the one separation ratio of `results.separation_ratios`, at the claims' levels."""
    cells = cl.cell_table(study, clocks)
    if "weight_decay" not in cells:
        raise FigureSkipped("weight decay is not a grid axis")
    s = resolve_claim_settings(claim_settings)
    frames = []
    no_ratio = []  # slow clocks with no run at all: named in the subtitle, never dropped silently
    for slow in ("gen", cl.REP_CLOCK):
        df = cl.separation_ratios(clocks, slow, s["cls_eps"], s["gen_acc_level"])
        df = df[df["ratio"].notna()]
        if not df.empty:
            name = "R = T_gen" if slow == "gen" else "T_rep"
            df["ratio_of"] = f"{name} / T_cls"
            eps = float(df["cls_level"].iloc[0])
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
        .agg(median="median", lo="min", hi="max")
        .reset_index()
    )
    note = [*_missing_weight_decays(cells, agg), *no_ratio]
    base = alt.Chart(agg).encode(
        x=alt.X("weight_decay:Q", title="weight decay", scale=alt.Scale(zero=False)),
        color=alt.Color("ratio_of:N", title=None),
        shape=alt.Shape("model:N", title=None),
    )
    y_title = f"T_slow / T_cls(eps={eps:g}) (median, min-max)"
    y = alt.Y("median:Q", scale=alt.Scale(type="log"), title=y_title)
    return alt.layer(
        base.mark_rule().encode(y=alt.Y("lo:Q", scale=alt.Scale(type="log")), y2="hi:Q"),
        base.mark_line(point=True).encode(y=y, detail="model:N"),
        alt.Chart(pd.DataFrame({"r": [float(s["separation_min_ratio"])]}))
        .mark_rule(strokeDash=[2, 2], color="gray")
        .encode(y="r:Q"),
    ).properties(
        title=_title("Separation ratio vs weight decay", *note), width=WIDTH, height=HEIGHT
    )


def _missing_weight_decays(cells: pd.DataFrame, agg: pd.DataFrame) -> list[str]:
    """Subtitle notes: weight decays with no ratio at all, and per ratio those it lacks."""
    all_wd = sorted({float(w) for w in cells["weight_decay"].dropna()})
    missing = [w for w in all_wd if not np.isclose(agg["weight_decay"], w).any()]
    notes = []
    if missing:
        notes.append(
            f"weight decay {', '.join(f'{w:g}' for w in missing)}: no run with both clocks"
        )
    for ratio_of, g in agg.groupby("ratio_of", sort=True):
        absent = [
            w for w in all_wd if w not in missing and not np.isclose(g["weight_decay"], w).any()
        ]
        if absent:
            notes.append(
                f"{ratio_of}: no run at weight decay {', '.join(f'{w:g}' for w in absent)}"
            )
    return notes


@figure(
    "clocks_depth",
    "Deep linear nets: T_cls and T_rep in steps vs depth L (mean, seed min-max).",
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
