"""After grokking the embedding energy concentrates in few Fourier frequencies (Fig. 2; the
Fourier rule gap of App. F.5)."""

from __future__ import annotations

import numpy as np

from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.results import measure_rows


def _first_last(ctx: Context, cid: str, ds, seed_i: int, s: dict):
    """(gap at the first, at the last log, source) of one member: the logged `fourier_gap`,
    else the replay stage's per-snapshot energy of E outside its top `fourier_keep`
    frequencies (first and last snapshot)."""
    if "fourier_gap" in ds:
        fg = ds["fourier_gap"].isel(seed=seed_i).dropna("step")
        if fg.size:
            return float(fg[0]), float(fg[-1]), "fourier_gap"
        return np.nan, np.nan, None
    keep = s["fourier_keep"]
    rows = measure_rows(ctx.measures, cid, f"fourier_gap_top{int(keep)}")
    rows = rows[rows["seed"] == int(ds["seed"].to_numpy()[seed_i])]
    if rows.empty:
        return np.nan, np.nan, None
    vals = rows.sort_values("step")["value"].to_numpy()
    return float(vals[0]), float(vals[-1]), f"snap_E (top {keep} frequencies)"


def judge_fourier(ctx: Context, s: dict) -> dict:
    gaps, source = {}, None
    for cid, ds in ctx.runs():
        for seed_i, seed in enumerate(ds["seed"].to_numpy()):
            first, last, src = _first_last(ctx, cid, ds, seed_i, s)
            source = src or source
            if np.isfinite(first) and np.isfinite(last):
                gaps[f"{cid}/seed={int(seed)}"] = (first, last)
    if len(gaps) < s["min_runs"]:
        return ctx.record(INCONCLUSIVE, f"{len(gaps)} runs with Fourier data")
    first = np.array([g[0] for g in gaps.values()])
    last = np.array([g[1] for g in gaps.values()])
    ok = (last <= s["fourier_gap_max"]) & (last <= 0.5 * first)
    verdict = PASS if ok.mean() > 0.5 else FAIL
    ev = (
        f"energy outside the key frequencies ({source}): median {np.median(first):.3g} at init "
        f"-> {np.median(last):.3g} at the end; concentrated in {int(ok.sum())}/{ok.size} runs "
        f"(final <= {s['fourier_gap_max']} and halved)"
    )
    return ctx.record(verdict, ev, gaps={k: list(v) for k, v in gaps.items()})


SPECS = (
    ClaimSpec(
        id="fourier",
        statement="After grokking the embedding energy concentrates in few Fourier frequencies.",
        section="Fig. 2 (embeddings re-ordered by a generator of Z/p are cyclic); App. F.5",
        scope=RELU,
        inputs=("cells", "trajectories", "measures"),
        thresholds=("fourier_gap_max", "fourier_keep", "min_runs"),
        rule=lambda s: (
            f"PASS if in more than half of the runs the final Fourier gap "
            f"<= {s['fourier_gap_max']:g} and at most half its initial value"
        ),
        judge=judge_fourier,
        order=80,
    ),
)
