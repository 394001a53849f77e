"""The report's tables as data frames: clocks per level, per-run and per-cell clocks, fits.

The HTML page (`report.html`) draws these and writes them as CSV files next to it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

# the study's results are read through this one alias
from twoclocks.analyze import results as cl
from twoclocks.analyze.claims.spec import resolve_claim_settings


def _plain(v: Any) -> str:
    """A value as short text: floats to 4 significant digits (NaN empty), containers as JSON."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def clock_summary(clocks: pd.DataFrame | None) -> pd.DataFrame:
    """Per (cell, clock, level): fired/total runs and median, min, max step of the fired ones."""
    if clocks is None or len(clocks) == 0:
        return pd.DataFrame()
    df = clocks.copy()
    pre = df["pre_fit"].astype(bool) if "pre_fit" in df else pd.Series(False, index=df.index)
    if "unresolved" in df:
        df["fired_unresolved"] = ~df["censored"].astype(bool) & df["unresolved"].astype(bool)
    n_pre = df[pre].groupby(["cell_id", "clock", "level"]).size()
    df = df[~pre]  # crossings before T_cls(eps_star) are counted, never summarised as clocks
    df["fired"] = ~df["censored"].astype(bool)
    g = df.groupby(["cell_id", "clock", "level"], sort=True)
    out = g.agg(
        fired=("fired", "sum"),
        runs=("fired", "size"),
        median_step=("step", "median"),
        min_step=("step", "min"),
        max_step=("step", "max"),
        median_tau=("tau", "median"),
    ).reset_index()
    if "below_floor" in df:
        out["below_floor"] = g["below_floor"].any().to_numpy()
    if "unresolved" in df:
        out["unresolved"] = g["fired_unresolved"].sum().to_numpy()
    if "pre_fit" in clocks:
        key = pd.MultiIndex.from_frame(out[["cell_id", "clock", "level"]])
        out["pre_fit"] = n_pre.reindex(key, fill_value=0).to_numpy()
    out["fired"] = out["fired"].astype(str) + "/" + out["runs"].astype(str)
    return out.drop(columns="runs")


def _fit_record_rows(fits: Mapping[str, Any]) -> pd.DataFrame:
    """fits.json (design.md "Fits output"): one row per fit record, params as `name=est [ci]`."""

    def fmt(p: Any) -> str:
        if not isinstance(p, Mapping):
            return _plain(p)
        est, lo, hi = (p.get(k) for k in ("estimate", "ci_low", "ci_high"))
        ci = f" [{lo:.4g}, {hi:.4g}]" if isinstance(lo, float) and isinstance(hi, float) else ""
        return ("nan" if est is None else f"{est:.4g}") + ci

    rows = []
    records = [(cid, r) for cid, c in fits["cells"].items() for r in c.get("fits") or []]
    records += [("*", r) for r in fits.get("scaling") or []]
    for cid, r in records:
        stats = r.get("stats") or {}
        params = r.get("params") or {}
        if r.get("fit") == "law":  # the chosen law's parameters first (docs/design.md)
            first = ["delta_aic", "b", "a"] if r.get("preferred") == "log" else ["delta_aic"]
            first += ["k", "T0", "C"] if r.get("preferred") == "power" else []
            params = {k: params[k] for k in [*first, *params] if k in params}
        rows.append(
            {
                "cell_id": cid,
                **{
                    k: r.get(k, "")
                    for k in ("fit", "clock", "level", "axis", "group", "status", "preferred")
                },
                # fits.json's `ratio` is T_clock / T_cls at the reference levels, not the
                # separation ratio R of the claims (results.SEPARATION_RATIO)
                **({"fit": "clock_ratio"} if r.get("fit") == "ratio" else {}),
                "finding": stats.get("finding", ""),
                "support": stats.get("law_support", ""),
                "params": "; ".join(f"{k}={fmt(v)}" for k, v in params.items()),
                "r2": stats.get("r2"),
                "n_points": stats.get("n_points"),
                "reason": r.get("reason", ""),
            }
        )
    return pd.DataFrame(rows)


