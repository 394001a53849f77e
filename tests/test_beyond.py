"""config/beyond.yaml at test size: its grids (three-layer MLP and transformer under AdamW and
Muon, stacked weight decays) run end to end through snakemake, and the report lists every cell
with its model and optimizer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import snakemake_cmd

from twoclocks import config
from twoclocks.train.store import open_trajectory

REPO = Path(__file__).resolve().parents[1]
BEYOND = REPO / "config" / "beyond.yaml"

# test size: the shipped study's structure, tiny widths and horizon
TINY_BASE = {"modulus": 11, "steps": 300, "lr": 0.01, "fourier_keep": 3}
TINY_SETS = {
    "mlp3": {"embed_dim": 8, "hidden_width": 16},
    "transformer": {"d_model": 8, "n_heads": 2, "d_mlp": 16},
}


def _tiny(tmp_path: Path) -> Path:
    study = yaml.safe_load(BEYOND.read_text())
    study.update(study="beyond-tiny", seeds=[0, 1], device="cpu", train_threads=1)
    study["base"].update(TINY_BASE)
    for name, sizes in TINY_SETS.items():
        study["grids"][name]["set"].update(sizes)
        study["grids"][name]["axes"]["weight_decay"] = [0.3, 1.0]  # 8 cells, 4 train jobs
    study["logging"] = {
        "log_dense_steps": 20,
        "log_every_steps": 10,
        "snapshot_count": 4,
        "checkpoint_every_steps": 100,
    }
    study["analysis"] = {"eps": [0.3, 0.1, 0.03], "eta": [0.5, 0.2, 0.1], "bootstrap_samples": 20}
    path = tmp_path / "beyond-tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_the_shipped_study_resolves():
    cells = config.load_config(BEYOND).cells
    assert len(cells) == 12
    kinds = {(c.params["model"], c.params["optimizer"]) for c in cells}
    assert kinds == {(m, o) for m in ("relu_embed", "transformer") for o in ("adamw", "muon")}
    groups = {c.params["group_id"] for c in cells}
    assert len(groups) == 4  # weight decays stacked: one train job per model x optimizer
    mlp = next(c.params for c in cells if c.params["model"] == "relu_embed")
    assert (mlp["hidden_layers"], mlp["hidden_width"], mlp["combine"]) == (2, 512, "concat")
    assert mlp["modulus"] == 97 and mlp["train_fraction"] == 0.5 and mlp["betas"] == [0.9, 0.999]


@pytest.mark.slow
def test_beyond_at_test_size_runs_end_to_end(tmp_path):
    cfg = _tiny(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    cmd = snakemake_cmd(work, "--cores", "2", config=cfg)
    cmd += ["--workflow-profile", str(REPO / "workflow/profiles/local")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = work / "results" / "beyond-tiny"
    clocks = pd.read_parquet(study / "clocks.parquet")
    assert clocks["cell_id"].nunique() == 8
    # the report's per-cell clock table: every model x optimizer cell with T_cls, T_rep, T_gen
    cells = pd.read_csv(study / "report" / "cells.csv")
    assert {"t_cls", "t_rep", "t_gen"} <= set(cells.columns) and len(cells) == 8
    for grid in ("mlp3", "transformer"):
        for opt in ("adamw", "muon"):
            assert cells["cell"].str.startswith(f"{grid}/optimizer={opt}/").sum() == 2
    # the transformer's store: its circuits on the srank axis, the direct path UE as the map
    store = open_trajectory(
        study / "runs" / "transformer/optimizer=muon/wd=1.0" / "trajectory.zarr"
    )
    assert store.attrs["end_to_end_matrix"] == "UE" and "OV1" in store["matrix"].values
