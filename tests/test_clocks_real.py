"""Whole chain on a real tiny training run: train_cell -> trajectory -> clocks -> fits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

engine = pytest.importorskip("twoclocks.train.engine")

from twoclocks.analyze.clocks import extract_clocks  # noqa: E402
from twoclocks.analyze.fits import fit_clocks  # noqa: E402
from twoclocks.config import load_config  # noqa: E402
from twoclocks.data.io import build_dataset, data_params  # noqa: E402
from twoclocks.train.store import open_trajectory  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config" / "test.yaml"


@pytest.mark.parametrize("grid", ["relu", "linear"])
def test_real_tiny_cell_gives_finite_clocks(tmp_path, grid):
    study = load_config(CONFIG)
    cell = next(c for c in study.cells if c.params["grid"] == grid)
    dataset = build_dataset(data_params(cell.params))
    store = engine.train_cell(cell.params, dataset, tmp_path / "trajectory.zarr", progress=False)
    ds = open_trajectory(store).load()
    settings = {**study.config.get("analysis", {}), "stability_window_logs": 2}
    clocks = extract_clocks(ds, settings, cell.axes)
    assert len(clocks) and (clocks["cell_id"] == cell.id).all()
    assert set(cell.axes) <= set(clocks.columns)
    assert {"cls", "rep_srank", "rep_energy", "gen_loss"} <= set(clocks["clock"])
    fired = clocks[~clocks["censored"] & ~clocks["diverged"]]
    assert len(fired) > 0 and np.isfinite(fired[["step", "tau"]].to_numpy()).all()
    assert (fired["step"] <= cell.params["steps"]).all() and (fired["step"] >= 0).all()
    # tau = accumulated lr: lr * step at constant lr
    np.testing.assert_allclose(fired["tau"], cell.params["lr"] * fired["step"], rtol=1e-6)
    cls = fired[fired["clock"] == "cls"]
    assert len(cls) > 0, "train CE never reached the largest eps in the tiny run"
    rep = fired[fired["clock"].str.startswith("rep_")]
    assert (rep["pre_fit"] | (rep["step"] >= rep["t_cls_ref"])).all()
    table, summary = fit_clocks(clocks, settings)
    assert set(table["status"]) <= {"ok", "insufficient"}
    json.dumps(summary, allow_nan=False)
