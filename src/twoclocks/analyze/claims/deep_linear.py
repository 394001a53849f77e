"""Deep linear networks (docs/science.md 6, 9): the shared helpers of the dln_* claim modules
(plain-GD scope, the GD rate band, per-member tails) and the claims on the lazy cells' spurious
energy: the slow clock exists (descriptive, any optimiser), Prop. 4.3's ordering of shrink rates
and the law of T_rep (plain GD only). Large orthogonal init with n < d is the lazy regime; small
init the rich control (dln_lazy_rich)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from twoclocks.analyze.claims.laws import law_claim
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context, Scope
from twoclocks.analyze.laws import LOG_LIKE
from twoclocks.config import cell_default

DLN_CLOCK = "rep_spurious"
DEEP = Scope(
    "deep linear cells with the spurious-energy clock (teacher task, train_size < input_dim), "
    "any optimiser (a descriptive claim); lazy = orthogonal init and weight decay > 0",
    ("deep_linear",),
)


def plain_gd(cells: pd.DataFrame) -> pd.Series:
    """Cells trained by plain GD (optimizer sgd, momentum 0) with weight decay > 0: the dynamics
    Thm 3.5 / 4.8 speak of (docs/science.md 9). Missing keys take the schema's cell defaults."""

    def col(key: str) -> pd.Series:
        v = cells[key] if key in cells else pd.Series(None, index=cells.index, dtype=object)
        return v.where(v.notna(), cell_default(key))

    mom = pd.to_numeric(col("momentum"), errors="coerce")
    wd = pd.to_numeric(col("weight_decay"), errors="coerce")
    return (col("optimizer").astype(str) == "sgd") & (mom == 0.0) & (wd > 0.0)


GD = Scope(
    "plain-GD deep linear cells (optimizer sgd, momentum 0, weight decay > 0): the theorems' own "
    "dynamics (docs/science.md 9); AdamW, momentum and weight-decay-0 cells are OUT OF SCOPE "
    "(their numbers reported, not judged)",
    ("deep_linear",),
    ("sgd",),
    plain_gd,
)


def counted_text(counts: dict[str, int]) -> str:
    """ "; excluded and counted: n what, ..." for the nonzero counts ("" when all are 0)."""
    parts = [f"{n} {what}" for what, n in counts.items() if n]
    return f"; excluded and counted: {', '.join(parts)}" if parts else ""


def cell_params(cells: pd.DataFrame, cell_id: str) -> dict:
    """The cell table's row of `cell_id` as a dict (empty if absent)."""
    row = cells[cells["cell_id"].astype(str) == str(cell_id)]
    return {} if row.empty else row.iloc[0].to_dict()


def gd_rate_band(params: dict) -> tuple[float, float]:
    """Per-step decay rates of an energy that no loss gradient holds, under GD with layerwise
    weight decay (App. F.4): (2 wd lr, 2 L wd lr), each in the exact per-step form
    -2 ln(1 - lr wd) (times the depth L for balanced factors, p = 2/L); NaN where lr, weight
    decay or depth is missing."""
    vals = [pd.to_numeric(params.get(k), errors="coerce") for k in ("lr", "weight_decay", "depth")]
    lr, wd, depth = (float(v) if v is not None else math.nan for v in vals)
    if not all(np.isfinite([lr, wd, depth])) or not 0 < lr * wd < 1:
        return math.nan, math.nan
    lo = -2.0 * math.log1p(-lr * wd)
    return lo, lo * depth


