"""Prop. 4.2: early in training the head's gradient dominates the embedding's, so the head fits
first. Decided on the freeze-E ablation (issue 24 item 6): cells trained with E held at its init
(`frozen_blocks: [E]`) against their unfrozen twins (the same params otherwise): if the head
fits first, freezing E barely delays T_cls. Raw gradient ratios are Prop. 4.2's own quantity
only under plain GD (under AdamW the update ratio ~ ||E|| / ||U|| is the init convention);
they are reported for GD cells, AdamW's relative update sizes beside them."""

from __future__ import annotations

import json

import numpy as np

from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.results import clock_times, gen_clock, measure_rows, pick_level

# params that name a cell or its ablation, not its training: twins differ only in these
_NOT_TWIN_KEYS = {"study", "grid", "cell_id", "cell_hash", "group_id", "frozen_blocks"}


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
    """Per run: median gradient ratio U/E (plain-GD cells only), relative displacement ratio and
    update-size ratio over steps [1, T_cls(grad_window_eps)]."""
    clocks = ctx.clocks
    level = pick_level(clocks, "cls", s["grad_window_eps"])
    t_win = clock_times(clocks, "cls", level).set_index(["cell_id", "seed"])["step"]
    ratios, moves, updates = {}, {}, {}
    params = {cid: p for cid, p, _ds in ctx.datasets}
    for cid, ds in ctx.runs():
        if "grad_norm" not in ds or not {"U", "E"} <= {str(b) for b in ds["block"].values}:
            continue
        gd = params.get(cid, {}).get("optimizer") == "sgd"
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
            if np.isfinite(v) and gd:
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


def freeze_pairs(ctx: Context) -> tuple[list[tuple[str, str | None]], dict[str, dict]]:
    """(frozen-E cell, its unfrozen twin or None) for every cell in scope trained with exactly
    E frozen, and the cells' params; the twin has the same params but no frozen blocks."""
    ids = set(ctx.scope_ids)
    params = {cid: p for cid, p, _ds in ctx.datasets if cid in ids}

    def key(p: dict) -> str:
        return json.dumps({k: v for k, v in p.items() if k not in _NOT_TWIN_KEYS},
                          sort_keys=True, default=str)  # fmt: skip

    plain = {key(p): cid for cid, p in params.items() if not p.get("frozen_blocks")}
    frozen = [cid for cid, p in params.items() if sorted(p.get("frozen_blocks") or []) == ["E"]]
    return [(cid, plain.get(key(params[cid]))) for cid in frozen], params


