"""The tail rate of the spurious energy under plain GD (docs/science.md 6, 9; replaces the
crossing-time exponent of `dln_rate_scaling`). GD with layerwise weight decay puts the decay
rate of energy no loss gradient holds between 2 wd lr (the first layer's null-space block
alone) and 2 L wd lr (balanced factors, p = 2/L). The spurious energy is a sum of such modes
from T_cls on, so the judged rate is its slowest mode's: the late log-slope of G (a true zero,
no asymptote to fit). The clocks stage's per-member tail fit (`tail_law`, `tail_timescale`)
is reported next to it: it compares one exponential with a power law only, and a mixture of
exponentials reads as a power law there (docs/science.md 7). AdamW rates are reported, not
judged."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from twoclocks.analyze.claims.common import fmt
from twoclocks.analyze.claims.deep_linear import (
    DLN_CLOCK,
    GD,
    cell_params,
    counted_text,
    gd_rate_band,
    member_tails,
)
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context


def late_rate(steps: np.ndarray, g: np.ndarray, t_from: float, late_fraction: float) -> float:
    """-d ln G / dt (per step) by least squares over the last `late_fraction` of the window
    after `t_from`: the rate of the slowest mode once the faster ones have died out (G has a
    true zero, so no asymptote is fitted); NaN with fewer than 4 positive logs there."""
    if not np.isfinite(t_from):
        return math.nan
    start = steps[-1] - late_fraction * (steps[-1] - t_from)
    keep = (steps >= max(start, t_from)) & np.isfinite(g) & (g > 0)
    if keep.sum() < 4:
        return math.nan
    return float(-np.polyfit(steps[keep], np.log(g[keep]), 1)[0])


def _late_rates(ds, members: pd.DataFrame, late_fraction: float) -> list[float]:
    """`late_rate` of the spurious energy for each member (rows of `member_tails`) of a store."""
    if ds is None or "spurious_energy" not in ds:
        return []
    steps = ds["step"].values.astype(np.float64)
    g = ds["spurious_energy"].transpose("seed", "step").values.astype(np.float64)
    index = {int(v): i for i, v in enumerate(ds["seed"].values)}
    return [late_rate(steps, g[index[int(r.seed)]], float(r.t_cls_ref), late_fraction)
            for r in members.itertuples() if int(r.seed) in index]  # fmt: skip


def tail_rate_table(ctx: Context, cell_ids: list[str], late_fraction: float) -> pd.DataFrame:
    """Per cell: members, members without T_cls, the median late rate of the spurious energy
    (`late_rate`, per step) and its count, the band (2 wd lr, 2 L wd lr), rate / (2 wd lr), and
    the clocks stage's tail fit (members with an exponential / power tail, median 1/timescale)."""
    tails = member_tails(ctx.clocks, cell_ids)
    stores = {cid: ds for cid, _p, ds in ctx.datasets}
    rows = []
    for cid, g in tails.groupby("cell_id", sort=True):
        lo, hi = gd_rate_band(cell_params(ctx.cells, cid))
        fired = g[g["t_cls_ref"].astype(float) > 0]
        late = np.array(_late_rates(stores.get(cid), fired, late_fraction), dtype=float)
        rate = float(np.nanmedian(late)) if np.isfinite(late).any() else np.nan
        fit = float(np.nanmedian(fired["rate"])) if fired["rate"].notna().any() else np.nan
        rows.append({"cell_id": cid, "members": len(g), "cls_censored": len(g) - len(fired),
                     "n_rate": int(np.isfinite(late).sum()), "rate": rate, "rate_lo": lo,
                     "rate_hi": hi, "per_2wdlr": rate / lo if lo > 0 else np.nan,
                     "n_exp": int((fired["tail_law"] == "exp").sum()),
                     "n_power": int((fired["tail_law"] == "power").sum()),
                     "fit_rate": fit})  # fmt: skip
    return pd.DataFrame(rows)