def member_tails(clocks: pd.DataFrame, cell_ids: list[str]) -> pd.DataFrame:
    """One row per (cell_id, seed) of `rep_spurious`: t_cls_ref, g_ref and the member's tail fit
    (tail_law, tail_timescale in steps; `rate` = 1 / timescale where the tail is exponential)."""
    cols = ["cell_id", "seed", "t_cls_ref", "g_ref", "tail_law", "tail_timescale", "rate"]
    if clocks is None or clocks.empty or "clock" not in clocks:
        return pd.DataFrame(columns=cols)
    df = clocks[(clocks["clock"] == DLN_CLOCK) & clocks["cell_id"].astype(str).isin(cell_ids)]
    for flag in ("pre_fit", "diverged"):
        if flag in df:
            df = df[~df[flag].fillna(False).astype(bool)]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.drop_duplicates(["cell_id", "seed"]).copy()
    for c in ("tail_law", "tail_timescale", "g_ref"):
        if c not in df:
            df[c] = "" if c == "tail_law" else np.nan
    df["cell_id"] = df["cell_id"].astype(str)
    df["tail_law"] = df["tail_law"].fillna("").astype(str)
    b = pd.to_numeric(df["tail_timescale"], errors="coerce").to_numpy(float)
    with np.errstate(all="ignore"):
        df["rate"] = np.where((df["tail_law"] == "exp") & (b > 0), 1.0 / b, np.nan)
    return df[cols].sort_values(["cell_id", "seed"]).reset_index(drop=True)


def spurious_fraction(ds: xr.Dataset) -> xr.DataArray | None:
    """S (seed, step) = spurious_energy / ||A||_F^2 (the sum of squared singular values of A): the
    scale-free spurious fraction; None where the store lacks either variable."""
    if "spurious_energy" not in ds or "singular_values" not in ds:
        return None
    total = (ds["singular_values"].astype(np.float64) ** 2).sum("sv")
    return (ds["spurious_energy"] / total.where(total > 0)).transpose("seed", "step")


def at_time(steps: np.ndarray, v: np.ndarray, t: float) -> float:
    """v interpolated at step t (NaN where t is not finite or v has < 2 finite logs)."""
    fin = np.isfinite(v)
    if not np.isfinite(t) or fin.sum() < 2:
        return math.nan
    return float(np.interp(t, steps[fin], v[fin]))


def s_at_cls(ctx: Context) -> dict[str, float]:
    """Deep linear cell id -> median over members of S(T_cls(eps_star)) (cells with S and a
    rep_spurious clock; members without T_cls left out)."""
    tails = member_tails(ctx.clocks, [cid for cid, _p, _d in ctx.datasets])
    out = {}
    for cid, _params, ds in ctx.datasets:
        frac = spurious_fraction(ds)
        t_cls = tails[tails["cell_id"] == cid].set_index("seed")["t_cls_ref"]
        if frac is None or t_cls.empty:
            continue
        steps = ds["step"].values.astype(np.float64)
        vals = [at_time(steps, frac.values[i].astype(np.float64), float(t_cls.get(seed, np.nan)))
                for i, seed in enumerate(ds["seed"].values)]  # fmt: skip
        if np.isfinite(vals).any():
            out[cid] = float(np.nanmedian(vals))
    return out


def dln_groups(
    clocks: pd.DataFrame, cells: pd.DataFrame, s_cls: dict | None = None, eta_abs: float = 0.0
) -> dict[str, list[str]]:
    """Deep linear cells with a `rep_spurious` clock: `lazy` (weight decay > 0 and S(T_cls) above
    `eta_abs`), `wd0` (orthogonal init, no weight decay) and `rich` (the rest). Where S(T_cls) is
    not known (`s_cls`: cell id -> S(T_cls), from the trajectories) the init decides: orthogonal
    = lazy, any other init (e.g. small uniform) = rich."""
    if clocks is None or clocks.empty or "clock" not in clocks:
        return {"lazy": [], "wd0": [], "rich": []}
    have = set(clocks.loc[clocks["clock"] == DLN_CLOCK, "cell_id"].astype(str))
    dl = cells[(cells["model"] == "deep_linear") & cells["cell_id"].astype(str).isin(have)]
    scheme = dl["init_scheme"] if "init_scheme" in dl else pd.Series("", index=dl.index)
    ortho = scheme.fillna("").astype(str) == "orthogonal"
    wd = pd.to_numeric(dl["weight_decay"], errors="coerce") if "weight_decay" in dl else 0 * ortho
    wd = wd.fillna(0.0)
    ids = dl["cell_id"].astype(str)
    known = ids.map(lambda c: (s_cls or {}).get(c, math.nan)).astype(float)
    lazy_init = known.gt(eta_abs).where(known.notna(), ortho).astype(bool)
    return {
        "lazy": sorted(ids[lazy_init & (wd > 0)]),
        "wd0": sorted(ids[ortho & (wd <= 0)]),
        "rich": sorted(ids[~lazy_init & (wd > 0)]),
    }


