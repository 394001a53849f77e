"""Delayed accuracy is the representation clock not yet finished (Thm 5.6): the normalised
structural gap at T_gen should be about the same in every cell, and its coupling to the
classifier level, eta ~ eps^q, is estimated (descriptive).

The gap is the study's `rep_clock` (the raw gap of `analyze.clocks.structural_gaps`, with the
analysis settings fits.json records), normalised from its post-fit peak to the asymptote the
clocks table holds per member: g = (G(T_gen) - g_inf) / (max_{t >= T_cls*} G - g_inf)
(docs/science.md 7: ReLU gaps rise after T_cls before they fall)."""

from __future__ import annotations

import numpy as np

from twoclocks.analyze.claims.common import fmt, interp_at, seed_bootstrap, three_way
from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.clocks import structural_gaps
from twoclocks.analyze.results import clock_times, gen_clock

GAP_SETTINGS = ("srank_matrix",)  # the analysis settings that change a raw gap


def _members(clocks, clock: str) -> dict[tuple[str, int], tuple[float, float]]:
    """(cell_id, seed) -> (t_cls_ref, g_inf) of `clock`'s post-fit rows in the clocks table."""
    if clocks is None or clocks.empty or "g_inf" not in clocks:
        return {}
    df = clocks[clocks["clock"] == clock]
    if "pre_fit" in df:
        df = df[~df["pre_fit"].fillna(False).astype(bool)]
    first = df.groupby(["cell_id", "seed"])[["t_cls_ref", "g_inf"]].first()
    return {(str(c), int(s)): (float(r.t_cls_ref), float(r.g_inf))
            for (c, s), r in first.iterrows()}  # fmt: skip


def normalised_gap_at(steps, gap, t_cls: float, g_inf: float, t: float) -> float:
    """(G(t) - g_inf) / (post-fit peak - g_inf), the peak = max G over logs >= t_cls."""
    steps, gap = np.asarray(steps, float), np.asarray(gap, float)
    post = gap[(steps >= t_cls) & np.isfinite(gap)]
    if post.size == 0 or not np.isfinite(g_inf):
        return np.nan
    scale = post.max() - g_inf
    at = interp_at(steps, gap, t)
    return float((at - g_inf) / scale) if scale > 0 else np.nan


