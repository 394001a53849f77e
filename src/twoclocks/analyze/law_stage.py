"""The laws stage: per cell and clock, the three-outcome law decision of `analyze.laws` (issue #22).

For the classifier clock `laws.cls_law` (eps levels near the run's CE floor or the dtype's
resolution dropped and named); for every representation gap `laws.rep_law` (tail verdict, the
asymptote's plausible range; a known zero where the clock declares `zero == "known"`); for the
energy gap the KL exponent only where `laws.kl_exponent` says it means something. Each record
carries the drift interval, the reason and what would resolve an INCONCLUSIVE. One JSON file per
cell (runs/<cell>/laws.json); the Snakemake rule and `python -m twoclocks.analyze` call
`cell_laws`. The study's calibration of these estimators is `analyze.law_calibration`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from twoclocks.analyze import laws
from twoclocks.analyze.clock_specs import clock_names, clock_spec
from twoclocks.analyze.clocks import stable_crossing
from twoclocks.analyze.laws.floors import drop_floor_levels
from twoclocks.analyze.quantities import regularised_grad_norm
from twoclocks.analyze.settings import resolve_settings
from twoclocks.provenance import json_safe

LAWS_FILE = "laws.json"
ABSENT = "absent"  # the store lacks the clock's quantity: no decision, no verdict


def _seed_step(da: xr.DataArray) -> np.ndarray:
    """(seed, step) values of a DataArray (any dim order), float."""
    return np.atleast_2d(da.transpose("seed", "step").to_numpy().astype(float))


def horizon_of(ds: xr.Dataset, params: dict) -> dict:
    """What the calibration needs of this cell's run: steps, log cadence, seeds, dtype.

    The cadence keys are the cell's resolved `logging` keys where its params have them (the
    engine's `schedule.log_steps` rebuilds the grid, geometric cadence included), else the
    store's own step coordinate is the grid (`log_steps_list`)."""
    steps = ds["step"].to_numpy().astype(int)
    out = {
        "steps": int(params.get("steps", steps.max())),
        "n_seeds": int(ds.sizes["seed"]),
        "dtype": str(params.get("dtype", ds.attrs.get("dtype", "float32"))),
    }
    keys = ("log_dense_steps", "log_every_steps")
    if all(k in params for k in keys):
        out.update({k: int(params[k]) for k in keys})
        out["log_rows_per_decade"] = int(params.get("log_rows_per_decade", 0))
    else:
        out["log_steps_list"] = [int(s) for s in steps]
    return out


def _t_ref(clocks: pd.DataFrame | None, ce: np.ndarray, steps, eps_star, window) -> np.ndarray:
    """T_cls(eps_star) per seed: the clocks table's `t_cls_ref` of the gap rows, else the
    stable crossing of the train CE (the same definition, App. F.4)."""
    n = ce.shape[0]
    if clocks is not None and len(clocks) and "t_cls_ref" in clocks:
        rows = clocks[clocks["clock"].astype(str).str.startswith("rep_")]
        ref = rows.groupby("seed")["t_cls_ref"].first()
        if len(ref) == n:
            return ref.sort_index().to_numpy(float)
    t, _ = stable_crossing(ce, steps, np.broadcast_to(steps, ce.shape), [eps_star], window)
    return np.asarray(t, float)[:, 0]


def _cls_record(steps, ce, settings: dict, dtype: str) -> dict:
    """The classifier clock's law with the floor levels dropped and named (issue #22.1, .5)."""
    eps = np.asarray(settings["eps"], float)
    final = np.array([r[np.isfinite(r)][-1] if np.isfinite(r).any() else np.nan for r in ce])
    kept, dropped = drop_floor_levels(eps, final, dtype)
    noise = laws.measure_noise(np.where(ce > 0, ce, np.nan))
    dec = laws.cls_law(steps, ce, eps, int(settings["stability_window_logs"]), dtype, noise)
    return {**dec.as_dict(), "noise": noise, "levels_kept": list(kept), "dropped": dropped}


