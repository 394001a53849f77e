"""Deep linear networks in the lazy regime (docs/science.md 6): the slow clock on the spurious
energy, its 1/(wd lr) scaling, the controls, Prop. 4.3's ordering of shrink rates and the law of
T_rep. Large orthogonal init with n < d is the lazy regime; small init the rich control."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from twoclocks.analyze.claims.common import fmt, interval, not_ok
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context, Scope
from twoclocks.analyze.results import fit_param, law_records, parse_json

DLN_CLOCK = "rep_spurious"
DEEP = Scope(
    "deep linear cells with the spurious-energy clock (teacher task, train_size < input_dim); "
    "lazy = orthogonal init and weight decay > 0, controls = weight decay 0 or another init",
    ("deep_linear",),
)


def _dln_groups(clocks: pd.DataFrame, cells: pd.DataFrame) -> dict[str, list[str]]:
    """Deep linear cells with a `rep_spurious` clock: `lazy` (orthogonal init, weight decay > 0),
    `wd0` (orthogonal init, no weight decay) and `rich` (any other init, e.g. small uniform)."""
    if clocks is None or clocks.empty or "clock" not in clocks:
        return {"lazy": [], "wd0": [], "rich": []}
    have = set(clocks.loc[clocks["clock"] == DLN_CLOCK, "cell_id"].astype(str))
    dl = cells[(cells["model"] == "deep_linear") & cells["cell_id"].astype(str).isin(have)]
    scheme = dl["init_scheme"] if "init_scheme" in dl else pd.Series("", index=dl.index)
    ortho = scheme.fillna("").astype(str) == "orthogonal"
    wd = pd.to_numeric(dl["weight_decay"], errors="coerce") if "weight_decay" in dl else 0 * ortho
    wd = wd.fillna(0.0)
    ids = dl["cell_id"].astype(str)
    return {
        "lazy": sorted(ids[ortho & (wd > 0)]),
        "wd0": sorted(ids[ortho & (wd <= 0)]),
        "rich": sorted(ids[~ortho]),
    }


def spurious_ratios(clocks: pd.DataFrame, cell_ids: list[str], eta: float) -> pd.DataFrame:
    """Per run T_rep(eta) / T_cls(eps_star) on `rep_spurious` (level nearest `eta`); `ratio` NaN
    where the clock never fired (censored) or the level is unresolved. Columns cell_id, seed,
    level, t_rep, t_cls, ratio, g_ref (raw spurious energy at T_cls)."""
    df = clocks[
        (clocks["clock"] == DLN_CLOCK)
        & clocks["cell_id"].astype(str).isin(cell_ids)
        & ~clocks["pre_fit"].fillna(False).astype(bool)
        & ~clocks["diverged"].fillna(False).astype(bool)
    ]
    if df.empty:
        return pd.DataFrame(
            columns=["cell_id", "seed", "level", "t_rep", "t_cls", "ratio", "g_ref"]
        )
    levels = np.unique(df["level"].to_numpy(float))
    level = float(levels[np.argmin(np.abs(np.log(levels / eta)))])
    df = df[np.isclose(df["level"].to_numpy(float), level, rtol=1e-9, atol=0)]
    fired = ~df["censored"].astype(bool) & ~df["unresolved"].fillna(True).astype(bool)
    t_cls = df["t_cls_ref"].to_numpy(float)
    t_rep = np.where(fired, df["step"].to_numpy(float), np.nan)
    with np.errstate(all="ignore"):
        ratio = t_rep / np.where(t_cls > 0, t_cls, np.nan)
    out = pd.DataFrame({"cell_id": df["cell_id"].astype(str).to_numpy(),
                        "seed": df["seed"].to_numpy(), "level": level, "t_rep": t_rep,
                        "t_cls": t_cls, "ratio": ratio,
                        "g_ref": df["g_ref"].to_numpy(float)})  # fmt: skip
    return out.sort_values(["cell_id", "seed"]).reset_index(drop=True)


def _per_cell_ratio(runs: pd.DataFrame) -> pd.Series:
    """Median ratio per cell over its fired runs; a cell where no run fired gets 0 (no clock)."""
    med = runs.groupby("cell_id")["ratio"].median()
    return med.fillna(0.0)


def judge_deep_linear(ctx: Context, s: dict) -> dict:
    clocks, cells = ctx.clocks, ctx.cells
    lazy = _dln_groups(clocks, cells)["lazy"]
    if not lazy:
        return ctx.record(
            INCONCLUSIVE,
            "no deep linear cells with the "
            "spurious-energy clock (orthogonal init, teacher with train_size < "
            "input_dim, weight decay > 0) in this study",
        )
    runs = spurious_ratios(clocks, lazy, float(s["dln_eta"]))
    if runs["ratio"].notna().sum() < s["min_runs"]:
        return ctx.record(
            INCONCLUSIVE,
            f"{int(runs['ratio'].notna().sum())} lazy runs where {DLN_CLOCK} fired",
        )
    per_cell = _per_cell_ratio(runs)
    med = float(np.median(per_cell))
    verdict = PASS if med >= s["dln_min_ratio"] else FAIL
    n_cens = int(runs["ratio"].isna().sum())
    ev = (
        f"{DLN_CLOCK} at eta={runs['level'].iloc[0]:g}: median over {len(per_cell)} lazy cells of "
        f"the per-cell median T_rep/T_cls(eps_star) = {med:.3g} (range {per_cell.min():.3g}-"
        f"{per_cell.max():.3g}; {n_cens} of {len(runs)} runs did not fire); per cell: "
        + ", ".join(f"{k}: {v:.3g}" for k, v in per_cell.items())
    )
    return ctx.record(verdict, ev, per_cell={k: float(v) for k, v in per_cell.items()})


def judge_dln_rate_scaling(ctx: Context, s: dict) -> dict:
    fits, clocks, cells = ctx.fits, ctx.clocks, ctx.cells
    lazy = set(_dln_groups(clocks, cells)["lazy"])
    recs = [
        r
        for r in (fits or {}).get("scaling") or []
        if r.get("clock") == DLN_CLOCK
        and r.get("axis") == "weight_decay"
        and parse_json(r.get("group"), {}).get("init_scheme", "orthogonal") == "orthogonal"
    ]
    if not lazy or not recs:
        return ctx.record(
            INCONCLUSIVE,
            f"no {DLN_CLOCK} scaling fit against weight_decay over lazy cells "
            "(needs >= 3 positive weight decays per sweep)",
        )
    ok = [r for r in recs if r.get("status") == "ok"]
    if not ok:
        why = "; ".join(f"{r.get('group')}: {r.get('reason')}" for r in recs)
        return ctx.record(INCONCLUSIVE, f"no ok scaling fit ({why})")
    holds = [
        fit_param(r, "exponent", "ci_low") <= -1.0 <= fit_param(r, "exponent", "ci_high")
        for r in ok
    ]
    verdict = PASS if all(holds) else FAIL
    ev = (
        f"{DLN_CLOCK} at eta={fmt(ok[0].get('level'))}: exponent of T_rep against weight decay "
        f"holds -1 in {sum(holds)}/{len(ok)} lazy sweeps with an ok fit; per sweep: "
        + ", ".join(f"{r.get('group')}: {interval(r, 'exponent')}" for r in ok)
    )
    details = {
        str(r.get("group")): {
            k: fit_param(r, "exponent", k) for k in ("estimate", "ci_low", "ci_high")
        }
        for r in ok
    }
    return ctx.record(verdict, ev, sweeps=details)


def judge_dln_controls(ctx: Context, s: dict) -> dict:
    clocks, cells = ctx.clocks, ctx.cells
    groups = _dln_groups(clocks, cells)
    controls = groups["wd0"] + groups["rich"]
    if not controls:
        return ctx.record(
            INCONCLUSIVE,
            "no weight-decay-0 or small-init deep linear cells with the spurious-energy clock",
        )
    runs = spurious_ratios(clocks, controls, float(s["dln_eta"]))
    per_cell = _per_cell_ratio(runs)
    g_ref = runs.groupby("cell_id")["g_ref"].median()
    slow = [k for k, v in per_cell.items() if v >= s["dln_min_ratio"]]
    verdict = FAIL if slow else PASS
    kind = {c: ("wd=0" if c in groups["wd0"] else "small init") for c in controls}
    ev = (
        f"{len(slow)}/{len(per_cell)} control cells show a slow clock (median T_rep/T_cls >= "
        f"{s['dln_min_ratio']:g} at eta={runs['level'].iloc[0]:g}); per cell (ratio 0 = never "
        "fired; spurious energy at T_cls): "
        + ", ".join(
            f"{k} [{kind.get(k, '?')}]: {v:.3g} (G={fmt(g_ref.get(k, math.nan))})"
            for k, v in per_cell.items()
        )
    )
    return ctx.record(verdict, ev, per_cell={k: float(v) for k, v in per_cell.items()})


def _late_shrink_rates(ds: xr.Dataset, late_fraction: float) -> np.ndarray:
    """(seeds, sv) relative shrink rates -d log s_i / dt over the last `late_fraction` of the
    logged steps (two-point difference, per step); NaN where s_i is below 1e-10 s_1 at either
    end (numerically zero)."""
    sv = ds["singular_values"].transpose("seed", "step", "sv").values.astype(np.float64)
    steps = ds["step"].values.astype(np.float64)
    n = len(steps)
    i0 = min(n - 2, int(np.floor((1.0 - late_fraction) * (n - 1))))
    a, b = sv[:, i0, :], sv[:, -1, :]
    ok = (a > 1e-10 * a[:, :1]) & (b > 1e-10 * b[:, :1])
    with np.errstate(all="ignore"):
        rate = (np.log(a) - np.log(b)) / (steps[-1] - steps[i0])
    return np.where(ok, rate, np.nan)


def judge_small_sv_shrink_faster(ctx: Context, s: dict) -> dict:
    clocks, cells = ctx.clocks, ctx.cells
    lazy = set(_dln_groups(clocks, cells)["lazy"])
    rhos, ordered = {}, 0
    for cid, _params, ds in ctx.datasets:
        if cid not in lazy or "singular_values" not in ds or ds.sizes.get("step", 0) < 4:
            continue
        rates = _late_shrink_rates(ds, float(s["late_fraction"]))
        for i, seed in enumerate(ds["seed"].values):
            r = rates[i]
            keep = np.isfinite(r)
            if keep.sum() < 3:
                continue
            rank = np.arange(len(r))[keep]  # 0 = largest singular value
            rhos[f"{cid}#{int(seed)}"] = float(stats.spearmanr(rank, r[keep])[0])
            ordered += bool(np.all(np.diff(r[keep]) >= 0))
    if len(rhos) < s["min_runs"]:
        why = f"{len(rhos)} lazy deep linear runs with >= 3 resolved singular values"
        return ctx.record(INCONCLUSIVE, why)
    med = float(np.median(list(rhos.values())))
    verdict = PASS if med >= s["dln_sv_min_rho"] else FAIL
    ev = (
        f"last {s['late_fraction']:.0%} of logged steps: median over {len(rhos)} lazy runs of "
        f"Spearman rho(rank from the largest, relative shrink rate) = {med:.3g} (min "
        f"{min(rhos.values()):.3g}); rates exactly ordered in {ordered}/{len(rhos)} runs"
    )
    return ctx.record(verdict, ev, rho=rhos)


def judge_dln_rep_law(ctx: Context, s: dict) -> dict:
    fits, clocks, cells = ctx.fits, ctx.clocks, ctx.cells
    lazy = set(_dln_groups(clocks, cells)["lazy"])
    recs = {k: r for k, r in law_records(fits, DLN_CLOCK).items() if k in lazy}
    ok = {k: r for k, r in recs.items() if r.get("status") == "ok"}
    if not ok:
        return ctx.record(INCONCLUSIVE, not_ok(recs, DLN_CLOCK))
    logs = sorted(k for k, r in ok.items() if r.get("preferred") == "log")
    verdict = PASS if len(logs) > len(ok) / 2 else FAIL
    ev = (
        f"{DLN_CLOCK}: law selection chose logarithmic in {len(logs)}/{len(ok)} lazy cells with "
        f"an ok fit, power in {len(ok) - len(logs)} ({len(recs) - len(ok)} insufficient); per "
        "cell: "
        + ", ".join(
            f"{k}: "
            + (f"log, b = {interval(r, 'b')}" if r.get("preferred") == "log"
               else f"power, k = {interval(r, 'k')}")
            for k, r in ok.items()
        )
    )  # fmt: skip
    details = {k: {"law": r.get("preferred"), "b": fit_param(r, "b"), "k": fit_param(r, "k"),
                   "delta_aic": fit_param(r, "delta_aic")} for k, r in recs.items()}  # fmt: skip
    return ctx.record(verdict, ev, fits=details)


SPECS = (
    ClaimSpec(
        id="deep_linear",
        statement="In deep linear networks in the lazy regime (orthogonal init, n < d, weight "
        "decay > 0) the representation clock on the spurious energy fires well after the "
        "classifier clock.",
        section="Sec. 4 (Prop. 4.3, eq. 4.2); docs/science.md 6",
        scope=DEEP,
        inputs=("cells", "clocks"),
        thresholds=("dln_eta", "dln_min_ratio", "min_runs"),
        rule=lambda s: (
            "PASS if, over lazy deep linear cells (orthogonal init, n < d, weight "
            "decay > 0), the median of each cell's median T_rep(rep_spurious, eta="
            f"{s['dln_eta']:g}) / T_cls(eps_star) >= {s['dln_min_ratio']:g} (a cell where no run "
            "fired counts as 0)"
        ),
        judge=judge_deep_linear,
        order=90,
    ),
    ClaimSpec(
        id="dln_rate_scaling",
        statement="In the lazy regime T_rep scales as 1/(weight decay * lr): the exponent of "
        "T_rep against weight decay (lr fixed per sweep) is -1.",
        section="Prop. 4.3 (ds_i/dt = g_i - lambda p s_i^(p-1)); docs/science.md 6",
        scope=DEEP,
        inputs=("cells", "clocks", "fits"),
        thresholds=(),
        rule=lambda s: (
            "PASS if in every lazy sweep with an ok scaling fit the interval of "
            "the exponent of T_rep(rep_spurious) against weight decay (lr fixed) holds -1"
        ),
        judge=judge_dln_rate_scaling,
        order=100,
    ),
    ClaimSpec(
        id="dln_controls",
        statement="Controls: without weight decay, or from a small (rich-regime) init, the "
        "spurious-energy clock shows no slow clock (the instrument does not invent one).",
        section="docs/science.md 6 (rich regime: no slow clock expected)",
        scope=DEEP,
        inputs=("cells", "clocks"),
        thresholds=("dln_eta", "dln_min_ratio"),
        rule=lambda s: (
            "PASS if no weight-decay-0 or small-init cell has a median "
            f"T_rep(rep_spurious, eta={s['dln_eta']:g}) / T_cls(eps_star) >= {s['dln_min_ratio']:g}"
        ),
        judge=judge_dln_controls,
        order=110,
    ),
    ClaimSpec(
        id="small_sv_shrink_faster",
        statement="Prop. 4.3: late in training the singular values of the end-to-end map shrink "
        "at relative rates ordered smallest-fastest.",
        section="Prop. 4.3 (small singular values shrink harder under the Schatten penalty)",
        scope=DEEP,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=("late_fraction", "dln_sv_min_rho", "min_runs"),
        rule=lambda s: (
            "PASS if the median over lazy runs of Spearman rho(rank from "
            "the largest singular value of A, relative shrink rate over the last "
            f"{s['late_fraction']:.0%} of steps) >= {s['dln_sv_min_rho']:g}"
        ),
        judge=judge_small_sv_shrink_faster,
        order=120,
    ),
    ClaimSpec(
        id="dln_rep_law",
        statement="Lazy deep linear networks: T_rep on the spurious energy is logarithmic in "
        "1/eta (an exponential tail, theta = 1/2; docs/science.md 6), as chosen by the law "
        "selection.",
        section="Thm 4.8/4.9 at theta = 1/2 (the boundary case); docs/science.md 6",
        scope=DEEP,
        inputs=("cells", "clocks", "fits"),
        thresholds=(),
        rule=lambda s: (
            "PASS if the law selection chooses the log law for rep_spurious in more "
            "than half of the lazy cells with an ok fit (exponential tail; docs/science.md 6)"
        ),
        judge=judge_dln_rep_law,
        order=130,
    ),
)
