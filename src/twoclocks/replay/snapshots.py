"""Per-snapshot numbers the claims need from the weight snapshots (numpy only): how far a block
moved since init (grad_hierarchy's relative displacement) and the embedding's Fourier spectrum
outside its key frequencies (the fourier claim, for stores without a logged `fourier_gap`)."""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from twoclocks.config import section_default

FOURIER_KEEP = section_default("claims", "fourier_keep")


def displacement(ds: xr.Dataset, block: str) -> np.ndarray:
    """(seed, checkpoint) ||X(k) - X(0)||_F / ||X(0)||_F of weight block X (NaN if X(0) = 0)."""
    snap = ds[f"snap_{block}"]
    n_seed, n_snap = ds.sizes["seed"], ds.sizes["checkpoint"]
    out = np.full((n_seed, n_snap), np.nan)
    for i in range(n_seed):
        x0 = snap.isel(seed=i, checkpoint=0).to_numpy().astype(np.float64)
        n0 = np.linalg.norm(x0)
        for k in range(n_snap):
            x1 = snap.isel(seed=i, checkpoint=k).to_numpy().astype(np.float64)
            out[i, k] = np.linalg.norm(x1 - x0) / n0 if n0 > 0 else np.nan
    return out


def relative_displacement(ds: xr.Dataset, block: str, hi: np.ndarray) -> np.ndarray:
    """Per member: ||X(b) - X(0)||_F / ||X(0)||_F of weight block X between step 0 and the last
    weight snapshot b <= hi (NaN if there is none after 0): how far AdamW moved the block,
    relative to its size, by the end of the window (snapshots are log-spaced, dense early)."""
    steps = ds["checkpoint_step"].to_numpy()
    moved = displacement(ds, block)
    return np.array([last_before(steps, moved[i], hi[i]) for i in range(moved.shape[0])])


def last_before(steps: np.ndarray, values: np.ndarray, hi: float) -> float:
    """The value at the last snapshot with 0 < step <= hi (NaN if none or hi is NaN)."""
    k = np.flatnonzero((steps > 0) & (steps <= hi))
    if not np.isfinite(hi) or k.size == 0:
        return np.nan
    return float(values[int(k[-1])])


def displacement_rows(cell_id: str, ds: xr.Dataset, blocks=("U", "E")) -> list[dict]:
    """Measures-table rows ``displacement_<block>`` per (seed, snapshot)."""
    rows = []
    steps = ds["checkpoint_step"].to_numpy()
    for block in blocks:
        if f"snap_{block}" not in ds:
            continue
        moved = displacement(ds, block)
        for i, seed in enumerate(ds["seed"].to_numpy()):
            rows += [
                {"cell_id": cell_id, "seed": int(seed), "measure": f"displacement_{block}",
                 "ref_step": int(steps[0]), "step": int(s), "value": float(v)}
                for s, v in zip(steps, moved[i], strict=True)
            ]  # fmt: skip
    return rows


def fourier_concentration(snap: np.ndarray, modulus: int, keep: int = FOURIER_KEEP) -> float:
    """Fraction of embedding energy outside the top `keep` frequencies (rows = residues 0..p-1)."""
    rows = np.asarray(snap, float)[:modulus]
    coef = np.fft.rfft(rows - rows.mean(axis=0), axis=0)
    energy = np.sum(np.abs(coef[1:]) ** 2, axis=1)
    total = energy.sum()
    if total <= 0:
        return math.nan
    return float(1.0 - np.sort(energy)[::-1][:keep].sum() / total)


def fourier_measure(keep: int) -> str:
    """Name of the per-snapshot Fourier measure at `keep` key frequencies."""
    return f"fourier_gap_top{int(keep)}"


def fourier_rows(cell_id: str, ds: xr.Dataset, keep: int) -> list[dict]:
    """Measures-table rows: energy of snap_E outside its top `keep` frequencies per snapshot
    (modular cells only: the rows of E are the residues 0..p-1)."""
    cell = ds.attrs.get("cell", "{}")
    params = json.loads(cell) if isinstance(cell, str) else dict(cell)
    if "snap_E" not in ds or not params.get("modulus"):
        return []
    p, steps, rows = int(params["modulus"]), ds["checkpoint_step"].to_numpy(), []
    for i, seed in enumerate(ds["seed"].to_numpy()):
        snap = ds["snap_E"].isel(seed=i).to_numpy()
        for k, s in enumerate(steps):
            v = fourier_concentration(snap[k], p, keep)
            rows.append({"cell_id": cell_id, "seed": int(seed), "measure": fourier_measure(keep),
                         "step": int(s), "value": v})  # fmt: skip
    return rows