def fits_table(fits: Mapping[str, Any] | None) -> pd.DataFrame:
    """Fits as rows: fits.json records if `fits` has `cells`, else nested keys flattened."""
    if isinstance(fits, Mapping) and isinstance(fits.get("cells"), Mapping):
        return _fit_record_rows(fits)
    rows: list[dict] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            leaves = {k: v for k, v in node.items() if not isinstance(v, (Mapping, list))}
            if leaves:
                rows.append({"fit": " / ".join(path) or "(top)", **leaves})
            for k, v in node.items():
                if isinstance(v, Mapping):
                    walk(v, (*path, str(k)))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, str(i)))

    walk(fits or {}, ())
    return pd.DataFrame(rows)


def run_clock_levels(
    clocks: pd.DataFrame | None,
    settings: Mapping[str, Any] | None = None,
    rep_level: float | None = None,
) -> dict[str, tuple[str, float | None]]:
    """The clock and level behind each per-run time: T_cls at the claims' eps (`cls_eps`), T_rep
    of the claims' representation clock at `rep_level` (default: its analysis reference level),
    T_gen at the claims' test-accuracy level (else the strictest gen_loss level)."""
    from twoclocks.analyze.clocks import resolve_settings

    s = resolve_claim_settings(settings)
    rep = s["rep_clock"]
    if rep_level is None:
        rep_level = resolve_settings({})["reference_levels"].get(rep)
    return {
        "t_cls": ("cls", cl.pick_level(clocks, "cls", s["cls_eps"])),
        "t_rep": (rep, cl.pick_level(clocks, rep, rep_level) if rep_level else None),
        "t_gen": cl.gen_clock(clocks, s["gen_acc_level"]),
    }


def grokked_runs(
    clocks: pd.DataFrame | None,
    settings: Mapping[str, Any] | None = None,
    rep_level: float | None = None,
) -> pd.DataFrame:
    """Per (cell_id, seed): t_cls, t_rep and t_gen in steps (NaN: did not fire; levels from
    `run_clock_levels`), `relapsed` (the T_cls or T_gen row's quantity left its level after
    the clock fired, `clocks.relapsed`) and `grokked` (T_gen fired and the run did not
    relapse: a relapsed run is never counted as grokked)."""
    cols = ["cell_id", "seed", "t_cls", "t_rep", "t_gen", "relapsed", "grokked"]
    if clocks is None or len(clocks) == 0 or "clock" not in clocks:
        return pd.DataFrame(columns=cols)
    df = None
    for col, (clock, level) in run_clock_levels(clocks, settings, rep_level).items():
        t = cl.clock_times(clocks, clock, level)[["cell_id", "seed", "step", "relapse"]]
        t = t.rename(columns={"step": col, "relapse": f"{col}_relapse"}).astype({col: float})
        df = t if df is None else df.merge(t, on=["cell_id", "seed"], how="outer")
    rel = df[["t_cls_relapse", "t_gen_relapse"]].astype("boolean").fillna(False)
    df["relapsed"] = rel.any(axis=1).astype(bool)
    df["grokked"] = df["t_gen"].notna() & ~df["relapsed"]
    return df[cols].sort_values(["cell_id", "seed"]).reset_index(drop=True)


def clock_interval(steps: pd.Series) -> str:
    """`median [min, max] n/N` of the runs whose clock fired (steps; NaN = did not fire)."""
    fired = steps.dropna()
    if fired.empty:
        return f"- 0/{len(steps)}"
    med, lo, hi = (f"{v:,.0f}" for v in (fired.median(), fired.min(), fired.max()))
    return f"{med} [{lo}, {hi}] {len(fired)}/{len(steps)}"


def clock_headers(levels: Mapping[str, tuple[str, float | None]]) -> dict[str, str]:
    """Column titles of the per-cell clocks: name, clock and level."""
    names = {"t_cls": "T_cls", "t_rep": "T_rep", "t_gen": "T_gen"}
    out = {}
    for col, (clock, level) in levels.items():
        at = "-" if level is None else f"{level:g}"
        out[col] = f"{names[col]} ({clock} @ {at})"
    return out


def _cell_ids(runtime, clocks, fits) -> list[str]:
    """Cell ids in study order: the manifests' order, then any only the clocks or fits name."""
    ids = list((runtime or {}).get("cells") or {})
    if clocks is not None and "cell_id" in clocks:
        ids += list(dict.fromkeys(clocks["cell_id"].astype(str)))
    if isinstance(fits, Mapping) and isinstance(fits.get("cells"), Mapping):
        ids += [str(c) for c in fits["cells"]]
    return list(dict.fromkeys(ids))


