"""The report stage: claims with verdicts, every figure (HTML/PNG/SVG) and the study page."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import xarray as xr

from twoclocks import provenance
from twoclocks.analyze.claims import claims_stage
from twoclocks.analyze.results import read_laws, read_measures
from twoclocks.report.figures import build_figures, save_chart
from twoclocks.report.html import write_report
from twoclocks.train.store import open_trajectory
from twoclocks.verify import read_json, read_table, verify_store

log = logging.getLogger("twoclocks.report")


def benchmark_rows(benchmarks_dir: str | Path | None) -> list[dict]:
    """One row per Snakemake `benchmark:` file under `benchmarks_dir` (train, clocks, fits).

    Wall time `s`, peak resident memory `max_rss` (MB) and `cpu_time` (s) as Snakemake measured
    them for the job's whole process tree; the last repeat when a rule ran repeated benchmarks.
    Missing measurements (jobs too short to sample) stay NaN.
    """
    rows = []
    root = Path(benchmarks_dir) if benchmarks_dir else None
    for path in sorted(root.rglob("*.tsv")) if root and root.is_dir() else []:
        try:
            df = pd.read_csv(path, sep="\t")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            log.warning("benchmark %s unreadable (%s); left out of the report", path, exc)
            continue
        if df.empty:
            continue
        last = df.iloc[-1]
        num = {k: pd.to_numeric(last.get(k), errors="coerce") for k in ("s", "max_rss", "cpu_time")}
        rel = path.relative_to(root).with_suffix("")
        rows.append(
            {
                "rule": rel.parts[0] if len(rel.parts) > 1 else rel.name,
                "job": "/".join(rel.parts[1:]) if len(rel.parts) > 1 else "",
                "wall_s": float(num["s"]),
                "max_rss_mb": float(num["max_rss"]),
                "cpu_time_s": float(num["cpu_time"]),
            }
        )
    return rows


def runtime_summary(manifests: dict[str, str | Path], benchmarks_dir=None) -> dict:
    """Training wall time and device per cell (from the manifests the train stage wrote) and
    every job's Snakemake benchmark (wall time, peak memory, CPU time)."""
    rows = {}
    for cid, path in manifests.items():
        m = read_json(path)
        rows[cid] = {k: m.get(k) for k in ("wall_seconds", "device", "dtype", "last_step")}
    total = sum((r.get("wall_seconds") or 0.0) for r in rows.values())
    return {
        "train_wall_seconds_total": round(total, 1),
        "cells": rows,
        "benchmarks": benchmark_rows(benchmarks_dir),
    }


def build_report(
    *,
    config: dict,
    stores: dict[str, str | Path],
    manifests: dict[str, str | Path],
    clocks_path: str | Path,
    fits_path: str | Path,
    claims_path: str | Path,
    index_path: str | Path,
    figures_dir: str | Path,
    benchmarks_dir: str | Path | None = None,
    measures: dict[str, str | Path] | None = None,
    reductions: dict[str, str | Path] | None = None,
    laws: dict[str, str | Path] | None = None,
    calibration: str | Path | None = None,
    replicate: dict | None = None,
) -> Path:
    """Evaluate claims, render figures and write `index_path` (self-contained, offline).

    Reads only what it is given: the validated study `config` (defaults filled), the stores and
    manifests by cell id (in study order), the study's clocks table and fits summary, the
    replay stage's measures tables by cell id (with the reduction's rows when
    `analysis.reduction` is on: then the ``relu_reduction`` claim is added) and the folder of
    the jobs' Snakemake benchmark files. ``reductions`` (cell id -> the reduce stage's zarr) is
    the older way to pass the reduction, folded into the measures. ``laws`` (cell id ->
    runs/<cell>/laws.json) and ``calibration`` (calibration.json): the law claims' inputs.
    ``replicate`` (analysis.numerics_replicate): the replicate's stores, manifests, clocks_path,
    fits_path and measures, the same shapes as the primary's; its claims are judged and merged
    (claims/robust).
    """
    for cid, path in stores.items():  # before any work: a damaged store stops here, named
        verify_store(path, manifests[cid])
    trajectories = {cid: open_trajectory(path) for cid, path in stores.items()}
    clocks = read_table(clocks_path)
    fits = read_json(fits_path)
    reduced = None
    if reductions is not None:
        reduced = {cid: xr.open_zarr(path).load() for cid, path in reductions.items()}
    record = {"study": config["study"], "provenance": provenance.collect(), "config": config}
    measures_table = read_measures(measures) if measures is not None else None
    claims = claims_stage(
        claims_path,
        trajectories,
        clocks,
        fits,
        config.get("claims"),
        measures=measures_table,
        reductions=reduced,
        record=record,
        laws=read_laws(laws, calibration) if laws is not None else None,
        replicate=read_replicate(replicate) if replicate else None,
    )
    for c in claims:
        log.info("claim %-16s %s", c["id"], c["verdict"])
    return render_report(
        index_path,
        figures_dir,
        config=config,
        runtime=runtime_summary(manifests, benchmarks_dir),
        trajectories=trajectories,
        clocks=clocks,
        fits=fits,
        claims=claims,
        measures=_with_reductions(measures_table, reduced),
    )


def _with_reductions(measures: pd.DataFrame | None, reduced: dict | None) -> pd.DataFrame | None:
    """The measures table with the reduce stores' rows folded in (the older way to pass them)."""
    if not reduced:
        return measures
    from twoclocks.replay.table import frame, reduction_rows

    rows = [r for cid, red in sorted(reduced.items()) for r in reduction_rows(cid, red)]
    return pd.concat([m for m in (measures, frame(rows)) if m is not None], ignore_index=True)


def read_replicate(paths: dict) -> dict:
    """The numerics replicate's tables for the claims stage, each store verified first."""
    for cid, path in paths["stores"].items():
        verify_store(path, paths["manifests"][cid])
    return {
        "study": {cid: open_trajectory(path) for cid, path in paths["stores"].items()},
        "clocks": read_table(paths["clocks_path"]),
        "fits": read_json(paths["fits_path"]),
        "measures": read_measures(paths["measures"]),
    }


def render_report(
    index_path: str | Path,
    figures_dir: str | Path | None,
    *,
    config: dict,
    runtime: dict,
    trajectories: dict,
    clocks: pd.DataFrame,
    fits: dict,
    claims: list[dict],
    notes: list[str] | None = None,
    measures: pd.DataFrame | None = None,
) -> Path:
    """The report stage's page: every figure the study supports (saved as PNG/SVG under
    `figures_dir` unless None) and the study page at `index_path` (the Snakemake rule and
    `python -m twoclocks.analyze` both call it)."""
    max_points = (config.get("report") or {}).get("max_points_per_line")
    kwargs = {"max_points": max_points} if max_points else {}
    charts, fig_notes = build_figures(
        trajectories, clocks, fits, **kwargs, claim_settings=config.get("claims"),
        measures=measures,
    )  # fmt: skip
    if figures_dir is not None:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
        for name, chart in charts.items():
            save_chart(chart, Path(figures_dir) / name)
            log.info("figure %s", name)
    for note in fig_notes:
        log.info("figure %s", note)
    return write_report(
        Path(index_path).parent,
        config=config,
        provenance=provenance.collect(),
        runtime=runtime,
        clocks=clocks,
        fits=fits,
        claims=claims,
        figures=charts,
        notes=[*(notes or []), *fig_notes],
    )
