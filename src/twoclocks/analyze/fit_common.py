"""What every fit shares: weighted regressions, the seed bootstrap, parameter intervals, and
the fit records with their row counts (docs/design.md "Fits output").

Used by the law, ratio and scaling fits (`fits`), the tail summary (`tails`) and the KL
exponent (`kl`); it imports no other analysis module, so any of them may use it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# ---------------------------------------------------------------- regression primitives


def wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted simple regressions y = a + b x, broadcast over leading dims: a, b, weighted SSR."""
    with np.errstate(all="ignore"):
        sw = w.sum(-1)
        mx = (w * x).sum(-1) / sw
        my = (w * y).sum(-1) / sw
        dx = x - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        b = (w * dx * (y - my[..., None])).sum(-1) / sxx
        b = np.where(sxx > 1e-12 * np.maximum(np.abs(mx) ** 2 * sw, 1e-300), b, np.nan)
        a = my - b * mx
        ssr = (w * (y - a[..., None] - b[..., None] * x) ** 2).sum(-1)
    return a, b, ssr


def boot_counts(groups: np.ndarray, strata: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Seed-bootstrap draw counts (1 + samples, n_points); row 0 is the sample itself (all 1).

    Resampling groups (seeds) with replacement, within strata (cells), equals weighting each
    point by its group's draw count, so every bootstrap refit is one vectorised weighted fit.
    The generator is seeded (`bootstrap_seed`): the same clocks give the same intervals.
    """
    rng = np.random.default_rng(seed)
    codes, first, gidx = np.unique(groups, return_index=True, return_inverse=True)
    counts = np.zeros((samples, len(codes)))
    gstrat = np.asarray(strata)[first]
    for st in np.unique(gstrat):
        members = np.flatnonzero(gstrat == st)
        draws = rng.integers(0, len(members), size=(samples, len(members)))
        np.add.at(counts, (np.arange(samples)[:, None], members[draws]), 1.0)
    return np.concatenate([np.ones((1, len(groups))), counts[:, gidx]], axis=0)


def param(estimate, boot=None, ci_level: float = 0.95, se=math.nan) -> dict:
    """A parameter with its seed-bootstrap interval.

    `boot_low`/`boot_high` are the percentile interval of the bootstrap replicates; the reported
    interval `ci_low`/`ci_high` is that interval widened, where needed, to contain the estimate.
    (A percentile interval need not contain the full-sample estimate: when the replicates are
    all equal up to rounding, it misses it by an ulp; with few seeds it can miss it outright.)
    """
    est = float(estimate)
    lo = hi = math.nan
    if boot is not None:
        b = np.asarray(boot, dtype=float)
        b = b[np.isfinite(b)]
        if len(b) >= 2:
            q = 100 * (1 - ci_level) / 2
            lo, hi = (float(v) for v in np.percentile(b, [q, 100 - q]))
            if not math.isfinite(se):
                se = float(b.std(ddof=1))
    ok = math.isfinite(lo) and math.isfinite(hi) and math.isfinite(est)
    return {
        "estimate": est,
        "se": float(se),
        "ci_low": min(lo, est) if ok else math.nan,
        "ci_high": max(hi, est) if ok else math.nan,
        "boot_low": lo,
        "boot_high": hi,
    }


# ---------------------------------------------------------------- bookkeeping


def counts(rows: pd.DataFrame) -> dict:
    """Seed and row counts of one (cell, clock[, level]) slice; fractions over usable rows."""
    main = rows[~rows["pre_fit"].astype(bool)] if "pre_fit" in rows else rows
    usable = main[~main["diverged"] & ~main["below_floor"]]
    n_rows = len(usable)
    n_cens = int(usable["censored"].sum())
    key = ["cell_id", "seed"] if "cell_id" in rows.columns else ["seed"]
    return {
        "n_seeds": int(rows[key].drop_duplicates().shape[0]),
        "n_diverged": int(rows.loc[rows["diverged"], key].drop_duplicates().shape[0]),
        "n_rows": n_rows,
        "n_censored": n_cens,
        "censored_fraction": n_cens / n_rows if n_rows else math.nan,
        "n_below_floor": int(main["below_floor"].sum()),
        # fired rows whose quantity later left the level (clocks.relapsed); still fitted
        "n_relapsed": int(usable["relapse"].fillna(False).astype(bool).sum())
        if "relapse" in usable
        else 0,
    }


def record(fit: str, clock: str, counts: dict, **kw) -> dict:
    """One fit's record (a fits.json entry): `ok` unless `status` says otherwise; keywords
    level, axis, group, status, reason, preferred, stats, params (nothing else)."""
    rec = {
        "fit": fit,
        "clock": clock,
        "level": kw.pop("level", math.nan),
        "axis": kw.pop("axis", ""),
        "group": kw.pop("group", ""),
        "status": kw.pop("status", "ok"),
        "reason": kw.pop("reason", ""),
        "preferred": kw.pop("preferred", ""),
        "counts": counts,
        "stats": {"n_points": 0, "n_levels": 0, "r2": math.nan, "aic": math.nan, "bic": math.nan},
        "params": {},
    }
    rec["stats"].update(kw.pop("stats", {}))
    rec["params"].update(kw.pop("params", {}))
    assert not kw, kw
    return rec


def insufficient(fit: str, clock: str, counts: dict, reason: str, **kw) -> dict:
    """A record with status `insufficient` and the reason (its numbers judge nothing)."""
    return record(fit, clock, counts, status="insufficient", reason=reason, **kw)


def uncensored(rows: pd.DataFrame, time_col: str) -> pd.DataFrame:
    """Rows a fit may use: fired after the fit (not pre_fit), not diverged, above the CE floor."""
    ok = ~rows["diverged"] & ~rows["below_floor"] & ~rows["censored"] & rows[time_col].notna()
    for flag in ("pre_fit", "unresolved"):
        if flag in rows:
            ok &= ~rows[flag].astype(bool)
    return rows[ok]


def level_match(rows: pd.DataFrame, level: float) -> pd.DataFrame:
    return rows[np.isclose(rows["level"].to_numpy(float), level, rtol=1e-9, atol=0.0)]


def nearest_level(rows: pd.DataFrame, ref: float) -> float:
    """The level of `rows` nearest to the reference in log space (the reference if present)."""
    levels = np.unique(rows["level"].to_numpy(float))
    levels = levels[levels > 0]
    if len(levels) == 0 or ref <= 0:
        return math.nan
    return float(levels[np.argmin(np.abs(np.log(levels) - math.log(ref)))])
