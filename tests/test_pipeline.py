"""The whole DAG on the tiny config: every output, provenance, reruns, report in a browser."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from browser import assert_page_renders, needs_chromium
from conftest import snakemake_cmd

import twoclocks
from twoclocks.provenance import read_parquet_record
from twoclocks.train.store import open_trajectory

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "test.yaml"
VERDICTS = {"PASS", "FAIL", "INCONCLUSIVE", "MET", "NOT MET", "OUT OF SCOPE"}
pytestmark = pytest.mark.slow  # the full DAG: about 30 s


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        snakemake_cmd(workdir, *args, config=CONFIG),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    snakemake(work, "--workflow-profile", str(REPO / "workflow/profiles/local"), "--cores", "2")
    return work / "results" / "test"


def test_every_output_exists(study):
    for name in (
        "clocks.parquet",
        "clocks.csv",
        "fits.parquet",
        "fits.json",
        "claims.json",
        "report/index.html",
    ):
        assert (study / name).stat().st_size > 0, name
    cells = ["relu/wd=0.5", "relu/wd=1.0", "linear/depth=2", "linear/depth=3"]
    for cid in cells:
        manifest = json.loads((study / "runs" / cid / "manifest.json").read_text())
        assert manifest["cell_id"] == cid and manifest["last_step"] == 120
    # resume state is cleaned up once the jobs finished
    assert not [p for p in (study / "state").rglob("*") if p.is_file()]
    assert len(list((study / "report" / "figures").glob("*.png"))) >= 10


def test_every_output_records_provenance(study):
    ds = open_trajectory(study / "runs" / "relu/wd=0.5" / "trajectory.zarr")
    prov = json.loads(ds.attrs["provenance"])
    assert prov["library_version"] == twoclocks.__version__ and "torch" in prov["packages"]
    assert ds.attrs["dtype"] == "float32" and ds.attrs["device"] == "cpu"
    assert json.loads(ds.attrs["cell"])["weight_decay"] == 0.5
    for name in ("clocks.parquet", "fits.parquet"):
        assert read_parquet_record(study / name)["provenance"]["library"] == "twoclocks"
    assert "provenance" in json.loads((study / "fits.json").read_text())
    claims = json.loads((study / "claims.json").read_text())
    assert claims["provenance"]["packages"]["torch"].startswith("2.13.0")
    assert claims["config"]["study"] == "test"


def test_claims_have_real_verdicts_and_evidence(study):
    claims = json.loads((study / "claims.json").read_text())["claims"]
    assert len(claims) >= 9
    for claim in claims:
        assert claim["verdict"] in VERDICTS and claim["evidence"], claim


def test_clocks_are_tidy_and_finite_where_reached(study):
    clocks = pd.read_parquet(study / "clocks.parquet")
    assert {
        "cell_id",
        "seed",
        "clock",
        "level",
        "step",
        "tau",
        "censored",
        "below_floor",
        "diverged",
        "weight_decay",
        "depth",
    } <= set(clocks.columns)
    reached = clocks[~clocks["censored"] & ~clocks["diverged"]]
    assert len(reached) > 0 and reached["step"].notna().all()
    assert (clocks.loc[clocks["censored"], "step"].isna()).all()
    assert set(clocks["seed"]) == {0, 1}


def test_load_study_gives_one_dataset(study):
    ds = twoclocks.load_study(study)
    assert ds.sizes["cell"] == 4 and ds.sizes["seed"] == 2
    assert "weight_decay" in ds.coords and "depth" in ds.coords
    assert ds.attrs["cells_from"] == str(study / "claims.json")  # the current config's cells


def test_every_published_store_matches_its_manifest(study, capsys):
    """The checksums describe the final stores (hard-linked, Snakemake's marker files added);
    training's record in group.json agrees."""
    from twoclocks.verify import main

    assert main([str(study)]) == 0
    assert "4 of 4 stores intact" in capsys.readouterr().out
    group = json.loads((study / "stacked" / "relu" / "train" / "group.json").read_text())
    manifest = json.loads((study / "runs" / "relu" / "wd=1.0" / "manifest.json").read_text())
    assert group["checksums"]["relu/wd=1.0"] == manifest["checksums"]
    assert list((study / "logs" / "train").rglob("*.attempts.log"))


def test_rerun_has_nothing_to_do(study):
    out = snakemake(study.parent.parent, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_snakemake_report_zip(study):
    zip_path = study / "report.zip"
    snakemake(study.parent.parent, "--report", str(zip_path))
    assert zip_path.stat().st_size > 10_000


@needs_chromium
def test_report_renders_in_chromium(study, tmp_path):
    html = (study / "report" / "index.html").read_text()
    n_charts = html.count('<figure id="fig-')
    assert n_charts >= 10
    assert_page_renders(study / "report" / "index.html", n_charts, tmp_path)
