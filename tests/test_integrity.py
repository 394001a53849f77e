"""Nothing silent, nothing lost (issues 15, 27): stores against their manifests' checksums, read
errors that name their file, train logs that keep every attempt, load_study of the current
config with snapshots of every model, the study against its config (missing, stray and foreign
cells), no store read without its manifest, studies whose cells differ in dtype."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import snakemake_cmd

from twoclocks import logs
from twoclocks.analyze.study_dir import StudyError, analyse
from twoclocks.config import load_config
from twoclocks.data.io import build_dataset, data_params
from twoclocks.fsutil import link_tree
from twoclocks.report.build import build_report
from twoclocks.study import load_study
from twoclocks.train.group import train_group
from twoclocks.train.manifest import store_checksums, write_manifest
from twoclocks.train.store import open_trajectory
from twoclocks.verify import (
    IntegrityError,
    load_store,
    verify_published,
    verify_store,
    verify_study,
)
from twoclocks.verify import main as verify_main

pytestmark = pytest.mark.filterwarnings("ignore:Object at .snakemake_timestamp:UserWarning")
REPO = Path(__file__).resolve().parents[1]
CELL = "relu/wd=1.0"
CHUNK = Path("runs") / CELL / "trajectory.zarr" / "train_loss" / "c" / "0" / "0"


def _raw_config(wds=(0.5, 1.0)) -> dict:
    raw = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    raw["base"]["steps"] = 40
    raw["grids"]["relu"]["axes"]["weight_decay"] = list(wds)
    raw["grids"]["linear"]["set"]["dtype"] = "float64"  # cells differ in dtype, as in paper.yaml
    return raw


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    """config/test.yaml (40 steps) published as the pipeline does: train groups under
    stacked/<group>/train, each cell hard-linked into runs/<cell>, then its manifest; returns
    the study dir and what training recorded per cell (train_group.py's group.json)."""
    root = tmp_path_factory.mktemp("study") / "test"
    study = load_config(_raw_config())
    trained = {}
    for gid, cells in study.groups.items():
        params = [c.params for c in cells]
        paths = train_group(
            params,
            build_dataset(data_params(params[0])),
            root / "stacked" / gid / "train",
            state_dir=root / "state" / gid,
            axes={c.id: c.axes for c in cells},
        )
        for cid, src in paths.items():
            trained[cid] = store_checksums(src)
            run = root / "runs" / cid
            run.parent.mkdir(parents=True, exist_ok=True)
            link_tree(src, run / "trajectory.zarr")
            write_manifest(run / "trajectory.zarr", run / "manifest.json")
    return root, trained


@pytest.fixture
def study(built, tmp_path) -> Path:
    """A private copy of the built study (tests damage it)."""
    dst = tmp_path / "test"
    shutil.copytree(built[0], dst)
    return dst


def _verify_cli(study_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run(
        [sys.executable, "-m", "twoclocks.verify", str(study_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_manifest_checksums_describe_the_final_linked_store(built):
    root, trained = built
    run = root / "runs" / CELL
    manifest = json.loads((run / "manifest.json").read_text())
    sums = manifest["checksums"]
    assert manifest["checksum_algorithm"] == "sha256"
    assert {"train_loss", "snap_E", "."} <= set(sums)
    chunk = root / CHUNK
    assert sums["train_loss"]["c/0/0"]["bytes"] == chunk.stat().st_size > 0
    # the published files are hard links of the train output, and hash the same
    assert chunk.stat().st_nlink == 2
    assert sums == trained[CELL]
    # Snakemake's marker file in directory outputs is not part of the store
    (run / "trajectory.zarr" / ".snakemake_timestamp").write_text("")
    try:
        verify_store(run / "trajectory.zarr")
    finally:
        (run / "trajectory.zarr" / ".snakemake_timestamp").unlink()
    res = _verify_cli(root)
    assert res.returncode == 0, res.stderr
    assert "4 of 4 stores intact (0 damaged, missing or extra" in res.stdout


def test_a_deleted_chunk_stops_every_reader_with_file_and_fix(study):
    """The issue's `rm runs/<cell>/trajectory.zarr/train_loss/c/0/0`: zarr would read NaN."""
    (study / CHUNK).unlink()
    assert np.isnan(open_trajectory(study / "runs" / CELL / "trajectory.zarr").train_loss).all()
    res = _verify_cli(study)
    assert res.returncode == 1
    assert f"{study / CHUNK}: missing" in res.stderr
    assert f"delete {study / 'runs' / CELL} and rerun snakemake" in res.stderr
    readers = {
        "verify_store": lambda: verify_store(study / "runs" / CELL / "trajectory.zarr"),
        "load_study": lambda: load_study(study),
        "analyze": lambda: analyse(study, study / "out"),
        "report": lambda: build_report(
            config={"study": "test"},
            stores={CELL: study / "runs" / CELL / "trajectory.zarr"},
            manifests={CELL: study / "runs" / CELL / "manifest.json"},
            clocks_path=study / "absent.parquet",
            fits_path=study / "absent.json",
            claims_path=study / "claims.json",
            index_path=study / "report" / "index.html",
            figures_dir=study / "report" / "figures",
        ),
    }
    for name, read in readers.items():
        with pytest.raises(IntegrityError) as err:
            read()
        assert str(study / CHUNK) in str(err.value), name
        assert "delete" in str(err.value) and "rerun snakemake" in str(err.value), name
    assert not (study / "out").exists() and not (study / "claims.json").exists()


def test_a_truncated_manifest_is_named(study):
    manifest = study / "runs" / CELL / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(IntegrityError, match="JSONDecodeError") as err:
        verify_store(study / "runs" / CELL / "trajectory.zarr")
    assert str(manifest) in str(err.value) and "truncated" in str(err.value)
    res = _verify_cli(study)
    assert res.returncode == 1 and str(manifest) in res.stderr
    with pytest.raises(IntegrityError, match=str(manifest)):
        load_study(study)


def test_a_truncated_chunk_is_named_with_or_without_a_manifest(study):
    chunk = study / CHUNK
    size = chunk.stat().st_size
    with open(chunk, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(IntegrityError) as err:
        verify_store(study / "runs" / CELL / "trajectory.zarr")
    assert f"{chunk}: {size // 2} bytes, the manifest says {size}" in str(err.value)
    # a store written by other code has no manifest: the read error still names store + array
    (study / "runs" / CELL / "manifest.json").unlink()
    store = study / "runs" / CELL / "trajectory.zarr"
    with pytest.raises(IntegrityError, match="cannot read array 'train_loss'") as err:
        load_store(store)
    assert str(store) in str(err.value)
    with pytest.raises(IntegrityError, match="train_loss"):
        analyse(study, study / "out")
    res = _verify_cli(study)
    assert res.returncode == 1
    assert f"{study / 'runs' / CELL / 'manifest.json'}: missing" in res.stderr


def test_altered_and_added_files_are_caught(study):
    store = study / "runs" / CELL / "trajectory.zarr"
    chunk = study / CHUNK
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.unlink()  # break the hard link: the train output keeps the original
    chunk.write_bytes(bytes(data))
    (store / "train_loss" / "c" / "1").mkdir()
    (store / "train_loss" / "c" / "1" / "0").write_bytes(b"x")
    ok, damaged = verify_study(study)
    assert ok == 3 and list(damaged) == [study / "runs" / CELL]
    text = "\n".join(damaged[study / "runs" / CELL])
    assert f"{chunk}: content differs from the manifest (sha256)" in text
    assert f"{store / 'train_loss' / 'c' / '1' / '0'}: not in the manifest" in text


def test_damage_shared_with_the_train_output_is_not_published(built, study):
    """Hard links: a chunk truncated in place is damaged under both names; republishing would
    checksum the damage as valid, so unstack compares with what training recorded."""
    _, trained = built
    group_dir = study / "stacked" / "relu" / "train"
    source = group_dir / "cells" / CELL / "trajectory.zarr"
    with open(source / "train_loss" / "c" / "0" / "0", "r+b") as fh:
        fh.truncate(3)
    published = study / "republished" / "trajectory.zarr"
    link_tree(source, published)
    with pytest.raises(IntegrityError) as err:
        verify_published(source, trained[CELL], store_checksums(published), group_dir)
    assert f"delete {group_dir} and rerun snakemake" in str(err.value)
    assert str(source / "train_loss" / "c" / "0" / "0") in str(err.value)
    verify_published(source, None, {}, group_dir)  # an older train output: nothing to compare


def test_a_manifest_without_checksums_warns_in_stages_and_fails_verify(study, caplog):
    manifest = study / "runs" / CELL / "manifest.json"
    record = json.loads(manifest.read_text())
    del record["checksums"]
    manifest.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="twoclocks.verify"):
        verify_store(study / "runs" / CELL / "trajectory.zarr")
    assert "no checksums" in caplog.text
    with pytest.raises(IntegrityError, match="no checksums"):
        verify_store(study / "runs" / CELL / "trajectory.zarr", strict=True)
    assert _verify_cli(study).returncode == 1


def test_every_train_attempt_keeps_its_log(tmp_path):
    """Snakemake deletes a job's declared log before each attempt; the attempts file keeps
    what each one said."""
    log_path = tmp_path / "logs" / "train" / "relu.log"
    log_path.parent.mkdir(parents=True)
    stderr = sys.stderr
    try:
        for attempt in (1, 2):
            log_path.unlink(missing_ok=True)  # what Snakemake does before a (re)try
            log = logs.to_file(str(log_path))
            history = logs.keep_attempts(str(log_path))
            log.info("attempt %d saved resume state", attempt)
            print(f"Traceback of attempt {attempt}", file=sys.stderr)  # as an exception would
            for h in logging.getLogger().handlers:
                h.flush()
    finally:
        sys.stderr.close()
        sys.stderr = stderr
        logging.basicConfig(force=True)
    assert history == str(tmp_path / "logs" / "train" / "relu.attempts.log")
    kept = Path(history).read_text()
    assert "==== attempt 1 of relu.log" in kept and "==== attempt 2 of relu.log" in kept
    assert "attempt 1 saved resume state" in kept and "attempt 2 saved resume state" in kept
    assert "Traceback of attempt 1" in kept and "Traceback of attempt 2" in kept
    declared = log_path.read_text()  # this attempt only, each line once
    assert "attempt 1 saved" not in declared and declared.count("attempt 2 saved") == 1
    assert declared.count("Traceback of attempt 2") == 1 and kept.count("attempt 2 saved") == 1


def test_load_study_reads_the_current_config_and_names_the_rest(study, caplog):
    """Cells of an earlier config of the same study stay on disk; load_study leaves them out,
    from the config given or the one the report recorded in claims.json."""
    current = load_config(_raw_config(wds=(0.5,)))
    with caplog.at_level(logging.WARNING, logger="twoclocks.study"):
        ds = load_study(study, config=_raw_config(wds=(0.5,)))
    assert sorted(ds.cell.values.tolist()) == sorted(c.id for c in current.cells)
    assert json.loads(ds.attrs["other_cells_on_disk"]) == [CELL]
    assert CELL in caplog.text and "not in the current config" in caplog.text
    assert json.loads(ds.attrs["stale_cells"]) == []
    # no config given: the one the report stage last wrote
    (study / "claims.json").write_text(json.dumps({"config": current.config}))
    ds2 = load_study(study)
    assert ds2.attrs["cells_from"] == str(study / "claims.json")
    assert ds2.sizes["cell"] == 3
    # a config whose cells were trained with other settings: named as stale
    raw = _raw_config(wds=(0.5,))
    raw["base"]["steps"] = 60
    ds3 = load_study(study, config=raw)
    assert len(json.loads(ds3.attrs["stale_cells"])) == 3
    # a new cell with no store yet
    ds4 = load_study(study, config=_raw_config(wds=(0.5, 1.0, 2.0)))
    assert json.loads(ds4.attrs["missing_cells"]) == ["relu/wd=2.0"]
    assert ds4.sizes["cell"] == 4
    # no config at all: every store
    (study / "claims.json").unlink()
    assert load_study(study).sizes["cell"] == 4


def test_load_study_with_snapshots_combines_every_model(built):
    """ReLU and deep-linear cells (different blocks and shapes) in one Dataset: each cell's
    snapshots equal its own store's, NaN where it has no such block or a smaller one."""
    root, _ = built
    ds = load_study(root, snapshots=True)
    assert ds.sizes["cell"] == 4
    snaps = [v for v in ds.data_vars if v.startswith("snap_")]
    assert {"snap_E", "snap_U", "snap_W1", "snap_W2", "snap_W3"} <= set(snaps)
    for cid in ds.cell.values:
        own = open_trajectory(root / "runs" / cid / "trajectory.zarr")
        for name in snaps:
            got = ds[name].sel(cell=cid)
            if name not in own:
                assert np.isnan(got).all(), (cid, name)
                continue
            mine = own[name].values
            got = got.transpose(*own[name].dims)
            inner = got.isel({d: slice(0, mine.shape[i]) for i, d in enumerate(own[name].dims)})
            np.testing.assert_array_equal(inner.values, mine, err_msg=f"{cid} {name}")
            assert np.isnan(got).sum() == got.size - mine.size, (cid, name)


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_snakemake_stops_on_a_deleted_chunk(built, tmp_path):
    """Snakemake tracks the store's directory only and would say "Nothing to be done"; the
    head process compares files and sizes with the manifests and stops with the fix."""
    results = tmp_path / "results" / "test"
    shutil.copytree(built[0], results)
    cmd = snakemake_cmd(tmp_path, "-n")
    intact = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert intact.returncode == 0, intact.stderr[-3000:]
    (results / CHUNK).unlink()
    damaged = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    out = damaged.stdout + damaged.stderr
    assert damaged.returncode != 0
    assert f"{Path('results/test') / CHUNK}: missing" in out, out[-3000:]
    assert f"delete {Path('results/test/runs') / CELL} and rerun snakemake" in out


def _add_stray_stores(study: Path) -> tuple[str, str]:
    """A copy of a cell under another cell's name, and a store of another study (with its own
    valid manifest, as copied from that study); returns their paths under runs/."""
    runs = study / "runs"
    copied, foreign = "linear/depth=9", "relu/wd=7.0"
    shutil.copytree(runs / "linear" / "depth=2", runs / copied)
    shutil.copytree(runs / "relu" / "wd=0.5", runs / foreign)
    meta = runs / foreign / "trajectory.zarr" / "zarr.json"
    record = json.loads(meta.read_text())
    cell = json.loads(record["attributes"]["cell"])
    record["attributes"]["cell"] = json.dumps({**cell, "study": "other", "cell_id": foreign})
    meta.write_text(json.dumps(record))
    write_manifest(runs / foreign / "trajectory.zarr", runs / foreign / "manifest.json")
    return copied, foreign


def test_verify_checks_the_study_against_its_config(study, tmp_path, capsys):
    """Issue 27: a deleted cell, a copied cell and another study's cell were "intact"."""
    runs = study / "runs"
    copied, foreign = _add_stray_stores(study)
    shutil.rmtree(runs / CELL)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(_raw_config()))
    assert verify_main([str(study), "--configfile", str(config)]) == 1
    res = capsys.readouterr()
    assert f"{runs / CELL}: planned by {config}, no store" in res.err
    assert "Fix: rerun snakemake with this config" in res.err
    assert f"{runs / copied}: stray store, the store records cell 'linear/depth=2'" in res.err
    assert f"{runs / foreign}: stray store, the store records study 'other'" in res.err
    for extra in (copied, foreign):
        assert f"Fix: delete {runs / extra} (or move it out of runs/)" in res.err
    assert "3 of 6 stores intact" in res.out
    # no config given and none recorded: said so; stray stores are still found
    assert verify_main([str(study)]) == 1
    res = capsys.readouterr()
    assert "planned cells not checked" in res.out
    assert str(runs / copied) in res.err and str(runs / CELL) not in res.err
    # the config recorded by the report (claims.json) is the default; unplanned cells are extra
    shutil.rmtree(runs / copied)
    shutil.rmtree(runs / foreign)
    raw = _raw_config(wds=(0.5,))
    raw["grids"]["linear"]["axes"]["depth"] = [2]
    (study / "claims.json").write_text(json.dumps({"config": load_config(raw).config}))
    ok, problems = verify_study(study)
    assert ok == 2 and list(problems) == [runs / "linear" / "depth=3"]
    assert "not a cell of" in problems[runs / "linear" / "depth=3"][0]


def test_load_study_refuses_a_store_without_its_manifest(study):
    """Issue 27: with its manifest deleted, a store with a deleted chunk was read as NaN."""
    manifest = study / "runs" / CELL / "manifest.json"
    manifest.unlink()
    (study / CHUNK).unlink()
    with pytest.raises(IntegrityError) as err:
        load_study(study)
    assert f"{manifest}: missing" in str(err.value)
    assert f"delete {study / 'runs' / CELL} and rerun snakemake" in str(err.value)
    assert load_study(study, verify=False).sizes["cell"] == 4  # asked for: read unchecked


@pytest.mark.slow  # ~10 s: a whole analysis
def test_analyze_names_unverified_and_stray_stores_of_a_mixed_dtype_study(study):
    """Issue 27: `analyze` failed with "Duplicate column names found" on cells of different
    dtypes, analysed a copied store and another study's store, and did not say which stores
    nothing had checked. Stray stores are left out and named; stores without a manifest are
    named at the top of the report; a variable NaN throughout in one stops the run."""
    copied, foreign = _add_stray_stores(study)
    (study / "runs" / CELL / "manifest.json").unlink()
    out = analyse(study, study / "out", {"analysis": {"bootstrap_samples": 10}})
    clocks = pd.read_parquet(out / "clocks.parquet")
    dtypes = clocks.groupby("cell_id")["dtype"].unique().map(list).to_dict()
    assert dtypes == {
        "linear/depth=2": ["float64"],
        "linear/depth=3": ["float64"],
        "relu/wd=0.5": ["float32"],
        "relu/wd=1.0": ["float32"],
    }
    for name in ("fits.json", "claims.json"):
        record = json.loads((out / name).read_text())
        assert record["unverified_stores"] == [CELL], name
        assert sorted(record["stray_stores"]) == [copied, foreign], name
    page = (out / "report" / "index.html").read_text()
    warning = page.index("<b>Warning:</b> 1 of 4 store(s) have no manifest.json")
    assert warning < page.index("<h2>Verdicts") and CELL in page[warning : warning + 300]
    assert page.index("stray stores left out") < page.index("<h2>Verdicts")
    ds = load_study(study, verify=False)  # the same cells, and the stray ones named
    assert sorted(ds.cell.values.tolist()) == sorted(dtypes)
    assert sorted(json.loads(ds.attrs["stray_cells"])) == [copied, foreign]
    assert ds["train_loss"].dtype == np.float64
    (study / CHUNK).unlink()  # now zarr reads train_loss back as NaN throughout
    with pytest.raises(StudyError) as err:
        analyse(study, study / "out2")
    store = study / "runs" / CELL / "trajectory.zarr"
    assert f"{store}: variable(s) train_loss are NaN throughout" in str(err.value)


def test_update_ratio_is_nan_at_the_last_step_only_as_documented(built):
    """Issue 27: the last row's NaN was undocumented. No update follows the last step."""
    design = (REPO / "docs" / "design.md").read_text()
    notes = design[design.index("Notes: `update_ratio`") :].split("\n\n")[0]
    assert "`update_ratio` is NaN at the last step" in notes
    for cid in (CELL, "linear/depth=2"):
        u = open_trajectory(built[0] / "runs" / cid / "trajectory.zarr")["update_ratio"]
        assert np.isnan(u.isel(step=-1)).all(), cid
        assert np.isfinite(u.isel(step=slice(0, -1))).all(), cid


def test_a_dtype_axis_is_one_column_of_the_clocks_table(built, tmp_path):
    """Issue 27: a `dtype` grid axis (the clocks stage's `axes`) repeated the dtype column, and
    writing the table failed with "Duplicate column names found"."""
    from twoclocks.analyze.clocks import extract_clocks

    ds = open_trajectory(built[0] / "runs" / "linear" / "depth=2" / "trajectory.zarr").load()
    table = extract_clocks(ds, {}, {"dtype": "float64", "depth": 2})
    assert not table.columns.duplicated().any()
    assert set(table["dtype"]) == {"float64"} and set(table["depth"]) == {2}
    table.to_parquet(tmp_path / "clocks.parquet", index=False)