def _overview(cell_ids, runs: pd.DataFrame, fit_rows: pd.DataFrame, runtime) -> pd.DataFrame:
    """One row per cell: runs grokked, then each clock (T_cls, T_rep, T_gen) as median [seed min,
    max] fired/runs, ok and insufficient fits, training time."""
    cells_rt = (runtime or {}).get("cells") or {}
    rows = []
    for cid in cell_ids:
        r = runs[runs["cell_id"] == cid] if len(runs) else runs
        f = fit_rows[fit_rows["cell_id"] == cid] if len(fit_rows) else fit_rows
        grok = r[r["grokked"].astype(bool)] if len(r) else r
        seeds = ", ".join(str(int(x)) for x in grok["seed"]) if len(grok) else ""
        rel = r[r["relapsed"].astype(bool)] if len(r) else r
        rel_seeds = ", ".join(str(int(x)) for x in rel["seed"]) if len(rel) else ""
        rows.append(
            {
                "cell": cid,
                "grokked runs": f"{len(grok)}/{len(r)}"
                + (f" (seed {seeds})" if seeds else "")
                + (f"; relapsed: seed {rel_seeds}" if rel_seeds else ""),
                **{c: clock_interval(r[c].astype(float)) for c in ("t_cls", "t_rep", "t_gen")},
                "ok fits": int((f["status"] == "ok").sum()) if len(f) else 0,
                "insufficient fits": int((f["status"] != "ok").sum()) if len(f) else 0,
                "train wall s": (cells_rt.get(cid) or {}).get("wall_seconds"),
            }
        )
    return pd.DataFrame(rows)


def insufficient_summary(fit_rows: pd.DataFrame) -> pd.DataFrame:
    """Fits that judged nothing, counted per (fit, clock, reason), with the cells (or, for
    scaling fits, the groups) they concern."""
    cols = ["fit", "clock", "reason", "count", "cells"]
    bad = fit_rows[fit_rows["status"] != "ok"].copy() if len(fit_rows) else fit_rows
    if bad.empty:
        return pd.DataFrame(columns=cols)
    group = bad["group"].fillna("").astype(str) if "group" in bad else ""
    cell = bad["cell_id"].astype(str)
    bad["where"] = np.where(group == "", cell, np.where(cell == "*", group, cell + " " + group))
    g = bad.groupby(["fit", "clock", "reason"], sort=True, dropna=False)
    out = g.agg(count=("where", "size"), cells=("where", lambda x: ", ".join(dict.fromkeys(x))))
    return out.reset_index().sort_values("count", ascending=False, kind="stable")[cols]


def reason_kind(reason: str) -> str:
    """A reason with its run-specific counts as N ("2 uncensored post-fit levels < min_levels=4"
    -> "N uncensored post-fit levels < min_levels=4"), thresholds kept."""
    return re.sub(r"\((\d+) rows", "(N rows", re.sub(r"^\d+(?=[ (])", "N", str(reason)))