def _rep_record(name: str, steps, gaps, t_ref, settings: dict) -> dict:
    """One gap's law over its asymptote's plausible range (or its known zero), tail verdict."""
    spec = clock_spec(name)
    known = spec.zero == "known"
    logged = np.isfinite(gaps).any(axis=0)  # a gap logged every k-th row: its logged rows, as
    steps, gaps = np.asarray(steps)[logged], gaps[:, logged]  # analyze.clocks reads it
    fired = np.isfinite(t_ref) & np.isfinite(gaps).any(axis=1)
    # the calibration simulates this gap on every `rows_every`-th row of the store's grid
    rows_every = max(1, round(logged.size / max(int(logged.sum()), 1)))
    base = {"zero": spec.zero, "known_zero": known, "rows_every": int(rows_every)}
    if fired.sum() < laws.decision.MIN_SEEDS:
        why = f"T_cls(eps_star) fired in {int(fired.sum())} seed(s); the law needs 2"
        return {**base, "decision": laws.INCONCLUSIVE, "reason": why,
                "resolve": "a longer run or a larger eps_star"}  # fmt: skip
    g, tr = gaps[fired], t_ref[fired]
    rl = laws.rep_law(steps, g, tr, np.asarray(settings["eta"], float),
                      int(settings["stability_window_logs"]), float(spec.lower_bound),
                      0.0 if known else None)  # fmt: skip
    return {
        **rl.law.as_dict(),
        **base,
        "noise": laws.measure_noise(np.where(g > 0, g, np.nan)),
        "tail": rl.tail,
        "tail_reason": rl.tail_reason,
        "g_inf_low": rl.g_inf_low,
        "g_inf_high": rl.g_inf_high,
        "fell_fraction": rl.fell_fraction,
        "more_steps": rl.more_steps,
        "theta": rl.theta,
        "theta_low": rl.theta_low,
        "theta_high": rl.theta_high,
        "profile": [d.decision for d in rl.profile],
    }


def param_energy(ds: xr.Dataset, params: dict) -> xr.DataArray | None:
    """F = CE + wd/2 sum_b ||W_b||^2 from logged variables (`train_loss`, `sqnorm_total`), for
    every model: the energy whose gradient the store logs (`grad_norm_energy`), so the energy
    law and its KL exponent read one objective (issue #22.6; for deep linear nets the clocks'
    `rep_energy` is the Schatten energy of eq. 2.7, equal to F only on balanced factorisations).
    None where either variable is missing."""
    if "train_loss" not in ds or "sqnorm_total" not in ds:
        return None
    return ds["train_loss"] + float(params.get("weight_decay", 0.0)) / 2.0 * ds["sqnorm_total"]


def _f_inf(rec: dict | None, n: int) -> list[tuple[float, float]]:
    """Per fired member, F's plausible asymptote range (the energy law's profile), else 0."""
    lo, hi = (rec or {}).get("g_inf_low"), (rec or {}).get("g_inf_high")
    if not lo or not hi or len(lo) != n:
        return [(0.0, 0.0)] * n
    return [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]


def _kl_record(ds: xr.Dataset, params: dict, steps, ce, t_ref, law: dict | None = None) -> dict:
    """KL theta of F = CE + wd/2 sum ||W||^2 per member where it means something (issue #22.6):
    AdamW -> the stationarity ratio only; the identity case flagged (`laws.kl_exponent`).
    law: F's law record (`_rep_record` on `param_energy`): theta at both ends of each member's
    plausible asymptote F_inf (their range is reported; F - 0 where F_inf was not fitted)."""
    grad_f, why = regularised_grad_norm(ds, params)
    missing = [v for v in ("sqnorm_total", "grad_norm") if v not in ds]
    if grad_f is None or missing:
        return {"status": laws.kl.INSUFFICIENT,
                "note": why or f"the store has no {', '.join(missing)}"}  # fmt: skip
    sq = _seed_step(ds["sqnorm_total"])
    gf = _seed_step(grad_f)
    gc = _seed_step(np.sqrt((ds["grad_norm"] ** 2).sum("block")))
    wd, opt = float(params.get("weight_decay", 0.0)), str(params.get("optimizer", "adamw"))
    fired = [s for s in range(ce.shape[0]) if np.isfinite(t_ref[s])]
    f_inf = _f_inf(law, len(fired))
    ends = [
        [laws.kl_exponent(steps, ce[s], sq[s], gf[s], gc[s], wd, opt, t_ref[s], f) for f in fi]
        for s, fi in zip(fired, f_inf, strict=True)
    ]
    members = [e[0] for e in ends]
    if not members:
        return {"status": laws.kl.INSUFFICIENT, "note": "T_cls(eps_star) never fired"}
    both = np.array([[m.theta for m in e] for e in ends if all(m.status == laws.kl.OK for m in e)])
    status = {m.status for m in members}
    one = status.pop() if len(status) == 1 else "mixed"
    thetas = np.array([m.theta for m in members if m.status == laws.kl.OK])
    return {
        "status": one,
        "theta": float(np.median(thetas)) if thetas.size else math.nan,
        "theta_members": [m.theta for m in members],
        "theta_range": [float(both.min()), float(both.max())] if both.size else None,
        "f_inf": [list(f) for f in f_inf],
        "energy": "F = CE + wd/2 sum_b ||W_b||^2 (train_loss, sqnorm_total); ||grad F|| from "
        "grad_norm_energy",
        "stationarity_ratio": float(np.nanmedian([m.stationarity_ratio for m in members])),
        "note": members[0].note,
        "notes": [m.note for m in members],
    }


