"""ReLU gate drift between weight snapshots (docs/science.md 3; App. F.3): the replay stage.

The paper's conditional ReLU corollary assumes that the activation patterns on the training set
stay fixed on the interval where the frozen-gate reduction is used ([T_cls, T_gen]); it never
claims they do. The engine logs flips between consecutive logs, a number that scales with the log
cadence and counts a flickering near-zero unit like real pattern drift. Here the drift is
cumulative and cadence-free: the gate pattern of every (training sample, hidden unit) is recomputed
from the stored weight snapshots (the model's own forward, so the same arithmetic as training)
and compared with the pattern at a reference snapshot:

- ``drift(t)``: fraction of (sample, unit) gates whose state differs from the reference;
- ``weighted(t)``: the same per unit, weighted by the unit's share of the logits at the reference,
  ``s_j = ||U[:, j]||_2 * mean_a h_j(a) / sum_k(...)`` (last hidden layer), so that units that do
  not feed the output do not count.

Resolution is the snapshot spacing (log-spaced, `logging.snapshot_count`): the reference is the
first snapshot at or after T_cls and the window ends at the last snapshot at or before T_gen.
The replay stage (`gate_rows`) records the drift of every snapshot against every earlier one,
so the claims read any window from the measures table without running the model.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import xarray as xr

from twoclocks.data.io import build_dataset, data_params
from twoclocks.train.models import model_spec


def _cell(ds: xr.Dataset) -> dict:
    cell = ds.attrs.get("cell", "{}")
    return json.loads(cell) if isinstance(cell, str) else dict(cell)


def snapshot_gates(
    ds: xr.Dataset,
    cell: dict | None = None,
    x_train: np.ndarray | None = None,
    dataset: xr.Dataset | None = None,
):
    """Gate patterns and logit shares on the training set at every weight snapshot.

    Returns ``(steps (K,), gates (S, K, n, units) bool, share (S, K, H) float64)``, where units
    are all hidden layers side by side and H is the last hidden layer's width. ``dataset`` is
    the cell's dataset store (the replay rule's input); None regenerates it from the cell's
    params. ``x_train`` defaults to its training inputs.
    Raises ValueError when the store has no snapshots or the model has no ReLU gates.
    """
    cell = _cell(ds) if cell is None else cell
    data = dataset
    if data is None:
        try:
            data = build_dataset(data_params(cell))
        except KeyError as err:
            raise ValueError(f"cell params lack {err} to regenerate the training set") from err
    if x_train is None:
        x_train = data["x_train"].values
    dim = int(data["x_train"].shape[-1]) if data["x_train"].ndim > 1 else None
    spec = model_spec(cell, dict(data.attrs), input_dim=dim)
    blocks = spec.blocks()
    missing = [b for b in blocks if f"snap_{b}" not in ds]
    if missing:
        raise ValueError(f"store has no weight snapshots of {missing}: cannot recompute gates")
    steps = ds["checkpoint_step"].values.astype(np.int64)
    x = torch.as_tensor(np.asarray(x_train), dtype=torch.int64)
    gates, shares = [], []
    with torch.no_grad():
        for k in range(steps.size):
            params = {b: torch.as_tensor(ds[f"snap_{b}"].isel(checkpoint=k).values) for b in blocks}
            fwd = spec.forward(params, x)
            if not fwd.pre:
                raise ValueError(f"model {cell.get('model')!r} has no ReLU gates")
            pre = torch.cat(fwd.pre, dim=2) if len(fwd.pre) > 1 else fwd.pre[0]
            gates.append((pre > 0).numpy())
            u_norm = params["U"].double().norm(dim=1)  # (S, H): column norms of U
            contrib = u_norm * fwd.h.double().mean(dim=1)
            total = contrib.sum(dim=1, keepdim=True)
            shares.append((contrib / torch.where(total > 0, total, 1.0)).numpy())
    return steps, np.stack(gates, axis=1), np.stack(shares, axis=1)


def gate_drift(
    steps: np.ndarray,
    gates: np.ndarray,
    share: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
) -> list[dict]:
    """Per member: cumulative gate drift on the snapshots in ``[t_start, t_end]``.

    ``gates`` (S, K, n, units) and ``share`` (S, K, H) as from `snapshot_gates`; ``t_start``,
    ``t_end`` (S,) steps (NaN = clock censored). Each record has ``ref_step``, ``end_step``,
    ``steps``, ``drift`` and ``weighted`` (per snapshot in the window, the first is 0 by
    construction), their maxima ``max_drift``/``max_weighted``, and ``n_snapshots``; a member
    whose window holds fewer than two snapshots gets ``n_snapshots`` < 2 and NaN maxima.
    """
    out = []
    n_units, h = gates.shape[-1], share.shape[-1]
    for i in range(gates.shape[0]):
        a, b = float(t_start[i]), float(t_end[i])
        rec = {"ref_step": np.nan, "end_step": np.nan, "steps": [], "drift": [], "weighted": []}
        rec.update(n_snapshots=0, max_drift=np.nan, max_weighted=np.nan)
        if np.isfinite(a) and np.isfinite(b):
            idx = np.flatnonzero((steps >= a) & (steps <= b))
            rec["n_snapshots"] = int(idx.size)
            if idx.size >= 2:
                ref = gates[i, idx[0]]
                differs = gates[i, idx] != ref[None]  # (k, n, units)
                drift = differs.mean(axis=(1, 2))
                per_unit = differs[..., n_units - h :].mean(axis=1)  # (k, H), last layer
                weighted = per_unit @ share[i, idx[0]]
                rec.update(
                    ref_step=int(steps[idx[0]]),
                    end_step=int(steps[idx[-1]]),
                    steps=[int(s) for s in steps[idx]],
                    drift=[float(v) for v in drift],
                    weighted=[float(v) for v in weighted],
                    max_drift=float(drift.max()),
                    max_weighted=float(weighted.max()),
                )
        out.append(rec)
    return out


def gate_rows(
    cell_id: str, seeds, steps: np.ndarray, gates: np.ndarray, share: np.ndarray
) -> list[dict]:
    """Measures-table rows ``gate_drift`` / ``gate_drift_weighted`` for every pair of snapshots
    (ref <= step) of every member: the numbers `gate_drift` gives for a window that starts at
    ``ref`` (computed the same way, so a window read from the table is the same number)."""
    rows = []
    n_units, h = gates.shape[-1], share.shape[-1]
    for i, seed in enumerate(seeds):
        for r in range(steps.size):
            idx = np.arange(r, steps.size)
            differs = gates[i, idx] != gates[i, r][None]  # (k, n, units)
            drift = differs.mean(axis=(1, 2))
            weighted = differs[..., n_units - h :].mean(axis=1) @ share[i, r]
            for k, d, w in zip(idx, drift, weighted, strict=True):
                base = {"cell_id": cell_id, "seed": int(seed), "ref_step": int(steps[r])}
                rows.append({**base, "measure": "gate_drift", "step": int(steps[k]), "value": d})
                rows.append(
                    {**base, "measure": "gate_drift_weighted", "step": int(steps[k]), "value": w}
                )
    return rows