def lazy_cells(ctx: Context, s: dict) -> list[str]:
    """The lazy cells of `dln_groups`, split by S(T_cls) against `dln_eta_abs` where known."""
    return dln_groups(ctx.clocks, ctx.cells, s_at_cls(ctx), float(s["dln_eta_abs"]))["lazy"]


_dln_groups = dln_groups  # the old private name


def spurious_ratios(clocks: pd.DataFrame, cell_ids: list[str], eta: float) -> pd.DataFrame:
    """Per run T_rep(eta) / T_cls(eps_star) on `rep_spurious` (level nearest `eta`); `ratio` NaN
    where either clock never fired (censored) or the level is unresolved, `cls_censored` True
    where T_cls never fired (such a run has no ratio, never 0). Columns cell_id, seed, level,
    t_rep, t_cls, ratio, g_ref (raw spurious energy at T_cls), cls_censored."""
    cols = ["cell_id", "seed", "level", "t_rep", "t_cls", "ratio", "g_ref", "cls_censored"]
    df = clocks[
        (clocks["clock"] == DLN_CLOCK)
        & clocks["cell_id"].astype(str).isin(cell_ids)
        & ~clocks["pre_fit"].fillna(False).astype(bool)
        & ~clocks["diverged"].fillna(False).astype(bool)
    ]
    if df.empty:
        return pd.DataFrame(columns=cols)
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
                        "t_cls": t_cls, "ratio": ratio, "g_ref": df["g_ref"].to_numpy(float),
                        "cls_censored": ~(t_cls > 0)})  # fmt: skip
    return out.sort_values(["cell_id", "seed"]).reset_index(drop=True)


def judge_deep_linear(ctx: Context, s: dict) -> dict:
    lazy = lazy_cells(ctx, s)
    if not lazy:
        return ctx.record(
            INCONCLUSIVE,
            "no deep linear cells in the lazy regime (rep_spurious clock, weight decay > 0, "
            f"S(T_cls) > {s['dln_eta_abs']:g}) in this study",
        )
    runs = spurious_ratios(ctx.clocks, lazy, float(s["dln_eta"]))
    n_cls = int(runs["cls_censored"].sum())
    n_rep = int((~runs["cls_censored"] & runs["ratio"].isna()).sum())
    counted = counted_text(
        {
            "runs without T_cls(eps_star)": n_cls,
            "runs whose T_rep never fired or is unresolved": n_rep,
        }
    )
    n_ok = int(runs["ratio"].notna().sum())
    if n_ok < s["min_runs"]:
        return ctx.record(
            INCONCLUSIVE, f"{n_ok} lazy runs where {DLN_CLOCK} fired{counted}",
            cls_censored_runs=n_cls, rep_censored_runs=n_rep,
        )  # fmt: skip
    per_cell = runs.dropna(subset=["ratio"]).groupby("cell_id")["ratio"].median()
    med = float(np.median(per_cell))
    verdict = PASS if med >= s["dln_min_ratio"] else FAIL
    ev = (
        f"{DLN_CLOCK} at eta={runs['level'].iloc[0]:g}: median over {len(per_cell)} lazy cells of "
        f"the per-cell median T_rep/T_cls(eps_star) = {med:.3g} (range {per_cell.min():.3g}-"
        f"{per_cell.max():.3g}){counted}; per cell: "
        + ", ".join(f"{k}: {v:.3g}" for k, v in per_cell.items())
    )
    return ctx.record(
        verdict, ev, per_cell={k: float(v) for k, v in per_cell.items()},
        cls_censored_runs=n_cls, rep_censored_runs=n_rep,
    )  # fmt: skip


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
    lazy = set(lazy_cells(ctx, s)) & set(ctx.scope_ids)
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
        why = f"{len(rhos)} lazy plain-GD deep linear runs with >= 3 resolved singular values"
        return ctx.record(INCONCLUSIVE, why)
    med = float(np.median(list(rhos.values())))
    verdict = PASS if med >= s["dln_sv_min_rho"] else FAIL
    ev = (
        f"last {s['late_fraction']:.0%} of logged steps: median over {len(rhos)} lazy GD runs of "
        f"Spearman rho(rank from the largest, relative shrink rate) = {med:.3g} (min "
        f"{min(rhos.values()):.3g}); rates exactly ordered in {ordered}/{len(rhos)} runs"
    )
    return ctx.record(verdict, ev, rho=rhos)


