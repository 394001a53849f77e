"""A deep linear net that groks: the representation clock gates generalisation (issue 23 item 5).

On the sparse-observation teacher (`observed_features` set: the teacher and the train inputs use
only the first k features, the test inputs all d) a map that fits the train set with no energy
on the unobserved features classifies every test input; the init's energy left there, the
spurious fraction S = ||A P_perp||^2 / ||A||^2, is pure noise on the test logits, and under
plain GD only weight decay removes it (at ~2 wd lr per step, dln_tail_rate). A large init
(lazy regime) leaves S(T_cls) large, so the test accuracy stays below the level long after the
train set is fitted and rises as S decays: T_gen should follow T_rep = the first log from which
S < eta stays (the absolute level of dln_lazy_rich), across weight decays and init scales.

Rule (set before the grid `grok_gd` of config/deep_linear.yaml ran): per member,
dt_rep = T_rep - T_cls(eps_star) and dt_gen = T_gen - T_cls, T_gen the `gen_acc` clock at the
study's gen_acc_level; per cell the medians over members with both; the slope of log(dt_gen)
on log(dt_rep) across cells with a seed-bootstrap interval (members resampled within cells,
pairs kept). PASS if the interval lies inside the band, FAIL if it is disjoint from it or if in
some cell most members have T_rep but never reach T_gen; else INCONCLUSIVE.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from twoclocks.analyze.claims.common import fmt, seed_bootstrap
from twoclocks.analyze.claims.deep_linear import (
    counted_text,
    member_tails,
    plain_gd,
    spurious_fraction,
)
from twoclocks.analyze.claims.dln_lazy_rich import knob_member
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context, Scope
from twoclocks.analyze.results import clock_times, pick_level

COLUMNS = ["cell_id", "seed", "t_cls", "s_cls", "dt_rep", "rep_status", "dt_gen", "gen_status"]


def _sparse_gd(cells: pd.DataFrame) -> pd.Series:
    """Plain-GD cells (weight decay > 0) on the sparse-observation teacher."""
    observed = cells["observed_features"] if "observed_features" in cells else None
    if observed is None:
        return pd.Series(False, index=cells.index)
    return plain_gd(cells) & pd.to_numeric(observed, errors="coerce").notna()


SPARSE_GD = Scope(
    "plain-GD deep linear cells on the sparse-observation teacher (observed_features set), where "
    "a fitted map without unsupported energy generalises; other cells OUT OF SCOPE (on the dense "
    "n < d teacher the fitted map's own test accuracy is ~0.44, so no level can be reached)",
    ("deep_linear",),
    ("sgd",),
    _sparse_gd,
)


def gate_table(ctx: Context, eta: float, acc_level: float) -> tuple[pd.DataFrame, float | None]:
    """Per member of every cell in scope: T_cls, S(T_cls), dt_rep (knob_member's T_rep on S
    against `eta`) and dt_gen (the gen_acc clock at the level nearest `acc_level`); the level."""
    ids = ctx.scope_ids
    tails = member_tails(ctx.clocks, ids)
    level = pick_level(ctx.clocks, "gen_acc", acc_level, log=False)
    gen = clock_times(ctx.clocks, "gen_acc", level)
    gen = gen[gen["cell_id"].astype(str).isin(ids)].copy()
    gen["cell_id"] = gen["cell_id"].astype(str)
    gen = gen.set_index(["cell_id", "seed"])
    rows = []
    for cid, ds in ctx.runs():
        frac = spurious_fraction(ds)
        if frac is None:
            continue
        steps = ds["step"].values.astype(np.float64)
        t_cls = tails[tails["cell_id"] == cid].set_index("seed")["t_cls_ref"]
        for i, seed in enumerate(ds["seed"].values):
            tc = float(t_cls.get(seed, math.nan))
            if not tc >= 0:
                rows.append({"cell_id": cid, "seed": int(seed), "rep_status": "no T_cls"})
                continue
            r = knob_member(steps, frac.values[i].astype(np.float64), tc, eta)
            g = gen.loc[(cid, seed)] if (cid, seed) in gen.index else None
            if g is None:
                gs, dg = "no gen clock", math.nan
            elif bool(g["censored"]) or bool(g["relapse"]):
                gs, dg = ("relapsed" if bool(g["relapse"]) else "censored"), math.nan
            else:
                gs, dg = "fired", float(g["step"]) - tc
            rows.append({"cell_id": cid, "seed": int(seed), "t_cls": tc, "s_cls": r["s_cls"],
                         "dt_rep": r["dt"], "rep_status": r["status"], "dt_gen": dg,
                         "gen_status": gs})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS), level


def log_slope(x: np.ndarray, y: np.ndarray) -> float:
    """OLS slope of log(y) on log(x) (NaN with < 2 distinct x or non-positive values)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    if lx.size < 2 or np.ptp(lx) == 0:
        return math.nan
    return float(np.polyfit(lx, ly, 1)[0])


def slope_interval(pairs: dict[str, pd.DataFrame]) -> tuple[float, float, float]:
    """Slope over cell medians of (dt_rep, dt_gen) with its seed-bootstrap interval: each cell's
    members resampled with replacement, a member's pair kept together."""
    idx = {cid: np.arange(len(p), dtype=float) for cid, p in pairs.items()}

    def stat(groups: dict[str, np.ndarray]) -> float:
        med = [(np.median(pairs[c]["dt_rep"].to_numpy()[i.astype(int)]),
                np.median(pairs[c]["dt_gen"].to_numpy()[i.astype(int)]))
               for c, i in groups.items()]  # fmt: skip
        x, y = zip(*med, strict=True)
        return log_slope(np.array(x), np.array(y))

    return seed_bootstrap(idx, stat)