def insufficient_by_kind(fit_rows: pd.DataFrame) -> pd.DataFrame:
    """The compact summary: insufficient fits per (fit, kind of reason), with their clocks."""
    per = insufficient_summary(fit_rows)
    cols = ["fit", "reason", "count", "clocks"]
    if per.empty:
        return pd.DataFrame(columns=cols)
    per["reason"] = per["reason"].map(reason_kind)
    g = per.groupby(["fit", "reason"], sort=True)
    out = g.agg(count=("count", "sum"), clocks=("clock", lambda x: ", ".join(dict.fromkeys(x))))
    return out.reset_index().sort_values("count", ascending=False, kind="stable")[cols]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b": leaf} (lists kept as leaves) for key/value tables."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def grokked_by_model(runs: pd.DataFrame, clocks: pd.DataFrame | None, config: Mapping) -> str:
    """Runs grokked per model family ("relu_embed 2/9 (1 relapsed), deep_linear n/a"), each
    cell's model and task from its grid in the config (the clocks table names the grid); the
    total when that is unknown. A family trained only on the teacher task is "n/a": a teacher
    task has no test-accuracy grokking delay to count (docs/science.md 6), so its runs are
    neither grokked nor not."""
    grids = config.get("grids") or {}
    base = config.get("base") or {}

    def count(g: pd.DataFrame) -> str:
        n_rel = int(g["relapsed"].sum()) if "relapsed" in g else 0
        return f"{int(g['grokked'].sum())}/{len(g)}" + (f" ({n_rel} relapsed)" if n_rel else "")

    total = count(runs) if len(runs) else "0/0"
    if not len(runs) or clocks is None or "grid" not in clocks or not grids:
        return total
    sets = {g: {**base, **(spec.get("set") or {})} for g, spec in grids.items()}
    grid_of = clocks.drop_duplicates("cell_id").set_index("cell_id")["grid"]
    grid = runs["cell_id"].map(grid_of)
    models = grid.map({g: v.get("model") for g, v in sets.items()})
    teacher = grid.map({g: v.get("task") == "teacher" for g, v in sets.items()})
    if models.isna().any():
        return total
    parts = []
    for m, g in runs.groupby(models, sort=False):
        if teacher[g.index].all():
            parts.append(f"{m} n/a (teacher task: no grokking delay)")
        else:
            parts.append(f"{m} {count(g[~teacher[g.index].astype(bool)])}")
    return total if len(parts) == 1 and not teacher.any() else ", ".join(parts)


def _cell_settings(clocks: pd.DataFrame | None, config: Mapping) -> pd.DataFrame:
    """Per cell id: its model and optimizer, from its grid's `set` over `base` (the clocks table
    names the grid), where a grid axis of that name does not label the cell itself."""
    if clocks is None or not len(clocks) or "grid" not in clocks:
        return pd.DataFrame(columns=["cell_id", "model", "optimizer"])
    base = dict(config.get("base") or {})
    grids = config.get("grids") or {}
    rows = clocks.drop_duplicates("cell_id")
    out = []
    for r in rows.to_dict("records"):
        merged = {**base, **((grids.get(r["grid"]) or {}).get("set") or {})}
        pick = {k: r.get(k) if isinstance(r.get(k), str) else merged.get(k)
                for k in ("model", "optimizer")}  # fmt: skip
        out.append({"cell_id": r["cell_id"], **pick})
    return pd.DataFrame(out)


def by_architecture(runs: pd.DataFrame, clocks: pd.DataFrame | None, config: Mapping,
                    claims: list[dict] | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per (model, optimizer) (issue 29's cross-architecture table): cells, runs
    grokked, the median over runs of T_cls, T_rep, T_gen (steps; runs where the clock fired)
    and of the per-run ratios T_rep/T_cls and T_gen/T_cls, and the laws stage's decisions of
    the law claims over its cells (`cls_log_law`, `rep_power_law`: counts per decision)."""
    where = _cell_settings(clocks, config)
    if not len(runs) or not len(where) or where[["model", "optimizer"]].isna().all().all():
        return pd.DataFrame()
    df = runs.merge(where, on="cell_id", how="left").fillna({"model": "?", "optimizer": "?"})
    df["rep_ratio"] = df["t_rep"] / df["t_cls"]
    df["gen_ratio"] = df["t_gen"] / df["t_cls"]
    decisions = {c["id"]: (c.get("details") or {}).get("laws") or {} for c in claims or []}
    rows = []
    for (model, opt), g in df.groupby(["model", "optimizer"], sort=True):
        cells = sorted(set(g["cell_id"]))
        row = {"model": model, "optimizer": opt, "cells": len(cells),
               "grokked": f"{int(g['grokked'].sum())}/{len(g)}"}  # fmt: skip
        for col in ("t_cls", "t_rep", "t_gen", "rep_ratio", "gen_ratio"):
            row[col] = float(g[col].median()) if g[col].notna().any() else float("nan")
        for cid in ("cls_log_law", "rep_power_law"):
            found = [str((decisions.get(cid) or {}).get(c, {}).get("decision")) for c in cells]
            found = [f for f in found if f != "None"]
            row[cid] = ", ".join(f"{f} {found.count(f)}" for f in sorted(set(found))) or "-"
        rows.append(row)
    return pd.DataFrame(rows)
