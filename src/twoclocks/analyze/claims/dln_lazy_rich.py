"""The lazy-rich knob on the theorems' terms (docs/science.md 6, 9; replaces `dln_controls`).

The scale-free spurious fraction S = ||A P_perp||_F^2 / ||A||_F^2 (`spurious_energy` over the
sum of squared `singular_values` of the end-to-end map) is judged against an absolute level
eta (`dln_eta_abs`), never normalised at T_cls, so a control keeps its amplitude. Under plain GD
the unsupported energy decays at a rate in [2 wd lr, 2 L wd lr] (dln_tail_rate), so the slow
clock lasts T_rep - T_cls = ln(S(T_cls) / eta) / rate, and there is no plateau once
S(T_cls) < eta (the rich regime).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from twoclocks.analyze.claims.common import fmt
from twoclocks.analyze.claims.deep_linear import (
    GD,
    cell_params,
    counted_text,
    gd_rate_band,
    member_tails,
    spurious_fraction,
)
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context

COLUMNS = ["cell_id", "seed", "t_cls", "s_cls", "dt", "dt_lo", "dt_hi", "tol", "horizon", "status"]


def knob_member(steps: np.ndarray, s: np.ndarray, t_cls: float, eta: float) -> dict:
    """One member: S(T_cls), and dt = T_rep - T_cls with T_rep the first logged step from which
    S stays below eta after T_cls (`censored` if S is above eta at the last log); `tol` = the
    logging interval at T_rep (a crossing is known to one interval)."""
    fin = np.isfinite(s)
    s_cls = float(np.interp(t_cls, steps[fin], s[fin])) if fin.sum() >= 2 else math.nan
    post = np.flatnonzero((steps >= t_cls) & fin)
    if post.size == 0 or not np.isfinite(s_cls):
        return {"s_cls": s_cls, "dt": math.nan, "tol": math.nan, "status": "no logs after T_cls"}
    above = post[s[post] >= eta]
    horizon = float(steps[post[-1]] - t_cls)
    if above.size and above[-1] == post[-1]:
        return {"s_cls": s_cls, "dt": math.nan, "tol": 0.0, "horizon": horizon,
                "status": "censored"}  # fmt: skip
    i = post[0] if above.size == 0 else int(above[-1]) + 1
    tol = float(steps[i] - steps[max(i - 1, 0)]) if i > 0 else 0.0
    return {"s_cls": s_cls, "dt": float(steps[i] - t_cls), "tol": tol, "horizon": horizon,
            "status": "fired"}  # fmt: skip


def knob_table(ctx: Context, eta: float) -> tuple[pd.DataFrame, list[str]]:
    """Per member of every plain-GD cell: S(T_cls), measured dt and the predicted band
    [ln(S/eta) / (2 L wd lr), ln(S/eta) / (2 wd lr)] (0 where S(T_cls) < eta); the cells
    without S (skipped, named)."""
    tails = member_tails(ctx.clocks, ctx.scope_ids)
    rows, skipped = [], []
    for cid, ds in ctx.runs():
        frac = spurious_fraction(ds)
        if frac is None:
            skipped.append(cid)
            continue
        lo, hi = gd_rate_band(cell_params(ctx.cells, cid))
        steps = ds["step"].values.astype(np.float64)
        t_cls = tails[tails["cell_id"] == cid].set_index("seed")["t_cls_ref"]
        for i, seed in enumerate(ds["seed"].values):
            tc = float(t_cls.get(seed, math.nan))
            if not tc > 0:
                rows.append({"cell_id": cid, "seed": int(seed), "status": "no T_cls"})
                continue
            r = knob_member(steps, frac.values[i].astype(np.float64), tc, eta)
            e = math.log(r["s_cls"] / eta) if r["s_cls"] > eta else 0.0
            rows.append({"cell_id": cid, "seed": int(seed), "t_cls": tc, **r,
                         "dt_lo": e / hi if hi > 0 else math.nan,
                         "dt_hi": e / lo if lo > 0 else math.nan})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS), skipped


def _consistent(t: pd.DataFrame, m: float) -> pd.Series:
    """Member agrees with the prediction: dt within [(1 - m) dt_lo, (1 + m) dt_hi] up to one
    logging interval (dt_lo = dt_hi = 0 is "no plateau": dt within one interval of 0)."""
    return (t["dt"] >= (1 - m) * t["dt_lo"] - t["tol"]) & (
        t["dt"] <= (1 + m) * t["dt_hi"] + t["tol"]
    )


def judge_dln_lazy_rich(ctx: Context, s: dict) -> dict:
    eta, m = float(s["dln_eta_abs"]), float(s["dln_rate_margin"])
    t, skipped = knob_table(ctx, eta)
    # a censored member says T_rep > horizon: a miss if the prediction ended before it
    late = (t["status"] == "censored") & (t["horizon"] > (1 + m) * t["dt_hi"])
    t.loc[late, ["status", "dt"]] = ["fired", np.inf]
    fired = t[t["status"] == "fired"].copy()
    counted = counted_text(
        {"members without T_cls(eps_star)": int((t["status"] == "no T_cls").sum()),
         "still above eta at a last log inside the predicted window":
             int((t["status"] == "censored").sum()),
         "still above eta past it (misses)": int(late.sum()),
         f"cells without S ({', '.join(skipped)})": len(skipped)}
    )  # fmt: skip
    if len(fired) < s["min_runs"]:
        return ctx.record(INCONCLUSIVE, f"{len(fired)} plain-GD members with S measured after "
                          f"T_cls{counted}")  # fmt: skip
    fired["ok"] = _consistent(fired, m)
    fired["lazy"] = fired["s_cls"] > eta
    per = fired.groupby("cell_id").agg(
        s_cls=("s_cls", "median"), dt=("dt", "median"), dt_lo=("dt_lo", "median"),
        dt_hi=("dt_hi", "median"), ok=("ok", "all"), lazy=("lazy", "all"),
        mixed=("lazy", lambda v: 0 < v.sum() < len(v)), n=("ok", "size"),
    )  # fmt: skip
    sides = {"lazy": int(per["lazy"].sum()), "rich": int((~per["lazy"] & ~per["mixed"]).sum())}
    text = "; ".join(
        f"{cid}: S(T_cls) {fmt(r['s_cls'])}, T_rep - T_cls {fmt(r['dt'])} against "
        + (f"[{fmt(r['dt_lo'])}, {fmt(r['dt_hi'])}]" if r["dt_hi"] > 0 else "0 (no plateau)")
        + ("" if r["ok"] else " MISSED")
        for cid, r in per.iterrows()
    )
    if not per["ok"].all():
        verdict = FAIL
    elif sides["lazy"] and sides["rich"]:
        verdict = PASS
    else:
        verdict = INCONCLUSIVE
        text = (
            f"only {'lazy' if sides['lazy'] else 'rich'} cells (S(T_cls) on one side of eta); "
            + text
        )
    ev = (
        f"spurious fraction S against eta = {eta:g}: {int(per['ok'].sum())}/{len(per)} plain-GD "
        f"cells within [(1 - {m:g}) ln(S(T_cls)/eta)/(2 L wd lr), (1 + {m:g}) ln(S(T_cls)/eta)/"
        f"(2 wd lr)] (one log interval of slack; {sides['lazy']} lazy, {sides['rich']} rich): "
        f"{text}{counted}"
    )
    details = {cid: {k: (bool(v) if k in ("ok", "lazy", "mixed") else float(v))
                     for k, v in r.items()} for cid, r in per.iterrows()}  # fmt: skip
    return ctx.record(verdict, ev, per_cell=details, late_members=int(late.sum()))


SPECS = (
    ClaimSpec(
        id="dln_lazy_rich",
        statement="Lazy-rich knob (GD): S = ||A P_perp||^2 / ||A||^2 falls below eta after "
        "ln(S(T_cls) / eta) / rate.",
        section="Prop. 4.3 with App. F.4; docs/science.md 6, 9 (lazy vs rich regime)",
        scope=GD,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=("dln_eta_abs", "dln_rate_margin", "min_runs"),
        rule=lambda s: (
            f"per plain-GD member: T_rep = first log after T_cls(eps_star) from which S < "
            f"{s['dln_eta_abs']:g} stays; PASS if in every cell each member's T_rep - T_cls lies "
            f"within [(1 - {s['dln_rate_margin']:g}) ln(S(T_cls)/eta) / (2 L wd lr), "
            f"(1 + {s['dln_rate_margin']:g}) ln(S(T_cls)/eta) / (2 wd lr)] (0 when S(T_cls) < "
            "eta) up to one logging interval and the study has cells on both sides of eta; FAIL "
            "if any cell misses; members without T_cls or still above eta at the end excluded "
            "and counted"
        ),
        judge=judge_dln_lazy_rich,
        order=110,
    ),
)
