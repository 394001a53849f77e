"""The frozen-gate reduction against the gate drift (issue 24 item 1): how far the frozen-gate
(linear) model's run departs from the real one as the real network's training-set gates move
away from their pattern at the fork t0. Read from the replay stage's measures table
(`replay.table`, rows ``reduction_*``), so it is drawn only with analysis.reduction on."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from twoclocks.report.figures.common import (
    HEIGHT,
    MAX_POINTS,
    MAX_ROWS,
    WIDTH,
    FigureSkipped,
    thin_indices,
)
from twoclocks.report.figures.registry import figure

PANELS = {  # measure -> y-axis title
    "reduction_divergence": "weight divergence ||θ_frozen − θ_real|| / ||θ_real − θ(t0)||",
    "reduction_test_ce_error": (
        "test-CE error |ln CE_frozen − ln CE_real| / |ln CE_real(t0) − ln CE_real|"
    ),
}
DRIFT = "reduction_gate_drift"


def reduction_curves(measures: pd.DataFrame | None, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """One row per (cell, seed, anchor, step) after t0 up to the reduce stage's horizon: the real
    network's gate drift since t0 and each panel's measure, thinned per line to at most
    `max_points` (and MAX_ROWS per chart); ``at_gen`` marks the last step at or before
    ceil(T_gen). Empty without the reduction's gate-drift rows."""
    cols = ["cell_id", "seed", "anchor", "step"]
    if measures is None or measures.empty or not (measures["measure"] == DRIFT).any():
        return pd.DataFrame(columns=[*cols, "drift", *PANELS, "at_gen", "line"])
    m = measures[measures["measure"].isin([DRIFT, *PANELS])]
    wide = m.pivot_table(index=cols, columns="measure", values="value", aggfunc="first")
    wide = wide.reset_index().rename(columns={DRIFT: "drift"})
    for name in PANELS:
        if name not in wide:
            wide[name] = np.nan
    t_gen = measures[measures["measure"] == "reduction_t_gen"].set_index(["cell_id", "seed"])
    wide["t_gen"] = [
        t_gen["value"].get((c, s), np.nan)
        for c, s in zip(wide["cell_id"], wide["seed"], strict=True)
    ]
    lines = wide.groupby(["cell_id", "seed", "anchor"], sort=True)
    per_line = max(10, min(max_points, MAX_ROWS // max(1, lines.ngroups)))
    out = []
    for (cid, seed, anchor), g in lines:
        g = g.sort_values("step")
        before = g["step"].to_numpy() <= np.ceil(g["t_gen"].to_numpy())
        at = int(np.flatnonzero(before)[-1]) if before.any() else -1
        at_step = int(g["step"].iloc[at]) if at >= 0 else -1
        keep = np.union1d(thin_indices(len(g), per_line), [at] if at >= 0 else [])
        g = g.iloc[keep.astype(int)].copy()
        g["at_gen"] = g["step"].to_numpy() == at_step
        g["line"] = f"{cid} seed {seed} t0={anchor}"
        out.append(g)
    return pd.concat(out, ignore_index=True)


@figure(
    "reduction_drift",
    "Frozen-gate reduction (analysis.reduction) against the gate drift: for each ReLU run and "
    "fork t0 (solid: T_cls(eps_star); dashed: mid-plateau), the real network's cumulative "
    "training-set gate drift since t0 (fraction of (train sample, hidden unit) gates off their "
    "t0 pattern, x) against, left, the relative weight divergence of the run trained from t0 "
    "with its gates frozen, ||θ_frozen − θ_real|| / ||θ_real − θ(t0)||, and, right, its test-CE "
    "error |ln CE_frozen − ln CE_real| / |ln CE_real(t0) − ln CE_real| (frozen parameters in the "
    "real network), at every reduce step from t0 to T_gen + reduction_margin (T_gen − T_cls); "
    "both are 1 for a model left at θ(t0), 0 for exact tracking; dots mark T_gen; colour = cell.",
)
def fig_reduction_drift(measures=None, max_points: int = MAX_POINTS) -> alt.HConcatChart:
    """Divergence and test-CE error of the frozen-gate run against the gate drift since t0."""
    df = reduction_curves(measures, max_points)
    if df.empty:
        raise FigureSkipped("no frozen-gate reduction with gate drift (analysis.reduction off)")
    df = df.assign(drift=df["drift"].astype(float))
    cells = list(dict.fromkeys(df["cell_id"]))
    panels = []
    for name, title in PANELS.items():
        d = df[np.isfinite(df[name].to_numpy(float))]
        base = alt.Chart(d).encode(
            x=alt.X("drift:Q", title="gate drift since t0 (fraction of train-set gates)"),
            y=alt.Y(f"{name}:Q", title=title, scale=alt.Scale(zero=True)),
            color=alt.Color("cell_id:N", sort=cells, title=None),
        )
        line = base.mark_line(strokeWidth=1.2, opacity=0.8).encode(
            strokeDash=alt.StrokeDash("anchor:N", sort=["cls", "mid"], title="t0"),
            detail="line:N",
            order="step:Q",
        )
        dots = base.transform_filter(alt.datum.at_gen).mark_point(filled=True, size=40)
        panels.append(alt.layer(line, dots).properties(width=WIDTH, height=HEIGHT))
    return alt.hconcat(*panels).properties(
        title="Frozen-gate run vs real run against the gate drift since the fork t0"
    )
