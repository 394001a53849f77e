"""Loss and stable-rank curves over training: the paper's Figs. 1 and 3."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from twoclocks.analyze.claims.common import interp_at
from twoclocks.analyze.claims.spec import resolve_claim_settings
from twoclocks.report.figures.common import (
    MAX_POINTS,
    FigureSkipped,
    _band_chart,
    _bands,
    _relu,
    cl,
)
from twoclocks.report.figures.registry import figure


@figure(
    "fig1_loss",
    "Train (dashed) and test (solid) cross-entropy in nats vs optimiser step, one colour per "
    "cell; line = seed mean, band = seed min-max.",
)
def fig_loss(study: Any, max_points: int = MAX_POINTS) -> alt.LayerChart:
    """Fig. 1: train and test CE vs step per cell (weight decay), log y; band = seed min-max."""
    cells = _relu(study) or cl.cell_datasets(study)
    df = _bands(cells, {"train": "train_loss", "test": "test_loss"}, max_points=max_points)
    return _band_chart(df, "Train and test loss (Fig. 1)", "cross-entropy (nats)")


@figure(
    "fig3_loss_srank",
    "Test cross-entropy (solid, left axis, log) and the stable rank of the srank_drop claim's "
    "matrix (dashed, right axis) vs step per cell; line = seed mean, band = seed min-max.",
)
def fig_loss_srank(
    study: Any,
    claim_settings: dict | None = None,
    matrix: str | None = None,
    max_points: int = MAX_POINTS,
) -> alt.LayerChart:
    """Fig. 3: test loss (log, left axis) and stable rank (right axis) vs step per cell.

    The stable rank is that of the claims' `srank_claim_matrix` (default `gated`, the
    training-set mean gated map), the series `srank_drop` judges (`results.srank_candidates`);
    a store without it shows its end-to-end map, and the title says so.
    """
    cells = _relu(study) or cl.cell_datasets(study)
    cells = [c for c in cells if cl.srank_candidates(c[2])]
    if not cells:
        raise FigureSkipped("no stable rank logged")
    claim_mat = matrix or resolve_claim_settings(claim_settings)["srank_claim_matrix"]
    have = all(claim_mat in cl.srank_candidates(ds) for _c, _p, ds in cells)
    mat = claim_mat if have else cl.srank_matrix(cells[0][2])
    if mat is None:
        raise FigureSkipped(f"no stable rank of {claim_mat!r} or of the end-to-end map")
    n_lines = 2 * len(cells)
    loss = _bands(cells, {"test loss": "test_loss"}, n_lines, max_points)
    get = {f"srank({mat})": lambda ds: cl.srank_candidates(ds)[mat]}
    srank = _bands(cells, get, n_lines, max_points)
    order = ["test loss", f"srank({mat})"]  # test loss solid, as in Fig. 1
    left = _band_chart(loss, "", "test cross-entropy (nats, log)", True, dash_order=order)
    right = _band_chart(srank, "", f"stable rank of {mat}", False, dash_order=order)
    title = f"Test loss and stable rank (Fig. 3), matrix {mat}"
    title += " (the srank_drop claim's matrix)" if have else f" (claim's {claim_mat!r} not logged)"
    return alt.layer(left, right).resolve_scale(y="independent").properties(title=title)


@figure(
    "srank_generalisation",
    "Stable rank of the srank_drop claim's matrix at T_gen (test accuracy at the claims' "
    "gen_acc_level) against the test cross-entropy there (nats, log), one point per run, one "
    "colour per cell (Thm 5.2/5.5: effective dimension against test error).",
)
def fig_srank_generalisation(
    study: Any, clocks: Any, claim_settings: dict | None = None
) -> alt.Chart:
    """Per run, the matrix's stable rank and the test CE at its own T_gen (interpolated between
    logs; log-linear for the CE), as the srank_generalisation claim reads them (the claim also
    needs T_cls). Runs that never generalise have no point; the subtitle counts them."""
    s = resolve_claim_settings(claim_settings)
    mat = s["srank_claim_matrix"]
    cells = [c for c in _relu(study) if mat in cl.srank_candidates(c[2]) and "test_loss" in c[2]]
    if not cells or clocks is None or not len(clocks):
        raise FigureSkipped(f"no ReLU run with the stable rank of {mat!r}, test loss and clocks")
    gclock, glevel = cl.gen_clock(clocks, s["gen_acc_level"])
    t_gen = cl.clock_times(clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    rows, missing = [], 0
    for cid, _params, ds in cells:
        steps = ds["step"].to_numpy().astype(float)
        sr = cl.srank_candidates(ds)[mat]
        for seed in ds["seed"].to_numpy():
            t = float(t_gen.get((cid, int(seed)), np.nan))
            x = interp_at(steps, sr.sel(seed=seed).to_numpy(), t)
            y = interp_at(steps, ds["test_loss"].sel(seed=seed).to_numpy(), t, True)
            if np.isfinite(x) and np.isfinite(y):
                rows.append({"cell": cid, "seed": int(seed), "srank": x, "test_ce": y, "t_gen": t})
            else:
                missing += 1
    if not rows:
        raise FigureSkipped(f"no run reaches {gclock} at {glevel:g} with {mat!r} logged")
    df = pd.DataFrame(rows)
    sub = f"{len(df)} runs; {missing} without T_gen (no point)" if missing else f"{len(df)} runs"
    return (
        alt.Chart(df)
        .mark_point(filled=True, size=60)
        .encode(
            x=alt.X("srank:Q", title=f"stable rank of {mat} at T_gen", scale=alt.Scale(zero=False)),
            y=alt.Y(
                "test_ce:Q",
                title="test cross-entropy at T_gen (nats, log)",
                scale=alt.Scale(type="log"),
            ),  # fmt: skip
            color=alt.Color("cell:N", title="cell"),
            tooltip=["cell", "seed", "srank", "test_ce", "t_gen"],
        )
        .properties(
            title={"text": f"Stable rank and generalisation at T_gen ({mat})", "subtitle": [sub]}
        )  # fmt: skip
    )
