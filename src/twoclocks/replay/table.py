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
  divergence and relative test/train-CE gaps per (anchor, step) with ``ref_step`` = t0, and
  per seed its ``reduction_t_cls`` / ``reduction_t_gen`` (``step`` -1).
"""

from __future__ import annotations

import pandas as pd

MEASURE_COLUMNS = ("cell_id", "seed", "measure", "anchor", "ref_step", "step", "value")
DTYPES = {
    "cell_id": object,
    "seed": "int64",
    "measure": object,
    "anchor": object,
    "ref_step": "int64",
    "step": "int64",
    "value": "float64",
}


def empty_measures() -> pd.DataFrame:
    """A measures table with no rows (a store without snapshots measures nothing)."""
    return frame([])


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts with MEASURE_COLUMNS; anchor/ref_step optional) as a typed measures table."""
    df = pd.DataFrame(rows, columns=list(MEASURE_COLUMNS))
    df["anchor"] = df["anchor"].fillna("")
    df["ref_step"] = df["ref_step"].fillna(-1)
    return df.astype(DTYPES)
