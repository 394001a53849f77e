"""Depth and balance under plain GD (docs/science.md 6): the measured depth dependence of the
spurious energy's tail rate against the p = 2/L reading, and the balancedness of the factors.

Layerwise weight decay on balanced factors is L ||A||_{S_p}^p with p = 2/L (eq. 2.7), under
which a singular mode no loss gradient holds decays as ds/dt = -L wd s: energy rate 2 L wd lr,
L times the first layer's 2 wd lr. The reading holds only where the factors are balanced, so it
is scored only on cells whose relative balancedness gap (balancedness_gap / sum_l ||W_l||^2) at
T_rep is at most `dln_balanced_max`; every cell's rate per 2 wd lr, its gaps at T_cls and T_rep
and the depth slope d ln(rate) / d ln(L) of each sweep are recorded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from twoclocks.analyze.claims.common import fmt
from twoclocks.analyze.claims.deep_linear import DLN_CLOCK, GD, cell_params, spurious_ratios
from twoclocks.analyze.claims.dln_tail_rate import tail_rate_table
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.results import parse_json

SWEEP_KEYS = ("optimizer", "lr", "weight_decay", "init_scheme", "init_scale", "balanced_init")


def relative_gap(ds: xr.Dataset) -> xr.DataArray | None:
    """balancedness_gap / sum_l ||W_l||_F^2 (seed, step): 0 iff balanced (eq. 2.7); None where
    the store lacks the gap or the Schatten energy."""
    if "balancedness_gap" not in ds or "schatten_energy" not in ds:
        return None
    depth = float((parse_json(ds.attrs.get("cell"), {}) or {}).get("depth", 1))
    total = ds["balancedness_gap"] + depth * ds["schatten_energy"]
    return (ds["balancedness_gap"] / total.where(total > 0)).transpose("seed", "step")


def _at(steps: np.ndarray, v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """v interpolated at the times t (NaN where t is NaN or v has < 2 finite logs)."""
    fin = np.isfinite(v)
    if fin.sum() < 2:
        return np.full(len(t), np.nan)
    return np.where(np.isfinite(t), np.interp(np.nan_to_num(t), steps[fin], v[fin]), np.nan)


def balance_table(ctx: Context, eta: float) -> pd.DataFrame:
    """Per plain-GD cell: median relative balancedness gap at T_cls and at T_rep(eta)."""
    runs = spurious_ratios(ctx.clocks, ctx.scope_ids, eta)
    rows = []
    for cid, ds in ctx.runs():
        rel = relative_gap(ds)
        r = runs[runs["cell_id"] == cid].set_index("seed")
        if rel is None or r.empty:
            continue
        steps = ds["step"].values.astype(np.float64)
        at_cls, at_rep = [], []
        for i, seed in enumerate(ds["seed"].values):
            if seed not in r.index:
                continue
            v = rel.values[i].astype(np.float64)
            t = np.array([r.at[seed, "t_cls"], r.at[seed, "t_rep"]], dtype=float)
            a, b = _at(steps, v, t)
            at_cls.append(a)
            at_rep.append(b)
        with np.errstate(all="ignore"):
            rows.append({"cell_id": cid, "gap_cls": float(np.nanmedian(at_cls + [np.nan])),
                         "gap_rep": float(np.nanmedian(at_rep + [np.nan]))})  # fmt: skip
    return pd.DataFrame(rows, columns=["cell_id", "gap_cls", "gap_rep"])


def depth_slopes(ctx: Context, rates: pd.DataFrame) -> dict[str, float]:
    """Per sweep (cells equal in SWEEP_KEYS) over >= 2 depths: the slope of ln(rate per 2 wd lr)
    against ln(depth) (0: the first layer alone sets the rate; 1: balanced, p = 2/L)."""
    df = rates.merge(ctx.cells, on="cell_id", how="left")
    keys = [k for k in SWEEP_KEYS if k in df]
    out = {}
    for key, g in df.groupby(keys, dropna=False, sort=True) if keys else []:
        g = g[np.isfinite(g["per_2wdlr"].astype(float)) & (g["per_2wdlr"] > 0)]
        depth = pd.to_numeric(g["depth"], errors="coerce")
        if depth.nunique() >= 2:
            name = ", ".join(f"{k}={v}" for k, v in zip(keys, np.atleast_1d(key), strict=True))
            out[name] = float(np.polyfit(np.log(depth), np.log(g["per_2wdlr"].astype(float)), 1)[0])
    return out


def judge_dln_depth_rate(ctx: Context, s: dict) -> dict:
    m, bmax = float(s["dln_rate_margin"]), float(s["dln_balanced_max"])
    rates = tail_rate_table(ctx, ctx.scope_ids, float(s["late_fraction"]))
    rates = rates[np.isfinite(rates["per_2wdlr"].astype(float))] if len(rates) else rates
    if rates.empty:
        return ctx.record(INCONCLUSIVE, f"no plain-GD deep linear cell with a {DLN_CLOCK} tail "
                          "rate (see dln_tail_rate)")  # fmt: skip
    gaps = balance_table(ctx, float(s["dln_eta"]))
    t = rates.merge(gaps, on="cell_id", how="left")
    t["depth"] = [
        float(pd.to_numeric(cell_params(ctx.cells, c).get("depth"), errors="coerce"))
        for c in t["cell_id"]
    ]
    balanced = t[t["gap_rep"] <= bmax]
    ok = (balanced["per_2wdlr"] >= (1 - m) * balanced["depth"]) & (
        balanced["per_2wdlr"] <= (1 + m) * balanced["depth"]
    )
    slopes = depth_slopes(ctx, t[["cell_id", "per_2wdlr"]])
    record = "; ".join(
        f"{r['cell_id']}: L={r['depth']:g}, rate {fmt(r['per_2wdlr'])} x 2 wd lr, relative "
        f"balancedness gap {fmt(r['gap_cls'])} at T_cls, {fmt(r['gap_rep'])} at T_rep"
        for _, r in t.iterrows()
    )
    slope_text = ", ".join(f"[{k}] {v:.3g}" for k, v in slopes.items()) or "no sweep over depth"
    if balanced.empty:
        verdict, head = (
            INCONCLUSIVE,
            (
                f"no plain-GD cell balanced at T_rep (relative gap <= {bmax:g}): the p = 2/L "
                "reading is not scored"
            ),
        )
    else:
        verdict = PASS if bool(ok.all()) else FAIL
        head = (
            f"p = 2/L reading (rate = L x 2 wd lr within {m:g}) holds in {int(ok.sum())}/"
            f"{len(balanced)} balanced plain-GD cells"
        )
    ev = f"{head}; depth slope d ln(rate)/d ln(L) per sweep: {slope_text}; per cell: {record}"
    cols = ("depth", "per_2wdlr", "gap_cls", "gap_rep")
    details = {r["cell_id"]: {k: float(r[k]) for k in cols} for _, r in t.iterrows()}
    return ctx.record(verdict, ev, per_cell=details, depth_slopes=slopes)


SPECS = (
    ClaimSpec(
        id="dln_depth_rate",
        statement="p = 2/L (eq. 2.7): balanced factors shed a mode no gradient holds at 2 L wd lr.",
        section="eq. 2.7 and Prop. 4.3 (p = 2/L); docs/science.md 6",
        scope=GD,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=("dln_balanced_max", "dln_rate_margin", "dln_eta", "late_fraction"),
        rule=lambda s: (
            "record per plain-GD cell the median late spurious-energy rate (dln_tail_rate) per "
            "2 wd lr, the relative "
            "balancedness gap (balancedness_gap / sum ||W_l||^2) at T_cls and T_rep(dln_eta) and "
            "per sweep the slope of ln(rate) on ln(L); score the p = 2/L reading only on cells "
            f"with a gap <= {s['dln_balanced_max']:g} at T_rep: PASS if each has a rate within "
            f"{s['dln_rate_margin']:g} of L x 2 wd lr, FAIL if any has not, INCONCLUSIVE if no "
            "cell is balanced"
        ),
        judge=judge_dln_depth_rate,
        order=125,
    ),
)
