"""The classifier clock's premise, checked directly (Assumption 3.4, Prop. 3.6): after the
minimum train margin turns positive it grows linearly in t, at the rate nu that sets the slope
1/nu of T_cls against log(1/eps); the train CE contracts by a factor 1 - mu per step.

Read from the logged trajectories (`train_margin_min`, `train_loss`) and the cls law fit of
fits.json; nothing is refitted from the clocks."""

from __future__ import annotations

import json

import numpy as np

from twoclocks.analyze.claims.common import fmt, seed_bootstrap, three_way
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context, Scope
from twoclocks.analyze.results import fit_param, law_records

ANY_MARGIN = Scope("every cell whose store logs train_margin_min (any model, any optimiser)")


def margin_window(steps, margin, loss, eps_end: float) -> tuple[int, int] | None:
    """(i0, i1): the logs from the margin's last turn positive to the first log with train CE
    <= eps_end (the end of the record if never), both included; None when absent."""
    margin, loss = np.asarray(margin, float), np.asarray(loss, float)
    fin = np.flatnonzero(np.isfinite(margin) & np.isfinite(loss))
    if fin.size == 0:
        return None
    reached = fin[loss[fin] <= eps_end]
    i1 = int(reached[0]) if reached.size else int(fin[-1])
    idx = fin[fin <= i1]
    negative = idx[margin[idx] <= 0]
    later = idx[idx > negative[-1]] if negative.size else idx
    if later.size == 0:
        return None
    return int(later[0]), i1


def _slope(t: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(t, y, 1)[0]) if t.size >= 3 and np.ptp(t) > 0 else np.nan


def margin_run(steps, margin, loss, eps_end: float, min_logs: int) -> dict | None:
    """One run's window, margin rate nu (OLS slope, logit per step), the local slopes of the
    window's two halves (in t), their drift |s_late / s_early - 1| and the per-step contraction
    mu = 1 - (L_{k+1}/L_k)^(1/dt) between consecutive logs (Prop. 3.6); None when the window
    has fewer than `min_logs` logs."""
    win = margin_window(steps, margin, loss, eps_end)
    if win is None or win[1] - win[0] + 1 < min_logs:
        return None
    sl = slice(win[0], win[1] + 1)
    t = np.asarray(steps, float)[sl]
    m, L = np.asarray(margin, float)[sl], np.asarray(loss, float)[sl]
    ok = np.isfinite(m) & np.isfinite(L)
    t, m, L = t[ok], m[ok], L[ok]
    mid = 0.5 * (t[0] + t[-1])
    s1, s2 = _slope(t[t <= mid], m[t <= mid]), _slope(t[t >= mid], m[t >= mid])
    drift = abs(s2 / s1 - 1.0) if s1 > 0 else np.inf
    with np.errstate(all="ignore"):
        mu = 1.0 - np.exp(np.diff(np.log(L)) / np.diff(t))
    return {
        "t0": float(t[0]),
        "t_end": float(t[-1]),
        "n_logs": int(t.size),
        "nu": _slope(t, m),
        "slope_early": s1,
        "slope_late": s2,
        "drift": float(drift),
        "mu_min": float(np.nanmin(mu)),
        "mu_median": float(np.nanmedian(mu)),
        "mu_max": float(np.nanmax(mu)),
        "mu_positive_fraction": float(np.mean(mu[np.isfinite(mu)] > 0)),
    }


def _cls_slope(ctx: Context, cid: str, lr: float) -> tuple[float, float, float] | None:
    """(b, b_low, b_high) of the cell's ok cls law fit (dT/dlog(1/eps)) in steps (a fit in
    tau = lr * step is converted with the cell's constant `lr`), else None."""
    rec = law_records(ctx.fits, "cls").get(cid)
    if not rec or rec.get("status") != "ok":
        return None
    per = lr if ((ctx.fits or {}).get("settings") or {}).get("fit_time") == "tau" else 1.0
    b = tuple(fit_param(rec, "b", k) / per for k in ("estimate", "ci_low", "ci_high"))
    return b if all(np.isfinite(b)) and b[1] > 0 else None