def cell_laws(
    ds: xr.Dataset,
    clocks: pd.DataFrame | None,
    analysis: dict | None,
    params: dict,
    cell_id: str,
) -> dict:
    """Every law decision of one cell (the laws stage's record, runs/<cell>/laws.json)."""
    settings = resolve_settings(analysis)
    steps = ds["step"].to_numpy().astype(float)
    ce = _seed_step(ds["train_loss"])
    dtype = str(params.get("dtype", "float32"))
    window = int(settings["stability_window_logs"])
    out = {"cell_id": cell_id, "horizon": horizon_of(ds, params), "clocks": {}}
    out["clocks"]["cls"] = _cls_record(steps, ce, settings, dtype)
    t_ref = _t_ref(clocks, ce, steps, float(settings["eps_star"]), window)
    for name in clock_names(kind="gap", fit="law"):
        kl = "kl" in clock_spec(name).fits
        # the KL clock's law is decided on F = CE + wd/2 sum ||W_b||^2 for every model (its
        # gradient is the logged one); clocks.parquet keeps the clock's own quantity
        raw = param_energy(ds, params) if kl else None
        if raw is None:
            raw = clock_spec(name).raw(ds, settings, params)
        if raw is None:
            out["clocks"][name] = {"decision": ABSENT, "reason": "the store lacks its quantity"}
            continue
        out["clocks"][name] = _rep_record(name, steps, _seed_step(raw), t_ref, settings)
        if kl:
            rec = out["clocks"][name]
            rec["quantity"] = "F = CE + wd/2 sqnorm_total" if "sqnorm_total" in ds else "clock"
            rec["kl"] = _kl_record(ds, params, steps, ce, t_ref, rec)
    return out


def write_cell_laws(record: dict, path: str | Path) -> Path:
    """laws.json, NaN/inf as null, deterministic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(record), indent=1, sort_keys=True, allow_nan=False))
    return path


def run_laws(
    store: str | Path,
    clocks_path: str | Path | None,
    out_path: str | Path,
    *,
    analysis: dict | None,
    params: dict | None = None,
    cell_id: str = "",
    manifest: str | Path | None = None,
) -> dict:
    """The laws rule: verify the store against its manifest, read it and its clocks table,
    decide every law and write laws.json. params: the cell's resolved params (default: the
    store's `cell` attribute)."""
    from twoclocks.train.store import open_trajectory
    from twoclocks.verify import read_table, verify_store

    resolve_settings(analysis)  # bad settings fail before any work
    if manifest is not None:
        verify_store(store, manifest)  # a deleted/damaged chunk stops here, named
    ds = open_trajectory(store).load()
    cell = json.loads(ds.attrs.get("cell", "{}")) if isinstance(ds.attrs.get("cell"), str) else {}
    params = {**cell, **(params or {})}
    clocks = read_table(clocks_path) if clocks_path else None
    record = cell_laws(ds, clocks, analysis, params, cell_id or str(params.get("cell_id", "")))
    write_cell_laws(record, out_path)
    return record


def study_laws(
    trajectories: dict[str, xr.Dataset],
    clocks: pd.DataFrame,
    analysis: dict | None,
    params: dict[str, dict],
    out: str | Path,
    workers: int = 1,
) -> dict:
    """The laws and calibrate stages over a study held in memory (`python -m twoclocks.analyze`):
    out/laws/<cell>/laws.json and out/calibration.json; returns what `results.read_laws` gives."""
    from twoclocks.analyze.law_calibration import CALIBRATION_FILE, run_calibration

    out = Path(out)
    paths = {}
    for cid, ds in trajectories.items():
        rows = clocks[clocks["cell_id"] == cid] if "cell_id" in clocks else None
        rec = cell_laws(ds.load(), rows, analysis, params.get(cid, {}), cid)
        paths[cid] = write_cell_laws(rec, out / "laws" / cid / LAWS_FILE)
    cal = run_calibration(paths, out / CALIBRATION_FILE, analysis=analysis, workers=workers)
    cells = {cid: json.loads(p.read_text()) for cid, p in paths.items()}
    return {"cells": cells, "calibration": cal}
