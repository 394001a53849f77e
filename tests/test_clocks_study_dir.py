"""Bring your own trajectories: `python -m twoclocks.analyze STUDY_DIR` on a synthetic study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from test_clocks_known_truth import write_store

from twoclocks.analyze.study_dir import StudyError, analyse, main

SMALL = {"analysis": {"bootstrap_samples": 100}}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    for i, cid in enumerate(("pow/p=1", "exp")):
        write_store(root / "runs" / cid / "trajectory.zarr", cid, rng_seed=i)
    return root


def test_analyse_writes_clocks_fits_claims_and_report(study_dir, tmp_path):
    out = analyse(study_dir, tmp_path / "out", SMALL)
    for name in ("clocks.parquet", "clocks.csv", "fits.parquet", "fits.json", "claims.json"):
        assert (out / name).is_file(), name
    fits = json.loads((out / "fits.json").read_text())
    assert set(fits["cells"]) == {"pow/p=1", "exp"}
    laws = {
        cid: {r["clock"]: r["preferred"] for r in c["fits"] if r["fit"] == "law"}
        for cid, c in fits["cells"].items()
    }
    assert laws["pow/p=1"]["rep_fourier"] == "power" and laws["exp"]["rep_fourier"] == "log"
    claims = json.loads((out / "claims.json").read_text())["claims"]
    assert {c["id"] for c in claims} >= {"cls_log_law", "rep_power_law"}
    page = (out / "report" / "index.html").read_text()
    assert "rep_srank skipped: the store has no stable rank" in page  # inputs absent: a note
    assert "logarithmic" in page


def test_missing_required_variable_names_store_and_variable(tmp_path):
    bad = tmp_path / "runs" / "c1" / "trajectory.zarr"
    xr.Dataset(
        {"test_loss": (("seed", "step"), np.ones((1, 3)))},
        coords={"seed": [0], "step": [0, 1, 2]},
    ).to_zarr(bad, consolidated=False)
    with pytest.raises(StudyError, match=r"c1/trajectory.zarr: missing variable 'train_loss'"):
        analyse(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before the check
    assert main([str(tmp_path)]) == 2
    with pytest.raises(StudyError, match="no runs/ directory"):
        analyse(tmp_path / "runs" / "c1")


def test_bad_settings_stop_before_work(study_dir, tmp_path, capsys):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("analysis:\n  t_kl_rule: onset\n")
    assert main([str(study_dir), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "removed analysis settings: t_kl_rule" in capsys.readouterr().err