def linearity(runs: list[dict], s: dict) -> tuple[tuple, str]:
    """(drift (median, low, high), 'linear' / 'curved' / 'undecided') of one cell's runs: the
    seed-bootstrap interval of the median drift against margin_slope_drift_max."""
    drift = seed_bootstrap({"c": [r["drift"] for r in runs]}, lambda g: np.median(g["c"]))
    shape = three_way(drift[1], drift[2], s["margin_slope_drift_max"])
    return drift, {"below": "linear", "above": "curved"}.get(shape, "undecided")


def judge_cell(runs: list[dict], b, s: dict) -> dict:
    """Linearity (seed-bootstrap interval of the median drift against the bound) and slope
    match (nu * b against [1/(1+tol), 1+tol]) of one cell's runs."""
    drift, linear = linearity(runs, s)
    nu = seed_bootstrap({"c": [r["nu"] for r in runs]}, lambda g: np.median(g["c"]))
    out = {"drift": drift, "nu": nu, "linear": linear, "n_runs": len(runs)}
    if b is None:
        return {**out, "match": "no ok cls law fit", "ratio": (np.nan,) * 3}
    tol = 1.0 + s["margin_slope_tol"]
    ratio = (nu[0] * b[0], nu[1] * b[1], nu[2] * b[2])
    if 1 / tol <= ratio[1] and ratio[2] <= tol:
        match = "match"
    elif ratio[2] < 1 / tol or ratio[1] > tol:
        match = "mismatch"
    else:
        match = "undecided"
    return {**out, "match": match, "ratio": ratio}


def _cell_verdict(c: dict) -> str:
    if c["linear"] == "curved" or c["match"] == "mismatch":
        return FAIL
    return PASS if c["linear"] == "linear" and c["match"] == "match" else INCONCLUSIVE


def margin_runs(ctx: Context, s: dict) -> tuple[dict[str, tuple[list[dict], float]], int]:
    """Per cell with >= min_runs usable windows: (its runs' `margin_run` records, its lr); and
    the number of runs without a usable window (cls_log_law reads the linearity too)."""
    cells, n_short = {}, 0
    for cid, ds in ctx.runs():
        if "train_margin_min" not in ds or "train_loss" not in ds:
            continue
        steps = ds["step"].to_numpy()
        runs = []
        for seed in ds["seed"].to_numpy():
            loss = ds["train_loss"].sel(seed=seed).to_numpy()
            floor = 10.0 * np.nanmin(loss) if np.isfinite(loss).any() else np.inf
            r = margin_run(steps, ds["train_margin_min"].sel(seed=seed).to_numpy(), loss,
                           max(s["cls_eps"], floor), s["margin_min_logs"])  # fmt: skip
            n_short += r is None
            if r is not None:
                runs.append({**r, "seed": int(seed)})
        if len(runs) >= s["min_runs"]:
            cells[cid] = (runs, float(json.loads(ds.attrs.get("cell") or "{}").get("lr", 1.0)))
    return cells, n_short


