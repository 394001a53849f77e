"""Repairs that repair (issue 27): damage a tiny study, follow the fixes the pipeline prints,
literally, and get the undamaged study back: `python -m twoclocks.verify` exits 0 and every table
is bitwise what an undamaged run wrote. Also the README's command after a kill -9 of snakemake.

The study: one ReLU grid over weight decay (stacked: one train group per dtype) and dtype
(float32, float64; a dtype grid axis end to end), 40 steps.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, TEST_CONFIG, snakemake_cmd

pytestmark = [
    pytest.mark.slow,  # whole DAGs: ~1 min each on 2 busy cores
    pytest.mark.filterwarnings("ignore:Object at .snakemake_timestamp:UserWarning"),
]
STUDY = "repair"
CELL = "relu/wd=1.0/dtype=float32"  # group relu/dtype=float32, with relu/wd=0.5/dtype=float32
CHUNK = Path("trajectory.zarr") / "train_loss" / "c" / "0" / "0"
ENV = {k: v for k, v in os.environ.items() if k != "TWOCLOCKS_CACHE"}  # train, never fetch
ENV["PYTHONPATH"] = str(REPO / "src")


def _config(path: Path) -> Path:
    raw = yaml.safe_load(TEST_CONFIG.read_text())
    raw["study"] = STUDY
    raw["base"]["steps"] = 40
    del raw["grids"]["linear"]
    raw["grids"]["relu"]["axes"]["dtype"] = ["float32", "float64"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # axes in this order: cell ids
    return path


def _snakemake(work: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(work, "--cores", "2", *args, config=config)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ENV)


def _verify(study: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "twoclocks.verify", str(study)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)


@pytest.fixture(scope="module")
def undamaged(tmp_path_factory) -> tuple[Path, Path]:
    """The study run once, undamaged: (working directory, config)."""
    work = tmp_path_factory.mktemp("undamaged")
    config = _config(work.parent / "repair.yaml")
    done = _snakemake(work, config)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, config


def _copy(undamaged, tmp_path) -> tuple[Path, Path]:
    """A private copy of the undamaged working directory, with hard links and times kept (the
    published stores share their files with the train output) and Snakemake's records."""
    work = tmp_path / "work"
    subprocess.run(["cp", "-a", str(undamaged[0]), str(work)], check=True)
    return work, work / "results" / STUDY


def follow(printed: str, work: Path, config: Path) -> list[str]:
    """Do what every ``Fix:`` line of `printed` says, in order: delete each path it names
    (relative paths are under `work`), then rerun snakemake once if any line says so. Returns
    the fixes followed and the rerun's output."""
    fixes = re.findall(r"Fix: (.*)", printed)
    assert fixes, printed[-3000:]
    for fix in fixes:
        for path in re.findall(r"delete (\S+)", fix):
            target = work / path.rstrip(".,;")
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if any("rerun snakemake" in fix for fix in fixes):
        rerun = _snakemake(work, config)
        return [*fixes, rerun.stdout + rerun.stderr]
    return fixes


def failed_logs(output: str, work: Path) -> str:
    """What the logs of the jobs that failed say (Snakemake prints their paths)."""
    paths = re.findall(r"log: (\S+)", output)
    return "\n".join((work / p).read_text() for p in paths if (work / p).is_file())


def assert_same_tables(repaired: Path, undamaged: Path) -> None:
    """Every table of the study, and every store, bitwise as the undamaged run wrote them."""
    assert (repaired / "clocks.csv").read_bytes() == (undamaged / "clocks.csv").read_bytes()
    tables = ["clocks.parquet", "fits.parquet"]
    tables += [str(p.relative_to(undamaged)) for p in undamaged.glob("runs/**/clocks.parquet")]
    assert len(tables) == 6
    for name in tables:
        pd.testing.assert_frame_equal(
            pd.read_parquet(repaired / name), pd.read_parquet(undamaged / name), check_exact=True
        )
    for manifest in undamaged.glob("runs/**/manifest.json"):
        mine = json.loads((repaired / manifest.relative_to(undamaged)).read_text())
        assert mine["checksums"] == json.loads(manifest.read_text())["checksums"], manifest
    for name in ("claims.json", "fits.json"):
        mine, theirs = (json.loads((d / name).read_text()) for d in (repaired, undamaged))
        key = "claims" if name == "claims.json" else "cells"
        assert mine[key] == theirs[key], name


def test_the_undamaged_study_verifies_with_a_dtype_axis(undamaged):
    study = undamaged[0] / "results" / STUDY
    res = _verify(study)
    assert res.returncode == 0, res.stderr
    assert "4 of 4 stores intact" in res.stdout
    clocks = pd.read_parquet(study / "clocks.parquet")
    assert set(clocks["dtype"]) == {"float32", "float64"}
    cells = {f"relu/wd={w}/dtype={d}" for w in ("0.5", "1.0") for d in ("float32", "float64")}
    assert set(clocks["cell_id"]) == cells


