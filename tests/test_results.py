"""The read model (analyze/results.py): torch-free, and it finds a study's tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import synthetic_report as sr

from twoclocks.analyze import results as R


def test_importing_the_read_model_does_not_import_torch():
    code = "import sys, twoclocks.analyze.results; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_claims_read_tables_and_never_import_the_model_code():
    """The claims judge from tables: the replay stage alone runs the model on snapshots."""
    code = "import sys, twoclocks.analyze.claims; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_results_reads_every_table_of_a_results_folder(tmp_path):
    cells = {k: v for k, v in sr.study(deep=False).items()}
    clocks = sr.clocks(cells)
    clocks.to_parquet(tmp_path / "clocks.parquet")
    (tmp_path / "fits.json").write_text(json.dumps({"cells": {}}))
    (tmp_path / "claims.json").write_text(json.dumps({"claims": [{"id": "x"}]}))
    for cid, ds in cells.items():
        run = tmp_path / "runs" / cid
        run.mkdir(parents=True)
        ds.drop_vars([v for v in ds.variables if str(v).startswith("snap")]).to_zarr(
            run / "trajectory.zarr", consolidated=False
        )
        (run / "manifest.json").write_text(json.dumps({"last_step": 9}))
        rows = [dict(cell_id=cid, seed=0, measure="gate_drift", anchor="", ref_step=0, step=5,
                     value=0.1)]  # fmt: skip
        pd.DataFrame(rows).to_parquet(run / "measures.parquet")
    got = R.load_results(tmp_path)
    assert sorted(got.trajectories) == sorted(cells) and len(got.clocks) == len(clocks)
    assert got.claims["claims"][0]["id"] == "x" and got.fits == {"cells": {}}
    assert sorted(got.manifests) == sorted(cells)
    assert sorted(got.measures["cell_id"]) == sorted(cells)
    assert list(got.cells["cell_id"]) == sorted(cells) and set(got.cells["model"]) == {"relu_embed"}
