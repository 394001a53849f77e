"""The calibration stage: the law estimators on known truths at the study's own horizon (#22.7).

Per distinct horizon of the study's cells (steps, log cadence, seeds, dtype: the laws stage
records it per cell) the families of `laws.simulate` are drawn at the eps/eta grids of the
`analysis:` section and at the noise measured on the study's own trajectories (the median over
the horizon's cells of `laws.measure_noise`: train CE for the classifier families, the raw gaps
for the representation families), and the same estimators decide them. Per family: shares of
correct, INCONCLUSIVE and confident wrong decisions, and the coverage of the nominal 95% drift
interval. A law verdict is allowed only where no family that matters for its clock has more
than 5% confident wrong answers (`laws.verdict_allowed`; `verdict_allowed` here reads the JSON).

The horizon's log grid is rebuilt with the engine's own `train.schedule.log_steps` (geometric
cadence included), not `laws.simulate.log_grid` (linear cadence only).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from twoclocks.analyze import laws
from twoclocks.analyze.clock_specs import clock_spec
from twoclocks.analyze.laws.calibrate import MAX_WRONG, MIN_DRAWS
from twoclocks.analyze.settings import resolve_settings
from twoclocks.provenance import json_safe
from twoclocks.train.schedule import log_steps

CALIBRATION_FILE = "calibration.json"
# the known truths each clock's verdict must survive (laws.simulate.families): a classifier
# clock any CE curve; a fitted-asymptote gap every rate mixture and unreached power tail; a
# known-zero gap the known-zero ones (its estimator never fits the asymptote)
CLS_FAMILIES = ("cls_exp", "cls_transient", "cls_floor", "cls_near_log", "cls_power")
REP_FITTED = ("exp", "exp_slow", "mix2", "mix3", "near_log", "transient",
              "power_p0.5", "power_p1", "power_p2")  # fmt: skip
REP_KNOWN = ("exp_known_zero", "mix2_known_zero", "mix3_known_zero", "power_p0.5_known_zero",
             "power_p1_known_zero", "power_p2_known_zero")  # fmt: skip
DEFAULT_NOISE = 0.005  # where no trajectory gives one (laws.simulate.Horizon's default)


def families_that_matter(clock: str) -> tuple[str, ...]:
    """The families whose confident wrong answers forbid a verdict on `clock`."""
    if clock == "cls":
        return CLS_FAMILIES
    return REP_KNOWN if clock_spec(clock).zero == "known" else REP_FITTED


def horizon_key(h: dict) -> str:
    """A horizon's name: steps, cadence, seeds, dtype (cells sharing it share a calibration)."""
    if "log_steps_list" in h:
        n = len(h["log_steps_list"])
        cad = f"{n} logs as stored"
    else:
        cad = f"dense {h['log_dense_steps']}, every {h['log_every_steps']}"
        if h.get("log_rows_per_decade"):
            cad += f", {h['log_rows_per_decade']}/decade"
    return f"{h['steps']} steps ({cad}), {h['n_seeds']} seeds, {h['dtype']}"


def horizon(h: dict, settings: dict, noise: float) -> laws.Horizon:
    """A `laws.Horizon` from a laws record's horizon (adapter: the engine's log grid)."""
    if "log_steps_list" in h:
        grid = np.asarray(h["log_steps_list"], np.int64)
    else:
        grid = log_steps(int(h["steps"]), int(h["log_dense_steps"]), int(h["log_every_steps"]),
                         int(h.get("log_rows_per_decade", 0)))  # fmt: skip
    return laws.Horizon(
        name=horizon_key(h),
        steps=int(h["steps"]),
        log_steps=grid,
        eps=tuple(float(v) for v in settings["eps"]),
        eta=tuple(float(v) for v in settings["eta"]),
        window_logs=int(settings["stability_window_logs"]),
        noise=float(noise),
        n_seeds=max(int(h["n_seeds"]), laws.decision.MIN_SEEDS),
        dtype=str(h["dtype"]),
    )


def _noise(records: list[dict], rep: bool) -> float:
    """Median measured noise of the horizon's cells: train CE, or every present gap."""
    vals = []
    for r in records:
        for name, c in r["clocks"].items():
            if (name != "cls") == rep and c.get("noise") is not None:
                vals.append(float(c["noise"]))
    vals = [v for v in vals if math.isfinite(v) and v > 0]
    return float(np.median(vals)) if vals else DEFAULT_NOISE


def _needed(records: list[dict]) -> tuple[str, ...]:
    """The families the horizon's clocks need (a gap absent everywhere needs none)."""
    out = list(CLS_FAMILIES)
    for r in records:
        for name, c in r["clocks"].items():
            if name != "cls" and c.get("decision") != "absent":
                out += [f for f in families_that_matter(name) if f not in out]
    return tuple(out)


