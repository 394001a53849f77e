"""The measures table (runs/<cell>/measures.parquet): what the replay stage measured, long form.

Torch-free, so the read model (`analyze.results`) can read it. One row per (cell_id, seed,
measure, anchor, ref_step, step) with one float64 `value`:

- ``gate_drift`` / ``gate_drift_weighted``: fraction of training-set (sample, unit) gates whose
  state at snapshot ``step`` differs from snapshot ``ref_step`` (ref_step <= step; the weighted
  one counts each last-layer unit by its share of the logits at ``ref_step``), every pair of
  weight snapshots, so any window [T_cls, T_gen] is read without re-running the model;
- ``displacement_<block>``: ||X(step) - X(0)||_F / ||X(0)||_F of weight block X (U, E);
- ``fourier_gap_snapshot``: energy of snap_E outside its top ``fourier_keep`` frequencies;
- ``reduction_*`` (only with analysis.reduction): the frozen-gate reduction's relative
  divergence, relative test/train-CE gaps, null-normalised test-CE error
  (``reduction_test_ce_error``, see `reduction_rows`), the real network's log test-CE drop since
  t0 (``reduction_test_ce_drop``) and the real network's gate drift since t0
  (``reduction_gate_drift``) per (anchor, step) with ``ref_step`` = t0, and per seed its
  ``reduction_t_cls`` / ``reduction_t_gen`` (``step`` -1);
- ``unmeasured``: a measurement the store did not allow, with the reason in ``note`` (value NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

MEASURE_COLUMNS = ("cell_id", "seed", "measure", "anchor", "ref_step", "step", "value", "note")
DTYPES = {
    "cell_id": object,
    "seed": "int64",
    "measure": object,
    "anchor": object,
    "ref_step": "int64",
    "step": "int64",
    "value": "float64",
    "note": object,
}
REDUCTION_GAPS = {  # measure -> (frozen variable, real variable) of the reduce stage's store
    "reduction_test_ce_gap": ("frozen_test_loss", "real_test_loss"),
    "reduction_train_ce_gap": ("frozen_train_loss", "real_train_loss"),
}


def empty_measures() -> pd.DataFrame:
    """A measures table with no rows (a store without snapshots measures nothing)."""
    return frame([])


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts with MEASURE_COLUMNS; anchor/ref_step optional) as a typed measures table."""
    filled = [{"anchor": "", "ref_step": -1, "step": -1, "note": "", **r} for r in rows]
    df = pd.DataFrame(filled, columns=list(MEASURE_COLUMNS))
    return df.astype(DTYPES)


def unmeasured(cell_id: str, what: str, why: str) -> dict:
    """A row saying that `what` could not be measured on this store, and why."""
    return {"cell_id": cell_id, "seed": -1, "measure": "unmeasured", "anchor": what,
            "value": np.nan, "note": why}  # fmt: skip


def reduction_rows(cell_id: str, red: xr.Dataset) -> list[dict]:
    """Measures-table rows of one cell's frozen-gate reduction (`replay.frozen_gates`): per seed
    its T_cls and T_gen, and per (anchor, seed) with an anchor t0 >= 0, at every step after t0:
    the relative divergence, the relative test- and train-CE gaps |CE_frozen - CE_real| /
    CE_real, the test-CE error against the null |ln CE_frozen - ln CE_real| / |ln CE_real(t0) -
    ln CE_real| (1 for a model left at theta(t0), 0 for exact tracking; CE_real(t0) at the first
    logged step >= t0, t0 itself in stores that log it), its denominator's signed value ln
    CE_real(t0) - ln CE_real and, when the store has it, the real
    network's gate drift since t0 (a store without trajectories, nothing to reduce, gives only
    the clock rows)."""
    seeds = [int(x) for x in red["seed"].to_numpy()]
    rows = []
    for name in ("t_cls", "t_gen"):
        values = red[name].to_numpy()
        rows += [{"cell_id": cell_id, "seed": s, "measure": f"reduction_{name}",
                  "value": float(v)} for s, v in zip(seeds, values, strict=True)]  # fmt: skip
    if "divergence" not in red:
        return rows
    steps = red["step"].to_numpy()
    series = {"reduction_divergence": red["divergence"].to_numpy()}
    for measure, (frozen, real) in REDUCTION_GAPS.items():
        f, r = red[frozen].to_numpy(), red[real].to_numpy()[None]
        series[measure] = np.abs(f - r) / r
    if "gate_drift" in red:
        series["reduction_gate_drift"] = red["gate_drift"].to_numpy()
    log_real = np.log(red["real_test_loss"].to_numpy())
    log_err = np.abs(np.log(red["frozen_test_loss"].to_numpy()) - log_real[None])
    for k, anchor in enumerate(red["anchor"].to_numpy()):
        for i, seed in enumerate(seeds):
            t0 = int(red["t0"].to_numpy()[k, i])
            if t0 < 0:
                continue
            after = steps > t0
            at_t0 = int(np.searchsorted(steps, t0))  # first logged step >= t0
            ref = log_real[i, min(at_t0, steps.size - 1)]
            drop = ref - log_real[i]  # the real network's log test-CE drop since t0
            with np.errstate(divide="ignore", invalid="ignore"):
                err = log_err[k, i] / np.abs(drop)
            for measure, v in (("reduction_test_ce_error", err), ("reduction_test_ce_drop", drop)):
                rows += [{"cell_id": cell_id, "seed": seed, "measure": measure,
                          "anchor": str(anchor), "ref_step": t0, "step": int(s),
                          "value": float(x)}
                         for s, x in zip(steps[after], v[after], strict=True)]  # fmt: skip
            for measure, v in series.items():
                rows += [{"cell_id": cell_id, "seed": seed, "measure": measure,
                          "anchor": str(anchor), "ref_step": t0, "step": int(s),
                          "value": float(x)}
                         for s, x in zip(steps[after], v[k, i, after], strict=True)]  # fmt: skip
    return rows