def test_deleted_copied_unmanifested_and_untrained_cells_are_repaired(undamaged, tmp_path):
    """Four kinds of damage at once; verify names each with its fix; one rerun repairs all.
    (Snakemake >= 7.7 would say "Nothing to be done" for a deleted runs/<cell> had the final
    targets not named every planned cell.)"""
    work, study = _copy(undamaged, tmp_path)
    runs = study / "runs"
    shutil.rmtree(runs / CELL)  # a deleted cell; its train output is intact
    shutil.copytree(runs / "relu/wd=0.5/dtype=float32", runs / "relu/wd=9.0/dtype=float32")
    (runs / "relu/wd=0.5/dtype=float32/manifest.json").unlink()  # never validated
    shutil.rmtree(study / "stacked/relu/dtype=float64/train")  # a deleted train output...
    shutil.rmtree(runs / "relu/wd=0.5/dtype=float64")  # ...and one of its cells: retrained
    damaged = _verify(study)
    assert damaged.returncode == 1
    for cid in (CELL, "relu/wd=9.0/dtype=float32", "relu/wd=0.5/dtype=float32"):
        assert f"PROBLEM {runs / cid}:" in damaged.stderr, cid
    done = follow(damaged.stderr, work, undamaged[1])
    assert "Nothing to be done" not in done[-1]
    assert (study / "stacked/relu/dtype=float64/train/group.json").is_file()  # retrained
    res = _verify(study)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (runs / "relu/wd=9.0/dtype=float32").exists()
    assert_same_tables(study, undamaged[0] / "results" / STUDY)


def test_a_flipped_byte_is_repaired_by_the_printed_fixes(undamaged, tmp_path):
    """A byte flipped in place is damage shared by the published store and the train output
    (hard links): the first fix (delete the cell) republishes, which stops on the train
    output's checksums with the second fix (delete the group's train output); that retrains."""
    work, study = _copy(undamaged, tmp_path)
    chunk = study / "runs" / CELL / CHUNK
    assert chunk.stat().st_nlink == 2
    with open(chunk, "r+b") as fh:
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    damaged = _verify(study)
    assert damaged.returncode == 1 and "content differs from the manifest" in damaged.stderr
    *_, rerun = follow(damaged.stderr, work, undamaged[1])
    group = study / "stacked" / "relu" / "dtype=float32" / "train"
    said = failed_logs(rerun, work)
    assert f"Fix: delete {group.relative_to(work)} and rerun snakemake" in said, rerun[-3000:]
    *_, rerun = follow(said, work, undamaged[1])
    assert "Nothing to be done" not in rerun
    res = _verify(study)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_tables(study, undamaged[0] / "results" / STUDY)


def _readme_unlock_command() -> str:
    """The README's command for a stale lock (a line with `--unlock`)."""
    lines = [ln for ln in (REPO / "README.md").read_text().splitlines() if "--unlock" in ln]
    assert lines, "README.md does not say how to remove a stale lock"
    return re.search(r"`(snakemake [^`]*--unlock[^`]*)`", lines[0])[1]


def test_readme_commands_resume_after_kill_9(undamaged, tmp_path):
    """kill -9 of the snakemake process (and its jobs) mid-training: the same command stops on
    the stale lock and says --unlock; the README's unlock command, then the same command again,
    finish the study, bitwise as if never interrupted."""
    work = tmp_path / "work"
    work.mkdir()
    config = undamaged[1]
    cmd = snakemake_cmd(work, "--cores", "2", config=config)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True
    )
    try:
        state = work / "results" / STUDY / "state"
        deadline = time.monotonic() + 600
        while not any(state.rglob("*")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "snakemake finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    again = _snakemake(work, config)
    said = again.stdout + again.stderr
    assert again.returncode != 0 and "--unlock" in said, said[-3000:]
    unlock = shlex.split(_readme_unlock_command())
    assert unlock[0] == "snakemake" and "--unlock" in unlock
    args = [str(config) if a == "config/<study>.yaml" else a for a in unlock[1:]]
    unlocked = subprocess.run(
        snakemake_cmd(work, *args, config=None), capture_output=True, text=True, env=ENV
    )
    assert unlocked.returncode == 0, unlocked.stderr[-3000:]
    done = _snakemake(work, config)
    assert done.returncode == 0, done.stderr[-3000:]
    study = work / "results" / STUDY
    assert _verify(study).returncode == 0
    assert_same_tables(study, undamaged[0] / "results" / STUDY)
