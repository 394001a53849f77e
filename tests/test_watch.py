"""The live view reads growing stores without corrupting them or crashing on unwritten rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from twoclocks import watch as W
from twoclocks.train import store as ts

SEEDS = [0, 1, 0, 1]  # two cells x two seeds, stacked as in a weight-decay group
N_STEPS = 1300  # three STEP_CHUNKs: writes rewrite whole chunks, some of them partly filled
CELLS = ["relu/wd=0.5", "relu/wd=1.0"]


def expected(name: str, member: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The value the writer puts at (member, step): any torn or misplaced read shows up."""
    base = {"train_loss": 1.0, "test_loss": 2.0, "train_acc": 3.0, "test_acc": 4.0}[name]
    return base + member * 0.25 + 1.0 / (1.0 + step)


def layout() -> ts.StoreLayout:
    steps = np.arange(N_STEPS, dtype=np.int64)
    metrics = {m: (None, m, "1") for m in ("train_loss", "test_loss", "train_acc", "test_acc")}
    cell = {"cell_id": "+".join(CELLS), "seeds": SEEDS}
    return ts.StoreLayout(
        seeds=SEEDS,
        steps=steps,
        tau=np.outer(np.ones(len(SEEDS)), steps * 0.01),
        blocks=["W1"],
        matrices=["W1"],
        sv_count=1,
        checkpoint_steps=np.array([0, N_STEPS - 1]),
        metrics=metrics,
        snapshots={},
        attrs={"cell": json.dumps(cell)},
    )


def write_store(path: str, pause_s: float) -> None:
    """Create the store and fill it 37 rows at a time, as the engine's writer does."""
    lay = layout()
    ts.create_store(Path(path), lay)
    bufs = {m: np.full(lay.metric_shape(m), np.nan) for m in lay.metrics}
    bufs["diverged_step"] = np.full(len(SEEDS), -1, dtype=np.int64)
    member = np.arange(len(SEEDS))[:, None]
    for lo in range(0, N_STEPS, 37):
        hi = min(N_STEPS, lo + 37)
        for m in lay.metrics:
            bufs[m][:, lo:hi] = expected(m, member, np.arange(lo, hi)[None, :])
        ts.write_rows(Path(path), lay, bufs, lo, hi)
        time.sleep(pause_s)


def _writer(path: Path, pause_s: float) -> subprocess.Popen:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"from test_watch import write_store; write_store({str(path)!r}, {pause_s})"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None) as ds:
        return {k: ds[k].values.copy() for k in ds.variables}


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_watching_a_growing_store_never_corrupts_it_nor_crashes(tmp_path):
    study = tmp_path / "study"
    running = study / "state" / "relu" / "work" / "stacked.zarr.partial"
    running.parent.mkdir(parents=True)
    proc = _writer(running, 0.05)
    full = N_STEPS * len(SEEDS) * 4
    rows_seen = []
    try:
        while proc.poll() is None:
            data, summary, _notes = W.snapshot(study)  # never raises, whatever it catches
            if len(data):
                member = np.array([CELLS.index(c) * 2 for c in data["cell_id"]])
                member += (data["seed"].to_numpy() == 1).astype(int)
                want = [
                    expected(m, i, s)
                    for m, i, s in zip(data["metric"], member, data["step"], strict=True)
                ]
                # every value read is the one written there: no torn or misplaced reads, and
                # no NaN placeholder ever shows up as a value
                np.testing.assert_allclose(data["value"].to_numpy(float), want, rtol=1e-12)
                assert set(summary["cell"]) == set(CELLS)
                assert (summary["status"] == "running").all()
            rows_seen.append(len(data))
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0
    # the reads overlapped the writes: some saw a part of the rows (36 writes 50 ms apart)
    assert any(0 < n < full for n in rows_seen), rows_seen[:: max(1, len(rows_seen) // 20)]
    data, summary, notes = W.snapshot(study)
    assert len(data) == full and not notes and (summary["step"] == N_STEPS - 1).all()
    reference = tmp_path / "alone.zarr"
    write_store(str(reference), 0.0)
    got, want = _arrays(running), _arrays(reference)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.slow  # > 1.5 s: full suite only (fast tier < 90 s)
def test_discover_prefers_finished_stores_and_splits_stacked_members(tmp_path):
    study = tmp_path / "study"
    partial = study / "state" / "relu" / "work" / "stacked.zarr.partial"
    partial.parent.mkdir(parents=True)
    write_store(str(partial), 0.0)
    (src,) = W.discover(study)
    assert src.status == "running" and src.cells == tuple(CELLS)
    data = W.read_progress(src)
    assert sorted(data.groupby("cell_id")["seed"].unique().map(sorted).map(list)) == [
        [0, 1],
        [0, 1],
    ]
    # once a cell is published under runs/, its finished store replaces the running one
    finished = study / "runs" / "relu" / "wd=0.5" / "trajectory.zarr"
    finished.parent.mkdir(parents=True)
    write_store(str(finished), 0.0)
    srcs = W.discover(study)
    assert [(s.status, s.cells) for s in srcs] == [
        ("finished", ("relu/wd=0.5",)),
        ("running", ("relu/wd=1.0",)),
    ]


def test_unwritten_rows_are_left_out(tmp_path):
    path = tmp_path / "s.zarr"
    ts.create_store(path, layout())  # only NaN placeholders
    data = W.read_progress(W.Source(path, tuple(CELLS), "running"))
    assert data.empty
    summary = W.summarise(data, {c: "running" for c in CELLS})
    assert summary["step"].isna().all()


def test_cli_writes_an_offline_page_and_rejects_a_missing_folder(tmp_path, capsys):
    study = tmp_path / "study"
    finished = study / "runs" / "relu" / "wd=0.5" / "trajectory.zarr"
    finished.parent.mkdir(parents=True)
    write_store(str(finished), 0.0)
    assert W.main([str(study), "--once", "--every", "5"]) == 0
    page = (study / "watch.html").read_text()
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "window.vegaEmbed=" in page and "<script src" not in page
    out = capsys.readouterr().out
    assert "relu/wd=0.5" in out and "finished" in out
    with pytest.raises(SystemExit):
        W.main([str(tmp_path / "nope"), "--once"])
    assert "not a directory" in capsys.readouterr().err