def judge_dln_rep_law(ctx: Context, s: dict) -> dict:
    """The laws stage's decision on rep_spurious (a known zero) over the lazy GD cells, with the
    calibration's veto (claims/laws.py `law_claim`); fits.json's AIC choice decides nothing."""
    lazy = set(lazy_cells(ctx, s)) & set(ctx.scope_ids)
    return law_claim(ctx, s, DLN_CLOCK, LOG_LIKE, cells=sorted(lazy))


SPECS = (
    ClaimSpec(
        id="deep_linear",
        statement="Lazy deep linear networks (n < d, weight decay > 0, S(T_cls) above the "
        "absolute level): the spurious-energy clock fires well after the classifier clock.",
        section="Sec. 4 (Prop. 4.3, eq. 4.2); docs/science.md 6",
        scope=DEEP,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=("dln_eta", "dln_min_ratio", "dln_eta_abs", "min_runs"),
        rule=lambda s: (
            "PASS if, over lazy deep linear cells (n < d, weight decay > 0, S(T_cls) > "
            f"{s['dln_eta_abs']:g}; orthogonal init where S is not logged), the median of "
            "each cell's median T_rep(rep_spurious, eta="
            f"{s['dln_eta']:g}) / T_cls(eps_star) >= {s['dln_min_ratio']:g}; runs where T_cls or "
            "T_rep never fired are excluded and counted, never a ratio of 0"
        ),
        judge=judge_deep_linear,
        order=90,
    ),
    ClaimSpec(
        id="small_sv_shrink_faster",
        statement="Prop. 4.3: late in training, smaller singular values of the end-to-end map "
        "shrink at faster relative rates.",
        section="Prop. 4.3 (small singular values shrink harder under the Schatten penalty)",
        scope=GD,
        inputs=("cells", "clocks", "trajectories"),
        thresholds=("late_fraction", "dln_sv_min_rho", "dln_eta_abs", "min_runs"),
        rule=lambda s: (
            "PASS if the median over lazy plain-GD runs of Spearman rho(rank from "
            "the largest singular value of A, relative shrink rate over the last "
            f"{s['late_fraction']:.0%} of steps) >= {s['dln_sv_min_rho']:g}"
        ),
        judge=judge_small_sv_shrink_faster,
        order=120,
    ),
    ClaimSpec(
        id="dln_rep_law",
        statement="Lazy deep linear networks under GD: T_rep on the spurious energy is "
        "logarithmic in 1/eta (an exponential tail, theta = 1/2).",
        section="Thm 4.8/4.9 at theta = 1/2 (the boundary case); docs/science.md 6",
        scope=GD,
        inputs=("cells", "clocks", "fits", "laws", "trajectories"),
        thresholds=("dln_eta_abs", "law_drift_margin"),
        rule=lambda s: (
            "PASS if the laws stage decides log-like (slope drift within "
            f"+-{s['law_drift_margin']:.3g} e-folds) for rep_spurious in more than half of the "
            "lazy plain-GD cells, FAIL if polynomial; INCONCLUSIVE otherwise or where the "
            "study's calibration shows > 5% confident wrong answers (docs/science.md 6)"
        ),
        judge=judge_dln_rep_law,
        order=130,
    ),
)
