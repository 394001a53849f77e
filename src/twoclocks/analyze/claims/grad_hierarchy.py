"""Prop. 4.2: early in training the head's gradient dominates the embedding's (raw gradients,
with the relative update sizes AdamW actually makes reported beside them)."""

from __future__ import annotations

import numpy as np

from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.results import clock_times, measure_rows, pick_level


def displacement_before(ctx: Context, cid: str, block: str, seeds, hi: np.ndarray) -> np.ndarray:
    """Per member: ||X(b) - X(0)||_F / ||X(0)||_F of weight block X at the last weight snapshot
    b with 0 < b <= hi (NaN if none): how far the optimiser moved the block, relative to its
    size, by the end of the window; read from the replay stage's ``displacement_<block>``."""
    rows = measure_rows(ctx.measures, cid, f"displacement_{block}")
    out = np.full(len(seeds), np.nan)
    for i, seed in enumerate(seeds):
        m = rows[rows["seed"] == seed]
        steps, values = m["step"].to_numpy(), m["value"].to_numpy()
        k = np.flatnonzero((steps > 0) & (steps <= hi[i]))
        if np.isfinite(hi[i]) and k.size:
            out[i] = values[int(k[-1])]
    return out


def _per_run(ctx: Context, s: dict):
    """Per run: median gradient ratio U/E, relative displacement ratio and update-size ratio
    over steps [1, T_cls(grad_window_eps)]."""
    clocks = ctx.clocks
    level = pick_level(clocks, "cls", s["grad_window_eps"])
    t_win = clock_times(clocks, "cls", level).set_index(["cell_id", "seed"])["step"]
    ratios, moves, updates = {}, {}, {}
    for cid, ds in ctx.runs():
        if "grad_norm" not in ds or not {"U", "E"} <= {str(b) for b in ds["block"].values}:
            continue
        seeds = [int(x) for x in ds["seed"].to_numpy()]
        hi = np.array([t_win.get((cid, x), np.nan) for x in seeds], dtype=float)
        steps = ds["step"].to_numpy()
        g = ds["grad_norm"]
        r = (g.sel(block="U") / g.sel(block="E")).transpose("seed", "step").to_numpy()
        ur = None
        if "update_ratio" in ds:  # per-step relative update sizes, as the optimiser moves them
            u = ds["update_ratio"]
            ur = (u.sel(block="U") / u.sel(block="E")).transpose("seed", "step").to_numpy()
        for i, seed in enumerate(seeds):
            inside = (steps >= 1) & (steps <= hi[i])
            v = np.nanmedian(r[i, inside]) if inside.any() else np.nan
            if np.isfinite(v):
                ratios[f"{cid}/seed={seed}"] = float(v)
            w = np.nanmedian(ur[i, inside]) if ur is not None and inside.any() else np.nan
            if np.isfinite(w):
                updates[f"{cid}/seed={seed}"] = float(w)
        du = displacement_before(ctx, cid, "U", seeds, hi)
        de = displacement_before(ctx, cid, "E", seeds, hi)
        for seed, a, b in zip(seeds, du, de, strict=True):
            if np.isfinite(a) and np.isfinite(b) and b > 0:
                moves[f"{cid}/seed={seed}"] = float(a / b)
    return level, ratios, moves, updates


def judge_grad_hierarchy(ctx: Context, s: dict) -> dict:
    level, ratios, moves, updates = _per_run(ctx, s)
    if len(ratios) < s["min_runs"]:
        why = f"{len(ratios)} runs with grad norms and T_cls(eps={s['grad_window_eps']:g})"
        return ctx.record(INCONCLUSIVE, why)
    vals = np.array(list(ratios.values()))
    frac = float(np.mean(vals > 1))
    verdict = (
        PASS
        if np.median(vals) > 1 and frac >= 2 / 3
        else FAIL
        if np.median(vals) < 1
        else INCONCLUSIVE
    )
    ev = (
        f"median of ||grad_U||/||grad_E|| over steps [1, T_cls(eps={level:g})] per run: "
        f"median {np.median(vals):.3g} over {vals.size} runs, > 1 in {frac:.0%}"
    )
    for what, per_run in (
        (
            "As the optimiser moves them: relative displacement ||dU||/||U(0)|| over "
            "||dE||/||E(0)|| from step 0 to the last snapshot in the window",
            moves,
        ),
        (
            "Per-step relative update size ||dU||/||U|| over ||dE||/||E|| in the same window "
            "(`update_ratio`)",
            updates,
        ),
    ):
        if per_run:
            v = np.array(list(per_run.values()))
            share = f"> 1 in {np.mean(v > 1):.0%} of {v.size} runs"
            ev += f". {what}, median {np.median(v):.3g} ({share})"
    return ctx.record(
        verdict,
        ev,
        ratios=ratios,
        relative_displacement=moves,
        update_ratio=updates,
    )


SPECS = (
    ClaimSpec(
        id="grad_hierarchy",
        statement="Early in training the head receives larger gradients than the embedding "
        "(Prop. 4.2).",
        section="Prop. 4.2 (||grad_U|| = ||delta|| ||h||; ||grad_E|| <= ||B|| ||W|| ||U|| ...)",
        scope=RELU,
        inputs=("cells", "clocks", "trajectories", "measures"),
        thresholds=("grad_window_eps", "min_runs"),
        rule=lambda s: (
            "PASS if ||grad_U|| / ||grad_E|| over steps [1, T_cls(eps="
            f"{s['grad_window_eps']:g})] has median > 1 and is > 1 in >= 2/3 of runs; FAIL if the "
            "median < 1 (Prop. 4.2 as stated, raw gradients; the evidence adds the relative "
            "displacement ||dU||/||U|| over ||dE||/||E|| that AdamW makes in the same window)"
        ),
        judge=judge_grad_hierarchy,
        order=60,
    ),
)
