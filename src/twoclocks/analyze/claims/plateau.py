"""How the grokking plateau T_gen - T_cls scales with weight decay: a power law fitted across
cells with a seed-bootstrap interval on the exponent. The paper states no exponent (it shows
only that larger weight decay groks earlier), so the claim is descriptive: it reports the
exponent and whether -1 (plateau ~ 1/weight decay, the decay time of AdamW's decoupled
weight decay 1/(lr wd)) lies in its interval."""

from __future__ import annotations

import numpy as np

from twoclocks.analyze.claims.common import fmt, gen_levels, seed_bootstrap
from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import INCONCLUSIVE, MEASURED, ClaimSpec, Context
from twoclocks.analyze.results import clock_times, pick_level


def plateaus(ctx: Context, s: dict, gclock: str, target: float) -> tuple[dict, int]:
    """cell_id -> per-seed T_gen - T_cls(cls_eps) (runs with both clocks), and the count of
    runs without them."""
    cls_level = pick_level(ctx.clocks, "cls", s["cls_eps"])
    glevel = pick_level(ctx.clocks, gclock, target, log=gclock != "gen_acc")
    a = clock_times(ctx.clocks, "cls", cls_level).set_index(["cell_id", "seed"])["step"]
    b = clock_times(ctx.clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    both = (b - a).dropna()
    scope = set(ctx.scope_ids)
    out: dict[str, list[float]] = {}
    for (cid, _seed), v in both.items():
        if cid in scope and v > 0:
            out.setdefault(str(cid), []).append(float(v))
    n_all = int(sum(c in scope for c, _ in b.index))
    return out, n_all - sum(len(v) for v in out.values())


def exponent(groups: dict, wd: dict[str, float]) -> float:
    """OLS slope of log(median plateau) on log(weight decay) over cells."""
    x = np.log([wd[c] for c in groups])
    y = np.log([np.median(v) for v in groups.values()])
    return float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else np.nan


def _groups(ctx: Context) -> list[list[str]]:
    """Cells in scope with weight decay > 0, grouped by every other varying axis."""
    cells = ctx.cells[ctx.cells["cell_id"].astype(str).isin(ctx.scope_ids)]
    if "weight_decay" not in cells:
        return []
    cells = cells[cells["weight_decay"].astype(float) > 0]
    other = [c for c in cells.columns if c not in {"cell_id", "label", "weight_decay", "model"}
             and cells[c].astype(str).nunique() > 1]  # fmt: skip
    grouped = cells.groupby(other, sort=True) if other else [(None, cells)]
    return [[str(c) for c in g["cell_id"]] for _k, g in grouped]


def judge_plateau(ctx: Context, s: dict) -> dict:
    wd = {str(r.cell_id): float(r.weight_decay) for r in ctx.cells.itertuples()
          if "weight_decay" in ctx.cells and np.isfinite(float(r.weight_decay))}  # fmt: skip
    found, parts = {}, []
    for gclock, target in gen_levels(s):
        per_cell, n_missing = plateaus(ctx, s, gclock, target)
        for cells in _groups(ctx):
            g = {c: per_cell[c] for c in cells if len(per_cell.get(c, [])) >= s["min_runs"]}
            if len({wd[c] for c in g}) < s["wd_min_cells"]:
                continue
            k = seed_bootstrap(g, lambda x, w=wd: exponent(x, w))
            holds = k[1] <= -1.0 <= k[2]
            found.setdefault(gclock, []).append({"cells": sorted(g), "exponent": list(k),
                                                 "minus_one_inside": bool(holds)})  # fmt: skip
            parts.append(
                f"{gclock}: k = {fmt(k[0])} [{fmt(k[1])}, {fmt(k[2])}] over {len(g)} weight "
                f"decays ({', '.join(sorted(g))}); -1 {'inside' if holds else 'outside'} the "
                f"interval; {n_missing} runs without both clocks"
            )
    if not found:
        why = (
            f"no group of cells with >= {s['wd_min_cells']} positive weight decays whose "
            f"runs (>= {s['min_runs']} each) reach both T_cls({s['cls_eps']:g}) and T_gen"
        )
        return ctx.record(INCONCLUSIVE, why)  # fmt: skip
    ev = "T_gen - T_cls = C wd^k (log-log OLS over the cells' medians): " + "; ".join(parts)
    return ctx.record(MEASURED, ev, fits=found)


SPECS = (
    ClaimSpec(
        id="plateau_wd_scaling",
        statement="The grokking plateau T_gen - T_cls shrinks with weight decay as a power law "
        "(exponent measured; the paper states none).",
        section="Fig. 1 and Fig. 3 (test loss drops earlier for larger lambda); descriptive",
        scope=RELU,
        inputs=("cells", "clocks"),
        thresholds=("cls_eps", "gen_acc_level", "gen_loss_level", "wd_min_cells", "min_runs"),
        rule=lambda s: (
            f"T_gen - T_cls(eps={s['cls_eps']:g}) per run, median per cell, log-log OLS against "
            f"weight decay over >= {s['wd_min_cells']} weight decays (other axes fixed; >= "
            f"{s['min_runs']} runs a cell) for each generalisation clock (test accuracy >= "
            f"{s['gen_acc_level']}, test CE <= {s['gen_loss_level']:g}); seed-bootstrap 95% "
            "interval on the exponent; MEASURED (descriptive: says whether -1 is inside)"
        ),
        judge=judge_plateau,
        order=25,
        kind="descriptive",
    ),
)