def _cell_text(r: pd.Series) -> str:
    return (
        f"{r['cell_id']}: late rate {fmt(r['rate'])}/step = {fmt(r['per_2wdlr'])} x 2 wd lr "
        f"(band {fmt(r['rate_lo'])}-{fmt(r['rate_hi'])}; tail fit: exp {r['n_exp']} with rate "
        f"{fmt(r['fit_rate'])}, power {r['n_power']})"
    )


def judge_dln_tail_rate(ctx: Context, s: dict) -> dict:
    m, late = float(s["dln_rate_margin"]), float(s["late_fraction"])
    gd = ctx.scope_ids
    table = tail_rate_table(ctx, gd, late)
    dl = ctx.cells[ctx.cells["model"] == "deep_linear"]["cell_id"].astype(str)
    other = tail_rate_table(ctx, sorted(set(dl) - set(gd)), late)
    reported = "; ".join(
        f"{r['cell_id']}: late rate {fmt(r['rate'])}/step = {fmt(r['rate'] / r['rate_lo'])} x "
        "2 wd lr" for _, r in other.iterrows()
    )  # fmt: skip
    n_cens = int(table["cls_censored"].sum()) if len(table) else 0
    judged = table[(table["n_rate"] >= 2) & (table["rate_lo"] > 0)] if len(table) else table
    tail = counted_text(
        {"GD members without T_cls(eps_star)": n_cens,
         "GD cells with < 2 late rates or no lr": len(table) - len(judged)}
    ) + (f"; out of scope (reported, not judged): {reported}" if reported else "")  # fmt: skip
    if judged.empty or int(judged["n_rate"].sum()) < s["min_runs"]:
        return ctx.record(
            INCONCLUSIVE,
            f"no plain-GD deep linear cell with >= 2 late {DLN_CLOCK} rates" + tail,
            cls_censored_members=n_cens,
        )
    ok = (judged["rate"] >= (1 - m) * judged["rate_lo"]) & (
        judged["rate"] <= (1 + m) * judged["rate_hi"]
    )
    verdict = PASS if bool(ok.all()) else FAIL
    ev = (
        f"late {DLN_CLOCK} rate under plain GD inside [(1 - {m:g}) 2 wd lr, (1 + {m:g}) 2 L wd "
        f"lr] in {int(ok.sum())}/{len(judged)} cells; median {fmt(judged['per_2wdlr'].median())} "
        "x 2 wd lr; per cell: " + "; ".join(_cell_text(r) for _, r in judged.iterrows()) + tail
    )
    keys = ("rate", "rate_lo", "rate_hi", "per_2wdlr", "fit_rate", "n_exp", "n_power")
    return ctx.record(
        verdict,
        ev,
        per_cell={r["cell_id"]: {k: r[k] for k in keys} for _, r in judged.iterrows()},
        reported={r["cell_id"]: r["rate"] for _, r in other.iterrows()},
        cls_censored_members=n_cens,
    )


SPECS = (
    ClaimSpec(
        id="dln_tail_rate",
        statement="Plain GD: the spurious energy's slowest mode decays at 2 wd lr to "
        "2 L wd lr per step.",
        section="Prop. 4.3 with App. F.4 (tau = sum of lr); docs/science.md 6, 9",
        scope=GD,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=("dln_rate_margin", "late_fraction", "min_runs"),
        rule=lambda s: (
            "per plain-GD deep linear cell, the median over members of the late rate -d ln G/dt "
            "of G = spurious_energy (least squares over the last "
            f"{s['late_fraction']:.0%} of the window after T_cls(eps_star); G has a true zero); "
            f"PASS if every cell with >= 2 such members has a rate within "
            f"[(1 - {s['dln_rate_margin']:g}) 2 wd lr, (1 + {s['dln_rate_margin']:g}) 2 L wd lr]"
            " (2 wd lr = -2 ln(1 - lr wd)), FAIL if any has not; members without T_cls "
            "excluded and counted; the clocks stage's exp-vs-power tail fit (no two-exponential "
            "model, docs/science.md 7) is reported, not judged"
        ),
        judge=judge_dln_tail_rate,
        order=100,
    ),
)