def gap_runs(ctx: Context, s: dict) -> tuple[dict[str, list[dict]], int]:
    """cell_id -> per run {seed, t_gen, gap, train_ce, test_ce} at T_gen; and the count of runs
    without T_gen or a normalisable gap (censored, never dropped silently)."""
    clock = s["rep_clock"]
    gclock, glevel = gen_clock(ctx.clocks, s["gen_acc_level"])
    t_gen = clock_times(ctx.clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    members = _members(ctx.clocks, clock)
    analysis = (ctx.fits or {}).get("settings") or {}
    settings = {k: analysis[k] for k in GAP_SETTINGS if analysis.get(k) is not None}
    out, n_missing = {}, 0
    for cid, ds in ctx.runs():
        gaps = structural_gaps(ds, settings)
        if clock not in gaps:
            continue
        series, lower = gaps[clock]
        steps = ds["step"].to_numpy()
        for seed in ds["seed"].to_numpy():
            tg = float(t_gen.get((cid, int(seed)), np.nan))
            t_cls, g_inf = members.get((cid, int(seed)), (np.nan, np.nan))
            g_inf = g_inf if np.isfinite(g_inf) else lower
            g = normalised_gap_at(steps, series.sel(seed=seed).to_numpy(), t_cls, g_inf, tg)
            if not (np.isfinite(g) and g > 0):
                n_missing += 1
                continue
            run = {"seed": int(seed), "t_gen": tg, "gap": g}
            for name in ("train_loss", "test_loss"):
                v = ds[name].sel(seed=seed).to_numpy() if name in ds else np.full(steps.size, 1.0)
                run[name] = interp_at(steps, v, tg, log=True)
            out.setdefault(cid, []).append(run)
    return out, n_missing


def _spread(groups: dict) -> float:
    """max / min of the cells' median gaps."""
    meds = [np.median(v) for v in groups.values()]
    return float(max(meds) / min(meds)) if min(meds) > 0 else np.inf


def coupling(runs: dict[str, list[dict]], against: str) -> tuple[float, float, float]:
    """q of eta ~ eps^q: OLS slope of log gap on log `against` (the train or test CE at T_gen)
    over every run, with a seed-bootstrap interval (runs resampled within cells)."""
    pairs = {
        c: [(np.log(r[against]), np.log(r["gap"])) for r in rs if r[against] > 0]
        for c, rs in runs.items()
    }
    pairs = {c: p for c, p in pairs.items() if p}
    index = {c: np.arange(len(p)) for c, p in pairs.items()}

    def slope(g: dict) -> float:
        xy = np.array([pairs[c][int(i)] for c, idx in g.items() for i in idx])
        return float(np.polyfit(xy[:, 0], xy[:, 1], 1)[0]) if np.ptp(xy[:, 0]) > 0 else np.nan

    if sum(len(p) for p in pairs.values()) < 3:
        return np.nan, np.nan, np.nan
    return seed_bootstrap(index, slope)


def judge_gap_at_gen(ctx: Context, s: dict) -> dict:
    runs, n_missing = gap_runs(ctx, s)
    cells = {c: [r["gap"] for r in rs] for c, rs in runs.items() if len(rs) >= s["min_runs"]}
    head = f"{s['rep_clock']} normalised from its post-fit peak, at T_gen"
    if len(cells) < s["gap_min_cells"]:
        why = (f"{len(cells)} cells with >= {s['min_runs']} runs that have T_gen and a "
               f"normalisable {s['rep_clock']} gap (need {s['gap_min_cells']}; {n_missing} runs "
               "censored or without the gap)")  # fmt: skip
        return ctx.record(INCONCLUSIVE, why, runs=runs)
    est, lo, hi = seed_bootstrap(cells, _spread)
    side = three_way(lo, hi, s["gap_at_gen_max_ratio"])
    verdict = {"below": PASS, "above": FAIL}.get(side, INCONCLUSIVE)
    q_train, q_test = coupling(runs, "train_loss"), coupling(runs, "test_loss")
    meds = {c: float(np.median(v)) for c, v in cells.items()}
    ev = (
        f"{head}: max/min of the cell medians {fmt(est)} [{fmt(lo)}, {fmt(hi)}] over "
        f"{len(cells)} cells (PASS if the interval is <= {s['gap_at_gen_max_ratio']:g}, FAIL if "
        f"above; {n_missing} runs censored or without the gap); per cell: "
        + ", ".join(f"{c}: {fmt(v)}" for c, v in meds.items())
        + f". Coupling eta ~ eps^q (descriptive, log-log over runs): q = {fmt(q_train[0])} "
        f"[{fmt(q_train[1])}, {fmt(q_train[2])}] on the train CE at T_gen, {fmt(q_test[0])} "
        f"[{fmt(q_test[1])}, {fmt(q_test[2])}] on the test CE"
    )
    return ctx.record(verdict, ev, ratio=[est, lo, hi], cells=meds, runs=runs,
                      q_train=list(q_train), q_test=list(q_test))  # fmt: skip


SPECS = (
    ClaimSpec(
        id="gap_at_gen",
        statement="At T_gen the representation gap has closed to about the same level in every "
        "cell (delayed accuracy = the representation clock not yet finished).",
        section="Thm 5.6 (T_gen ~ T_rep(eta) with eta ~ eps^q)",
        scope=RELU,
        inputs=("cells", "clocks", "fits", "trajectories"),
        thresholds=(
            "rep_clock",
            "gen_acc_level",
            "gap_at_gen_max_ratio",
            "gap_min_cells",
            "min_runs",
        ),  # fmt: skip
        rule=lambda s: (
            f"g = ({s['rep_clock']} at T_gen (test accuracy >= {s['gen_acc_level']}) - g_inf) "
            "/ (its post-fit peak - g_inf) per run; PASS if the seed-bootstrap 95% interval of "
            f"max/min of the cells' median g is <= {s['gap_at_gen_max_ratio']:g}, FAIL if it is "
            f"above, else INCONCLUSIVE; needs >= {s['gap_min_cells']} cells with >= "
            f"{s['min_runs']} runs; q of eta ~ eps^q reported (descriptive)"
        ),
        judge=judge_gap_at_gen,
        order=55,
    ),
)
