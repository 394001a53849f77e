"""One copy of each trajectory on disk (hard-linked unstacking), no empty state dirs left."""

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import snakemake_cmd

from twoclocks.fsutil import link_tree, prune_empty_dirs

REPO = Path(__file__).resolve().parents[1]


def _store(path: Path) -> None:
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("train_loss", shape=(3, 50), dtype="f8")[:] = np.arange(150.0).reshape(3, 50)
    group.attrs["cell"] = "relu/wd=1.0"


def _files(root: Path) -> list[Path]:
    """Data files under root (not Snakemake's .snakemake_timestamp marker)."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.name != ".snakemake_timestamp"
    )


def test_link_tree_shares_the_data_and_either_name_survives_the_other(tmp_path):
    src, dst = tmp_path / "stacked" / "t.zarr", tmp_path / "runs" / "c" / "t.zarr"
    _store(src)
    assert link_tree(src, dst) == "linked"
    assert _files(src) == _files(dst) and _files(src)
    for rel in _files(src):
        a, b = (src / rel).stat(), (dst / rel).stat()
        assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev) and a.st_nlink == 2
    # zarr rewrites by rename: changing the published store leaves the train output alone
    zarr.open_group(str(dst), mode="r+").attrs["cell"] = "changed"
    assert zarr.open_group(str(src), mode="r").attrs["cell"] == "relu/wd=1.0"
    import shutil

    shutil.rmtree(src)
    loss = zarr.open_group(str(dst), mode="r")["train_loss"][:]
    np.testing.assert_array_equal(loss, np.arange(150.0).reshape(3, 50))


def test_link_tree_copies_where_links_are_impossible(tmp_path, monkeypatch):
    src, dst = tmp_path / "a.zarr", tmp_path / "b.zarr"
    _store(src)

    def no_links(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    assert link_tree(src, dst) == "copied"
    rel = _files(src)[0]
    assert (src / rel).stat().st_ino != (dst / rel).stat().st_ino
    assert (src / rel).read_bytes() == (dst / rel).read_bytes()


def test_prune_empty_dirs_stops_at_content_and_at_the_stop(tmp_path):
    stop = tmp_path / "results" / "s"
    (stop / "state" / "relu" / "wd=1.0").mkdir(parents=True)
    (stop / "state" / "linear" / "depth=2" / "work").mkdir(parents=True)
    (stop / "state" / "linear" / "depth=2" / "work" / "state.npz").write_bytes(b"x")
    removed = prune_empty_dirs(stop / "state" / "relu" / "wd=1.0", stop)
    assert removed == [stop / "state" / "relu" / "wd=1.0", stop / "state" / "relu"]
    assert (stop / "state" / "linear").is_dir()  # another group's resume state stays
    (stop / "state" / "linear" / "depth=2" / "work" / "state.npz").unlink()
    prune_empty_dirs(stop / "state" / "linear" / "depth=2" / "work", stop)
    assert sorted(stop.iterdir()) == []  # state/ went too; the study dir stays
    with pytest.raises(ValueError, match="is not under"):
        prune_empty_dirs(tmp_path / "elsewhere", stop)


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_pipeline_keeps_one_copy_and_no_empty_state_dirs(tmp_path):
    """Train and unstack the tiny relu group (two stacked cells) through Snakemake."""
    targets = [f"results/test/runs/relu/wd={wd}/manifest.json" for wd in ("0.5", "1.0")]
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "--cores", "2", *targets),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = tmp_path / "results" / "test"
    for wd in ("0.5", "1.0"):
        run = study / "runs" / "relu" / f"wd={wd}" / "trajectory.zarr"
        files = _files(run)
        assert files
        assert all((run / f).stat().st_nlink == 2 for f in files), "published store not linked"
    inodes = {}
    for p in (study / "stacked").rglob("*"):
        if p.is_file():
            inodes[p.stat().st_ino] = p
    for p in (study / "runs").rglob("*"):
        if p.is_file() and p.name not in ("manifest.json", ".snakemake_timestamp"):
            assert p.stat().st_ino in inodes, f"{p} is a second copy"
    assert not (study / "state").exists(), sorted((study / "state").rglob("*"))
