"""The replay stage `measure`: one cell's snapshot and model measurements into measures.parquet.

Everything the analysis needs that takes weight snapshots or the model itself is measured here
once per cell, so that clocks, claims and the report read tables only: the training-set gate
pattern at every snapshot against every earlier one (gate drift, App. F.3), each block's
displacement since init, the embedding's Fourier spectrum per snapshot and, with
`analysis.reduction`, the frozen-gate reduction's divergence (`replay.frozen_gates`, whose own
rule `reduce` runs the forks). Thresholds arrive as arguments (the rule's params).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import xarray as xr

from twoclocks.replay.snapshots import displacement_rows, fourier_rows
from twoclocks.replay.table import frame, reduction_rows, unmeasured


def measure_cell(
    ds: xr.Dataset,
    cell_id: str,
    *,
    fourier_keep: int,
    dataset: xr.Dataset | None = None,
    reduction: xr.Dataset | None = None,
) -> pd.DataFrame:
    """The measures table of one cell (replay/table.py): gate drift pairs, displacements and
    Fourier spectra from the store's weight snapshots (none without snapshots), and the
    reduction's rows when its output is given. A store whose gates cannot be recomputed (no
    ReLU gates, params that do not rebuild the dataset) gets an ``unmeasured`` row saying why."""
    from twoclocks.replay.gates import gate_rows, snapshot_gates

    rows: list[dict] = []
    if "checkpoint_step" in ds:
        try:
            steps, gates, share = snapshot_gates(ds, dataset=dataset)
            rows += gate_rows(cell_id, ds["seed"].to_numpy(), steps, gates, share)
        except (ValueError, RuntimeError) as err:
            rows.append(unmeasured(cell_id, "gate_drift", str(err)))
        rows += displacement_rows(cell_id, ds)
        rows += fourier_rows(cell_id, ds, fourier_keep)
    if reduction is not None:
        rows += reduction_rows(cell_id, reduction)
    return frame(rows)


def measure_study(
    trajectories: Mapping[str, xr.Dataset], *, fourier_keep: int, reductions=None
) -> pd.DataFrame:
    """`measure_cell` for every cell of a study (cell_id -> trajectory), one table."""
    frames = [
        measure_cell(ds, cid, fourier_keep=fourier_keep, reduction=(reductions or {}).get(cid))
        for cid, ds in sorted(trajectories.items())
    ]
    return pd.concat(frames, ignore_index=True) if frames else frame([])


def run_measure(
    store_path: str | Path,
    out_path: str | Path,
    *,
    cell_id: str,
    fourier_keep: int,
    dataset_path: str | Path | None = None,
    reduce_path: str | Path | None = None,
) -> pd.DataFrame:
    """The DAG stage `measure` of one cell: read its trajectory store (and dataset store, and
    the reduce stage's output when given), write ``out_path`` (parquet)."""
    from twoclocks.data.io import load_dataset
    from twoclocks.train.store import open_trajectory

    ds = open_trajectory(store_path).load()
    dataset = load_dataset(dataset_path) if dataset_path else None
    reduction = xr.open_zarr(reduce_path).load() if reduce_path else None
    table = measure_cell(
        ds, cell_id, fourier_keep=fourier_keep, dataset=dataset, reduction=reduction
    )
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out_path, index=False)
    return table
