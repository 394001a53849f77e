"""The report stage: claims with verdicts, every figure (HTML/PNG/SVG) and the study page."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from twoclocks import provenance
from twoclocks.analyze.claims import claims_to_json, evaluate_claims
from twoclocks.config import load_config
from twoclocks.report.figures import build_figures, save_chart
from twoclocks.report.html import write_report
from twoclocks.train.store import open_trajectory

log = logging.getLogger("twoclocks.report")


def study_trajectories(study_dir: Path, config: dict) -> dict:
    """cell_id -> trajectory Dataset, in config order."""
    study = load_config(config)
    return {
        c.id: open_trajectory(study_dir / "runs" / c.id / "trajectory.zarr") for c in study.cells
    }


def runtime_summary(study_dir: Path, cell_ids) -> dict:
    """Training wall time and device per cell, from the manifests the train stage wrote."""
    rows = {}
    for cid in cell_ids:
        path = study_dir / "runs" / cid / "manifest.json"
        if path.exists():
            m = json.loads(path.read_text())
            rows[cid] = {k: m.get(k) for k in ("wall_seconds", "device", "dtype", "last_step")}
    total = sum((r.get("wall_seconds") or 0.0) for r in rows.values())
    return {"train_wall_seconds_total": round(total, 1), "cells": rows}


def build_report(study_dir, config: dict, claims_path, index_path, figures_dir) -> Path:
    """Evaluate claims, render figures and write `index_path` (self-contained, offline)."""
    study_dir, figures_dir = Path(study_dir), Path(figures_dir)
    trajectories = study_trajectories(study_dir, config)
    clocks = pd.read_parquet(study_dir / "clocks.parquet")
    fits = json.loads((study_dir / "fits.json").read_text())
    claims = evaluate_claims(trajectories, clocks, fits, config.get("claims"))
    record = {
        "study": config["study"],
        "provenance": provenance.collect(),
        "config": config,
        "claims": claims,
    }
    Path(claims_path).write_text(claims_to_json(record))
    for c in claims:
        log.info("claim %-16s %s", c["id"], c["verdict"])
    charts, notes = build_figures(trajectories, clocks, fits)
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name, chart in charts.items():
        save_chart(chart, figures_dir / name)
        log.info("figure %s", name)
    for note in notes:
        log.info("figure %s", note)
    return write_report(
        Path(index_path).parent,
        config=config,
        provenance=provenance.collect(),
        runtime=runtime_summary(study_dir, trajectories),
        clocks=clocks,
        fits=fits,
        claims=claims,
        figures=charts,
        notes=notes,
    )