def judge_dln_rep_gates_gen(ctx: Context, s: dict) -> dict:
    eta, (lo_b, hi_b) = float(s["dln_eta_abs"]), (float(v) for v in s["dln_gen_slope_band"])
    t, level = gate_table(ctx, eta, float(s["gen_acc_level"]))
    both = t[(t["rep_status"] == "fired") & (t["gen_status"] == "fired")
             & (t["dt_rep"] > 0) & (t["dt_gen"] > 0)]  # fmt: skip
    rep_only = t[(t["rep_status"] == "fired") & t["gen_status"].isin(["censored", "relapsed"])]
    n_cell = t.groupby("cell_id").size()
    missed = sorted(c for c, n in rep_only.groupby("cell_id").size().items() if n > n_cell[c] / 2)
    pairs = {c: g for c, g in both.groupby("cell_id") if len(g) >= s["min_runs"]}
    counted = counted_text(
        {"members without T_cls(eps_star)": int((t["rep_status"] == "no T_cls").sum()),
         "members with S below eta by T_cls or no T_rep (rep status not fired, or dt 0)":
             int(((t["rep_status"] != "no T_cls") & ~t.index.isin(both.index)
                  & ~t.index.isin(rep_only.index)).sum()),
         "members with T_rep that never reached T_gen (censored or relapsed)": len(rep_only),
         f"cells with fewer than {s['min_runs']} members with both clocks":
             int(t["cell_id"].nunique() - len(pairs))}
    )  # fmt: skip
    if level is None:
        return ctx.record(INCONCLUSIVE, f"no usable gen_acc clock in the study{counted}")
    per = pd.DataFrame({c: {"dt_rep": g["dt_rep"].median(), "dt_gen": g["dt_gen"].median(),
                            "t_cls": g["t_cls"].median(), "s_cls": g["s_cls"].median(),
                            "n": len(g)} for c, g in pairs.items()}).T  # fmt: skip
    text = "; ".join(
        f"{c}: S(T_cls) {fmt(r['s_cls'])}, T_cls {fmt(r['t_cls'])}, T_rep - T_cls "
        f"{fmt(r['dt_rep'])}, T_gen - T_cls {fmt(r['dt_gen'])} (ratio "
        f"{fmt(r['dt_gen'] / r['dt_rep'])})"
        for c, r in per.iterrows()
    )
    details = {
        "gen_acc_level": level,
        "missed_cells": missed,
        "per_cell": {c: {k: float(v) for k, v in r.items()} for c, r in per.iterrows()},
    }
    if len(pairs) < s["dln_gen_min_cells"]:
        return ctx.record(INCONCLUSIVE, f"{len(pairs)} cells with T_rep and T_gen (need "
                          f"{s['dln_gen_min_cells']}): {text}{counted}", **details)  # fmt: skip
    est, lo, hi = slope_interval(pairs)
    ratio = (per["dt_gen"] / per["dt_rep"]).astype(float)
    details.update(slope=est, slope_ci=[lo, hi], ratio_median=float(ratio.median()),
                   ratio_range=[float(ratio.min()), float(ratio.max())])  # fmt: skip
    if missed:
        verdict = FAIL
    elif np.isfinite(lo) and np.isfinite(hi) and lo_b <= lo and hi <= hi_b:
        verdict = PASS
    elif np.isfinite(lo) and np.isfinite(hi) and (hi < lo_b or lo > hi_b):
        verdict = FAIL
    else:
        verdict = INCONCLUSIVE
    ev = (
        f"slope of log(T_gen - T_cls) on log(T_rep - T_cls) over {len(pairs)} cells: {fmt(est)} "
        f"[{fmt(lo)}, {fmt(hi)}] against [{lo_b:g}, {hi_b:g}] (T_gen: test acc >= {level:g}; "
        f"T_rep: S < {eta:g}); (T_gen - T_cls)/(T_rep - T_cls) median {fmt(ratio.median())} "
        f"({fmt(ratio.min())}-{fmt(ratio.max())})"
        + (f"; cells where most members never reached T_gen after T_rep: {', '.join(missed)}"
           if missed else "")
        + f". {text}{counted}"
    )  # fmt: skip
    return ctx.record(verdict, ev, **details)


SPECS = (
    ClaimSpec(
        id="dln_rep_gates_gen",
        statement="A deep linear net that groks (GD, sparse-observation teacher): T_gen follows "
        "T_rep across weight decays and init scales.",
        section="Sec. 4 (T_rep gates T_gen) on the theorems' model class; docs/science.md 6",
        scope=SPARSE_GD,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=(
            "dln_eta_abs",
            "gen_acc_level",
            "dln_gen_slope_band",
            "dln_gen_min_cells",
            "min_runs",
        ),
        rule=lambda s: (
            f"per member T_rep = first log after T_cls(eps_star) from which S < "
            f"{s['dln_eta_abs']:g} stays, T_gen = test accuracy >= {s['gen_acc_level']}; slope "
            "of log(T_gen - T_cls) on log(T_rep - T_cls) over cell medians (>= "
            f"{s['dln_gen_min_cells']} cells with >= {s['min_runs']} members with both), "
            "seed-bootstrap 95% interval; PASS if inside "
            f"[{s['dln_gen_slope_band'][0]:g}, {s['dln_gen_slope_band'][1]:g}], FAIL if disjoint "
            "from it or if in any cell most members reach T_rep but never T_gen, else "
            "INCONCLUSIVE"
        ),
        judge=judge_dln_rep_gates_gen,
        order=115,
    ),
)