def judge_margin(ctx: Context, s: dict) -> dict:
    cells, n_short = margin_runs(ctx, s)
    per_cell = {cid: {**judge_cell(runs, _cls_slope(ctx, cid, lr), s), "runs": runs}
                for cid, (runs, lr) in cells.items()}  # fmt: skip
    if not per_cell:
        why = (f"no cell with >= {s['min_runs']} runs whose margin window (positive margin to "
               f"train CE <= {s['cls_eps']:g}) has >= {s['margin_min_logs']} logs "
               f"({n_short} runs too short or without train_margin_min)")  # fmt: skip
        return ctx.record(INCONCLUSIVE, why)
    verdicts = {cid: _cell_verdict(c) for cid, c in per_cell.items()}
    n = len(verdicts)
    n_pass, n_fail = (sum(v == x for v in verdicts.values()) for x in (PASS, FAIL))
    verdict = PASS if n_pass > n / 2 else FAIL if n_fail > n / 2 else INCONCLUSIVE
    mus = [r[k] for c in per_cell.values() for r in c["runs"] for k in ("mu_min", "mu_max")]
    mu_med = [r["mu_median"] for c in per_cell.values() for r in c["runs"]]
    mu_pos = [r["mu_positive_fraction"] for c in per_cell.values() for r in c["runs"]]
    bound = sum(c["ratio"][2] <= 1.0 for c in per_cell.values())
    cells_ev = "; ".join(
        f"{cid}: {verdicts[cid]} (drift {fmt(c['drift'][0])} [{fmt(c['drift'][1])}, "
        f"{fmt(c['drift'][2])}] -> {c['linear']}; nu {fmt(c['nu'][0])}/step, nu*b "
        f"{fmt(c['ratio'][0])} [{fmt(c['ratio'][1])}, {fmt(c['ratio'][2])}] -> {c['match']})"
        for cid, c in per_cell.items()
    )
    ev = (
        f"{n_pass}/{n} cells linear with a matching slope, {n_fail} FAIL; nu * b <= 1 (Thm "
        f"3.5's bound: the CE falls at least as fast as the minimum margin grows) in {bound}/{n} "
        f"cells (whole interval); Prop. 3.6 contraction per step mu = 1 - L(t+1)/L(t) over the "
        f"windows: median {fmt(float(np.median(mu_med)))}, range {fmt(min(mus))} to "
        f"{fmt(max(mus))}, > 0 on a median {fmt(float(np.median(mu_pos)))} of the log intervals; "
        f"{n_short} runs without a usable window; per cell: {cells_ev}"
    )
    details = {cid: {k: v for k, v in c.items()} | {"verdict": verdicts[cid]}
               for cid, c in per_cell.items()}  # fmt: skip
    return ctx.record(verdict, ev, cells=details)


def _rule(s) -> str:
    tol = 1.0 + s["margin_slope_tol"]
    return (
        "per cell, over each run's window from the last turn positive of the minimum train "
        f"margin to train CE <= {s['cls_eps']:g} (or 10x the run's lowest CE; >= "
        f"{s['margin_min_logs']} logs): linear when the seed-bootstrap 95% interval of the "
        f"median drift |s_late/s_early - 1| of the halves' OLS slopes is <= "
        f"{s['margin_slope_drift_max']:g}, curved when it is above; the slope matches when the "
        f"interval of nu * b (nu the margin's OLS rate, b = dT_cls/dlog(1/eps) of the cls law "
        f"fit) lies in [{1 / tol:.3g}, {tol:g}], mismatches when outside. A cell PASSes when "
        "linear and matching, FAILs when curved or mismatching; the claim takes the verdict of "
        f"more than half of the cells (>= {s['min_runs']} runs each), else INCONCLUSIVE; "
        "Prop. 3.6's per-step contraction mu is reported"
    )


SPECS = (
    ClaimSpec(
        id="margin_linear",
        statement="After the minimum train margin turns positive it grows linearly in t, at the "
        "rate 1/b that sets T_cls(eps) = a + b log(1/eps).",
        section="Assumption 3.4, Prop. 3.6, Thm 3.5 (L_CE <= (K-1) exp(-gamma0 - nu (t - t0)))",
        scope=ANY_MARGIN,
        inputs=("trajectories", "fits"),
        thresholds=(
            "cls_eps",
            "margin_min_logs",
            "margin_slope_drift_max",
            "margin_slope_tol",
            "min_runs",
        ),  # fmt: skip
        rule=_rule,
        judge=judge_margin,
        order=42,
    ),
)