def _ablation(ctx: Context, s: dict, pairs, params) -> tuple[float, dict, dict]:
    """Per seed of every (frozen, twin) pair: T_cls(cls_eps) frozen / twin (inf where the frozen
    run never fits, skipped where the twin does not), and whether each generalised."""
    level = pick_level(ctx.clocks, "cls", s["cls_eps"])
    t_cls = clock_times(ctx.clocks, "cls", level).set_index(["cell_id", "seed"])["step"]
    gclock, glevel = gen_clock(ctx.clocks, s["gen_acc_level"])
    t_gen = clock_times(ctx.clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    ratios, gen = {}, {"clock": f"{gclock}@{glevel}", "frozen": [], "twin": []}
    for frozen, twin in pairs:
        if twin is None:
            continue
        for seed in params[frozen].get("seeds", []):
            a = float(t_cls.get((frozen, int(seed)), np.nan))
            b = float(t_cls.get((twin, int(seed)), np.nan))
            gen["frozen"].append(bool(np.isfinite(t_gen.get((frozen, int(seed)), np.nan))))
            gen["twin"].append(bool(np.isfinite(t_gen.get((twin, int(seed)), np.nan))))
            if np.isfinite(b) and b > 0:
                ratios[f"{frozen}/seed={int(seed)}"] = a / b if np.isfinite(a) else np.inf
    return level if level is not None else s["cls_eps"], ratios, gen


def judge_grad_hierarchy(ctx: Context, s: dict) -> dict:
    pairs, params = freeze_pairs(ctx)
    win_level, grads, moves, updates = _per_run(ctx, s)
    side = _side_evidence(win_level, grads, moves, updates)
    details = {"gd_gradient_ratios": grads, "relative_displacement": moves,
               "update_ratio": updates}  # fmt: skip
    if not pairs:
        why = (
            "no freeze-E ablation in the study: add a relu_embed cell with frozen_blocks: [E] "
            "whose params otherwise equal one of its cells (e.g. config/paper.yaml's grid "
            "relu_freeze_e, the main cell at weight decay 1.0)"
        )
        return ctx.record(INCONCLUSIVE, why + side, **details)
    orphans = [f for f, t in pairs if t is None]
    level, ratios, gen = _ablation(ctx, s, pairs, params)
    tol = 1.0 + s["freeze_e_max_delay"]
    if len(ratios) < s["min_runs"]:
        why = (
            f"{len(ratios)} freeze-E runs with a twin run whose T_cls(eps={level:g}) fired "
            f"(frozen cells without an unfrozen twin of equal params: {orphans or 'none'})"
        )
        return ctx.record(INCONCLUSIVE, why + side, freeze_pairs=pairs, **details)
    v = np.array(list(ratios.values()))
    verdict = PASS if np.median(v) <= tol else FAIL
    ev = (
        f"freeze-E ablation: T_cls(eps={level:g}) with E held at its init over that of the "
        f"unfrozen twin, median {np.median(v):.3g} (range {v.min():.3g}-{v.max():.3g}) over "
        f"{v.size} runs of {len([t for _f, t in pairs if t])} pair(s), against <= {tol:g}; "
        f"generalised ({gen['clock']}) with E frozen in {sum(gen['frozen'])}/"
        f"{len(gen['frozen'])} runs, unfrozen twins in {sum(gen['twin'])}/{len(gen['twin'])}"
    )
    return ctx.record(verdict, ev + side, freeze_pairs=pairs, freeze_ratios=ratios,
                      generalised=gen, **details)  # fmt: skip


def _side_evidence(level, grads: dict, moves: dict, updates: dict) -> str:
    """What the optimisers did in the window [1, T_cls(grad_window_eps)], reported, not judged."""
    ev = ""
    for what, per_run in (
        ("Raw ||grad_U|| / ||grad_E|| (plain-GD cells only, Prop. 4.2's quantity)", grads),
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
    if ev and level is not None:
        ev += f" (window [1, T_cls(eps={level:g})])"
    return ev


SPECS = (
    ClaimSpec(
        id="grad_hierarchy",
        statement="Early in training the head receives larger gradients than the embedding, so "
        "the head fits first (Prop. 4.2).",
        section="Prop. 4.2 (||grad_U|| = ||delta|| ||h||; ||grad_E|| <= ||B|| ||W|| ||U|| ...)",
        scope=RELU,
        inputs=("cells", "clocks", "trajectories", "measures"),
        thresholds=(
            "cls_eps",
            "gen_acc_level",
            "freeze_e_max_delay",
            "grad_window_eps",
            "min_runs",
        ),  # fmt: skip
        rule=lambda s: (
            "Decided on the freeze-E ablation: for each cell trained with frozen_blocks [E] and "
            "its unfrozen twin (same params otherwise), per seed T_cls(cls_eps) frozen / twin; "
            "PASS if "
            f"the median is <= {1 + s['freeze_e_max_delay']:g} (the head fits without E moving), "
            "FAIL above; INCONCLUSIVE without such a pair (the evidence names the cell to add) or "
            f"with fewer than {s['min_runs']} runs. Reported, not judged: whether the frozen runs "
            "generalise, the raw gradient ratio ||grad_U|| / ||grad_E|| over [1, T_cls("
            f"{s['grad_window_eps']:g})] on plain-GD cells only, and the relative update sizes "
            "the optimiser makes there"
        ),
        judge=judge_grad_hierarchy,
        order=60,
    ),
)