def study_calibration(
    records: dict[str, dict], analysis: dict | None, draws: int, workers: int = 1, seed: int = 0
) -> dict:
    """calibration.json: per horizon, every family's shares; per cell, its horizon's key.
    Every (horizon, row stride, family) job of the study runs through one pool
    (`laws.calibrate_many`)."""
    settings = resolve_settings(analysis)
    groups: dict[str, list[dict]] = defaultdict(list)
    for _cid, r in sorted(records.items()):
        groups[horizon_key(r["horizon"])].append(r)
    cells = {cid: horizon_key(r["horizon"]) for cid, r in sorted(records.items())}
    out = {"draws": int(draws), "max_wrong": MAX_WRONG, "horizons": {}, "cells": cells}
    tasks, where = [], []  # (horizon, families) and (horizon key, stride or None) per task
    for key, recs in groups.items():
        need = _needed(recs)
        noise = {"cls": _noise(recs, False), "rep": _noise(recs, True)}
        every = _rows_every(recs)
        cls_names = [n for n in need if n.startswith("cls_")]
        rep_names = [n for n in need if not n.startswith("cls_")]
        if cls_names and draws > 0:
            tasks.append((horizon(recs[0]["horizon"], settings, noise["cls"]), cls_names))
            where.append((key, None))
        for k in sorted(set(every.values()) | {1}) if rep_names and draws > 0 else ():
            names = [n for n in rep_names if k == 1 or any(
                v == k and n in families_that_matter(c) for c, v in every.items())]  # fmt: skip
            if k == 1 and every and 1 not in every.values():
                continue  # every gap of this horizon is logged on a sparser grid
            hz = _every_kth_row(horizon(recs[0]["horizon"], settings, noise["rep"]), k)
            tasks.append((hz, names))
            where.append((key, None if k == 1 else str(k)))
        out["horizons"][key] = {"noise": noise, "n_logs": len(horizon(recs[0]["horizon"],
                                settings, 0.0).log_steps), "families": {},
                                "rows_every": every, "families_every": {}}  # fmt: skip
    results = laws.calibrate_many(tasks, int(draws), seed, workers) if tasks else []
    for (key, stride), res in zip(where, results, strict=True):
        h = out["horizons"][key]
        dest = h["families"] if stride is None else h["families_every"].setdefault(stride, {})
        dest.update({n: v.as_dict() for n, v in res.items()})
    return out


def _rows_every(records: list[dict]) -> dict[str, int]:
    """Per gap of the horizon, the row stride it is logged on (the gated map: every 4th)."""
    out: dict[str, int] = {}
    for r in records:
        for name, c in r["clocks"].items():
            if name != "cls" and c.get("decision") != "absent":
                out[name] = max(out.get(name, 1), int(c.get("rows_every", 1) or 1))
    return out


def _every_kth_row(hz: laws.Horizon, k: int) -> laws.Horizon:
    """The horizon of a gap logged on every k-th row of the store's grid (its own cadence)."""
    if k <= 1:
        return hz
    name = f"{hz.name}, every {k}th row"
    return dataclasses.replace(hz, name=name, log_steps=np.asarray(hz.log_steps)[::k])


def _families_for(hz_entry: dict, clock: str) -> dict:
    """The calibrated families a clock's verdict reads: those at its own row stride."""
    k = int(hz_entry.get("rows_every", {}).get(clock, 1))
    if k > 1 and str(k) in hz_entry.get("families_every", {}):
        return {**hz_entry["families"], **hz_entry["families_every"][str(k)]}
    return hz_entry["families"]


def verdict_allowed(calibration: dict | None, cell_ids, clock: str) -> tuple[bool, str]:
    """`laws.verdict_allowed` on calibration.json for the horizons of `cell_ids` and the
    families that matter for `clock`; no calibration -> not allowed, with the reason."""
    if not calibration or not calibration.get("horizons"):
        return False, "no calibration of the law estimators for this study (calibration.json)"
    if int(calibration.get("draws", 1)) == 0:
        return False, (f"the law estimators were not calibrated (analysis.calibration_draws: 0); a "
                       f"law verdict needs >= {MIN_DRAWS} draws per family")  # fmt: skip
    matters = families_that_matter(clock)
    keys = sorted({calibration["cells"].get(c) for c in cell_ids} - {None})
    if not keys:
        return False, f"no calibration for cells {sorted(cell_ids)}"
    reasons, ok_all = [], True
    for key in keys:
        fams = _families_for(calibration["horizons"][key], clock)
        res = {n: _family(v) for n, v in fams.items()}
        ok, why = laws.verdict_allowed(res, matters)
        ok_all &= ok
        reasons.append(f"at {key}: {why}")
    return ok_all, "; ".join(reasons)


def _family(d: dict) -> laws.FamilyResult:
    from twoclocks.analyze.laws.calibrate import DERIVED

    keep = {k: v for k, v in d.items() if k not in DERIVED}
    keep = {k: (math.nan if v is None and k in ("coverage",) else v) for k, v in keep.items()}
    return laws.FamilyResult(**keep)


def summary(calibration: dict | None, cell_ids, clock: str) -> list[dict]:
    """The calibration rows for a law verdict (claims.json, the report): per horizon and family
    that matters, the shares correct / inconclusive / confident wrong and the coverage."""
    rows = []
    for key in sorted({(calibration or {}).get("cells", {}).get(c) for c in cell_ids} - {None}):
        fams = _families_for(calibration["horizons"][key], clock)
        for name in families_that_matter(clock):
            f = fams.get(name)
            if f is not None:
                rows.append({"horizon": key, "family": name, "truth": f["truth"],
                             "draws": f["draws"], "correct": f["correct"],
                             "inconclusive": f["inconclusive"], "wrong": f["wrong"],
                             "wrong_upper": _family(f).wrong_upper,
                             "coverage": f["coverage"], "note": f.get("note", "")})  # fmt: skip
    return rows


def write_calibration(calibration: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(calibration), indent=1, sort_keys=True, allow_nan=False))
    return path


def run_calibration(
    laws_paths: dict[str, str | Path],
    out_path: str | Path,
    *,
    analysis: dict | None,
    workers: int = 1,
) -> dict:
    """The calibrate rule: the cells' laws.json in, calibration.json out (draws per family:
    the `analysis` setting calibration_draws)."""
    settings = resolve_settings(analysis)
    records = {cid: json.loads(Path(p).read_text()) for cid, p in laws_paths.items()}
    cal = study_calibration(records, analysis, int(settings["calibration_draws"]), workers)
    write_calibration(cal, out_path)
    return cal
