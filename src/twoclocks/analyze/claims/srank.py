"""The stable rank (Fig. 3; Thm 5.2/5.5), judged on one matrix fixed in advance
(`srank_claim_matrix`, default the gated map U D(a) W: the output map acting on the embeddings,
the theory's object, docs/science.md 8), with every candidate matrix reported.

Three statements: `srank_drop` (the late decrease from the post-fit peak to the end, Fig. 3's
reading), `srank_timing` (descriptive: how much of that decrease comes after T_gen) and
`srank_generalisation` (descriptive: effective dimension against test error across cells)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import stats

from twoclocks.analyze.claims.common import fmt, interp_at, seed_bootstrap
from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import (
    FAIL,
    INCONCLUSIVE,
    MEASURED,
    PASS,
    ClaimSpec,
    Context,
)
from twoclocks.analyze.results import (
    clock_times,
    gen_clock,
    nanmedian,
    pick_level,
    srank_candidates,
)


def srank_profile(sr: xr.DataArray, t_cls: float, t_gen: float) -> dict:
    """One run's stable-rank trajectory (finite logs only) read at the clocks: `start`
    (T_cls), `at_t_gen`, the post-fit `peak` (max over t >= T_cls) and its step, `end`,
    `window_drop` = 1 - at_t_gen/start, `late_drop` = 1 - end/peak and `after_fraction`, the
    share of the peak-to-end decrease that comes after T_gen (1 when the peak is after T_gen).
    Values at a clock are interpolated between the logs around it; NaN where a clock is NaN."""
    sr = sr.dropna("step")
    steps, v = sr["step"].to_numpy().astype(float), sr.to_numpy().astype(float)
    out = dict.fromkeys(("start", "at_t_gen", "peak", "peak_step", "end", "window_drop",
                         "late_drop", "after_fraction"), np.nan)  # fmt: skip
    if v.size == 0 or not np.isfinite(t_cls):
        return out
    post = steps >= t_cls
    if not post.any():
        return out
    k = int(np.argmax(np.where(post, v, -np.inf)))
    start, at_gen = interp_at(steps, v, t_cls), interp_at(steps, v, t_gen)
    out.update(start=start, at_t_gen=at_gen, peak=float(v[k]), peak_step=float(steps[k]),
               end=float(v[-1]))  # fmt: skip
    out["late_drop"] = 1.0 - out["end"] / out["peak"] if out["peak"] > 0 else np.nan
    if np.isfinite(at_gen) and start > 0:
        out["window_drop"] = 1.0 - at_gen / start
    fall = out["peak"] - out["end"]
    if np.isfinite(t_gen) and fall > 0:
        after = 1.0 if out["peak_step"] >= t_gen else (at_gen - out["end"]) / fall
        out["after_fraction"] = float(np.clip(after, 0.0, 1.0))
    return out


def _clocks(ctx: Context, s: dict):
    cls_level = pick_level(ctx.clocks, "cls", s["cls_eps"])
    gclock, glevel = gen_clock(ctx.clocks, s["gen_acc_level"])
    t_cls = clock_times(ctx.clocks, "cls", cls_level).set_index(["cell_id", "seed"])["step"]
    t_gen = clock_times(ctx.clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    return cls_level, (gclock, glevel), t_cls, t_gen


def profiles(ctx: Context, s: dict) -> tuple[dict, dict, int]:
    """(run -> profile of the pre-registered matrix, candidate -> [profiles], runs without
    T_cls); a run key is "<cell_id>/seed=<seed>"."""
    mat = s["srank_claim_matrix"]
    _lvl, _g, t_cls, t_gen = _clocks(ctx, s)
    runs, cand, n_missing = {}, {}, 0
    for cid, ds in ctx.runs():
        series = srank_candidates(ds)
        for seed in ds["seed"].to_numpy():
            a = float(t_cls.get((cid, int(seed)), np.nan))
            b = float(t_gen.get((cid, int(seed)), np.nan))
            if not np.isfinite(a):
                n_missing += 1
                continue
            for name, sr in series.items():
                p = srank_profile(sr.sel(seed=seed), a, b)
                cand.setdefault(name, []).append(p)
                if name == mat:
                    runs[f"{cid}/seed={int(seed)}"] = {**p, "cell_id": cid, "t_gen": b}
    return runs, cand, n_missing


def _summary(cand: dict) -> dict:
    keys = ("start", "at_t_gen", "window_drop", "late_drop", "after_fraction")
    return {n: {k: nanmedian([p[k] for p in ps]) for k in keys}
            for n, ps in cand.items()}  # fmt: skip


def judge_srank(ctx: Context, s: dict) -> dict:
    mat = s["srank_claim_matrix"]
    runs, cand, n_missing = profiles(ctx, s)
    summary = _summary(cand)
    others = ", ".join(f"{n} {fmt(100 * v['late_drop'])}%" for n, v in summary.items())
    late = np.array([r["late_drop"] for r in runs.values() if np.isfinite(r["late_drop"])])
    if late.size < s["min_runs"]:
        why = f"{late.size} runs with the stable rank of {mat!r} and T_cls ({n_missing} without)"
        return ctx.record(INCONCLUSIVE, why, candidates=summary)
    verdict = PASS if np.median(late) >= s["srank_min_drop"] else FAIL
    ev = (
        f"pre-registered matrix {mat!r}: median relative drop from the post-fit peak (max after "
        f"T_cls) to the end {np.median(late):.0%} over {late.size} runs (PASS if >= "
        f"{s['srank_min_drop']:.0%}; when it falls: srank_timing). Every candidate, median "
        f"post-fit peak to end: {others}"
    )
    return ctx.record(verdict, ev, runs=runs, candidates=summary)


def judge_timing(ctx: Context, s: dict) -> dict:
    mat = s["srank_claim_matrix"]
    runs, cand, n_missing = profiles(ctx, s)
    by_cell: dict[str, list[float]] = {}
    for r in runs.values():
        if np.isfinite(r["after_fraction"]):
            by_cell.setdefault(r["cell_id"], []).append(r["after_fraction"])
    n = sum(len(v) for v in by_cell.values())
    if n < s["min_runs"]:
        why = f"{n} runs with T_cls, T_gen and a post-fit decrease of {mat!r} "
        why += f" ({n_missing} without T_cls)"
        return ctx.record(INCONCLUSIVE, why)
    est, lo, hi = seed_bootstrap(by_cell, lambda g: np.median(np.concatenate(list(g.values()))))
    when = "after" if lo > 0.5 else "before" if hi < 0.5 else "about as much before as after"
    w = [r["window_drop"] for r in runs.values() if np.isfinite(r["window_drop"])]
    ev = (
        f"{mat!r}: share of the post-fit peak-to-end decrease that comes after T_gen, median "
        f"{fmt(est)} [{fmt(lo)}, {fmt(hi)}] over {n} runs: the stable rank falls mostly {when} "
        f"T_gen; on [T_cls, T_gen] it falls by a median {fmt(100 * float(np.median(w)))}% "
        "of its T_cls value; every candidate's after-T_gen share: "
        + ", ".join(f"{k} {fmt(v['after_fraction'])}" for k, v in _summary(cand).items())
    )
    return ctx.record(MEASURED, ev, after_fraction=[est, lo, hi], mostly=when,
                      per_cell={c: float(np.median(v)) for c, v in by_cell.items()})  # fmt: skip


def _rank_corr(points: dict[str, list[tuple[float, float]]]) -> tuple[float, float, float]:
    """Spearman rho over every (x, y) point, seed-bootstrap interval (points within cells)."""
    idx = {c: np.arange(len(p)) for c, p in points.items()}

    def rho(g):
        xy = np.array([points[c][int(i)] for c, ii in g.items() for i in ii])
        if len(xy) < 3 or np.ptp(xy[:, 0]) == 0 or np.ptp(xy[:, 1]) == 0:
            return np.nan
        return float(stats.spearmanr(xy[:, 0], xy[:, 1]).statistic)

    return seed_bootstrap(idx, rho)


def judge_generalisation(ctx: Context, s: dict) -> dict:
    """srank of the pre-registered matrix at T_gen against the test CE there, and at one common
    step (the median T_gen over runs) against the test error there, across cells."""
    mat = s["srank_claim_matrix"]
    runs, _cand, _n = profiles(ctx, s)
    t_common = nanmedian([r["t_gen"] for r in runs.values()])
    at_gen, common = {}, {}
    for cid, ds in ctx.runs():
        series = srank_candidates(ds).get(mat)
        if series is None or "test_loss" not in ds:
            continue
        steps = ds["step"].to_numpy().astype(float)
        for seed in ds["seed"].to_numpy():
            r = runs.get(f"{cid}/seed={int(seed)}")
            sr = series.sel(seed=seed).to_numpy().astype(float)
            ce = interp_at(steps, ds["test_loss"].sel(seed=seed).to_numpy(), r["t_gen"], True) \
                if r else np.nan  # fmt: skip
            if r and np.isfinite(r["at_t_gen"]) and np.isfinite(ce):
                at_gen.setdefault(cid, []).append((r["at_t_gen"], ce))
            err = 1.0 - ds["test_acc"].sel(seed=seed).to_numpy() if "test_acc" in ds else None
            x = interp_at(steps, sr, t_common)
            y = interp_at(steps, err, t_common) if err is not None else np.nan
            if np.isfinite(x) and np.isfinite(y):
                common.setdefault(cid, []).append((x, y))
    n_cells = sum(len(v) >= s["min_runs"] for v in at_gen.values())
    if n_cells < s["gap_min_cells"]:
        why = f"{n_cells} cells with >= {s['min_runs']} runs with {mat!r} and test CE at T_gen"
        return ctx.record(INCONCLUSIVE, why + f" (need {s['gap_min_cells']})")
    r1, r2 = _rank_corr(at_gen), _rank_corr(common)
    med = {c: [float(np.median([p[0] for p in v])), float(np.median([p[1] for p in v]))]
           for c, v in at_gen.items()}  # fmt: skip
    ev = (
        f"{mat!r} at T_gen against the test CE at T_gen: Spearman rho {fmt(r1[0])} [{fmt(r1[1])}, "
        f"{fmt(r1[2])}] over {sum(map(len, at_gen.values()))} runs in {len(at_gen)} cells; at "
        f"the common step {fmt(t_common)} (median T_gen) against the test error: rho "
        f"{fmt(r2[0])} [{fmt(r2[1])}, {fmt(r2[2])}]; per cell median (srank, test CE at T_gen): "
        + ", ".join(f"{c}: ({fmt(a)}, {fmt(b)})" for c, (a, b) in med.items())
    )
    return ctx.record(MEASURED, ev, rho_at_gen=list(r1), rho_common=list(r2), t_common=t_common,
                      per_cell=med)  # fmt: skip


_THRESHOLDS = ("cls_eps", "gen_acc_level", "srank_claim_matrix", "min_runs")
SPECS = (
    ClaimSpec(
        id="srank_drop",
        statement="The stable rank falls substantially late in training (Fig. 3).",
        section="Fig. 3 (stable rank ~36 -> ~10-12 while the test loss drops; eq. 2.3)",
        scope=RELU,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=(*_THRESHOLDS, "srank_min_drop"),
        rule=lambda s: (
            f"PASS if the stable rank of the pre-registered matrix {s['srank_claim_matrix']!r} "
            f"falls by a median >= {s['srank_min_drop']:.0%} from its post-fit peak (max after "
            f"T_cls(eps={s['cls_eps']:g})) to the end of the run (the paper's Fig. 3 read as ~36 "
            "-> ~10-12; it names no matrix and disclaims rank collapse: a figure reproduction, "
            "not a test of the theory); every candidate matrix's drop is listed"
        ),
        judge=judge_srank,
        order=30,
    ),
    ClaimSpec(
        id="srank_timing",
        statement="When the stable rank falls relative to T_gen (descriptive).",
        section="Fig. 3 (stable rank and test loss on one plot); Sec. 5",
        scope=RELU,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=_THRESHOLDS,
        rule=lambda s: (
            f"share of the post-fit peak-to-end decrease of {s['srank_claim_matrix']!r} after "
            f"T_gen (test accuracy >= {s['gen_acc_level']}), median over runs with a "
            "seed-bootstrap 95% interval: 'mostly after' when the interval is above 0.5, "
            f"'mostly before' below; MEASURED with >= {s['min_runs']} runs"
        ),
        judge=judge_timing,
        order=31,
        kind="descriptive",
    ),
    ClaimSpec(
        id="srank_generalisation",
        statement="A lower effective dimension of the output map goes with a lower test error "
        "(descriptive).",
        section="Thm 5.2/5.5 (generalisation through the stable rank / effective dimension)",
        scope=RELU,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=(*_THRESHOLDS, "gap_min_cells"),
        rule=lambda s: (
            f"Spearman rho across runs of the stable rank of {s['srank_claim_matrix']!r} at T_gen "
            "against the test CE at T_gen, and at one common step (the median T_gen) against the "
            f"test error, with seed-bootstrap 95% intervals; MEASURED with >= "
            f"{s['gap_min_cells']} cells of >= {s['min_runs']} runs"
        ),
        judge=judge_generalisation,
        order=32,
        kind="descriptive",
    ),
)
