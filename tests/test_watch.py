"""The live view reads growing stores without corrupting them or crashing on unwritten rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
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


# --- every planned cell, killed jobs, exit when done, one statistic, progress (#26, #29) ---

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"  # cells relu/wd=0.5, relu/wd=1.0 (group relu), linear


def _finished(study: Path, cell: str) -> None:
    store = study / "runs" / cell / "trajectory.zarr"
    store.parent.mkdir(parents=True)
    ts.create_store(store, layout())  # rows unwritten: the status comes from the path alone


def test_a_job_marker_says_running_while_alive_and_failed_on_an_exception(tmp_path):
    from twoclocks import liveness

    work = tmp_path / "state" / "relu" / "work"
    assert liveness.job_state(work)[0] == "unknown"
    with liveness.job_marker(work):
        assert liveness.job_state(work)[0] == "running"
    with pytest.raises(ValueError), liveness.job_marker(work):
        raise ValueError("loss is NaN")
    state, record = liveness.job_state(work)
    assert state == "failed" and "ValueError: loss is NaN" in record["reason"]


def test_a_killed_job_shows_as_failed_never_running(tmp_path):
    """The kernel's OOM killer sends SIGKILL: no exception handler runs, the pid is gone."""
    study = tmp_path / "study"
    work = study / "state" / "relu" / "work"
    ts.create_store(work / "stacked.zarr.partial", layout())
    code = (
        "import os, signal, sys; from twoclocks.liveness import job_marker\n"
        f"with job_marker({str(work)!r}):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -9
    (src,) = W.discover(study)
    assert src.status == "failed" and "is gone" in src.note
    _data, summary, _notes = W.snapshot(study)
    assert set(summary["status"]) == {"failed"} and summary["note"].str.contains("gone").all()


def test_every_planned_cell_is_listed_and_watch_exits_when_the_study_is_done(tmp_path, capsys):
    from twoclocks.config import load_config
    from twoclocks.liveness import job_marker

    plan = load_config(TEST_CONFIG)
    study = tmp_path / "test"
    _finished(study, "linear/depth=2")
    with job_marker(study / "state" / "relu" / "work"):  # relu group started, no rows yet
        _data, summary, _notes = W.snapshot(study, plan)
        assert dict(zip(summary["cell"], summary["status"], strict=True)) == {
            "relu/wd=0.5": "running",
            "relu/wd=1.0": "running",
            "linear/depth=2": "finished",
            "linear/depth=3": "pending",
        }
        assert W.main([str(study), "--configfile", str(TEST_CONFIG), "--once"]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 1 pending, 2 running" in out and "linear/depth=3" in out
    for cell in ("relu/wd=0.5", "relu/wd=1.0", "linear/depth=3"):
        _finished(study, cell)
    # without --once it returns by itself: every planned cell is finished
    assert W.main([str(study), "--configfile", str(TEST_CONFIG), "--every", "3600"]) == 0
    assert "study done" in capsys.readouterr().out


def test_watch_without_a_plan_says_how_to_stop_and_how_to_list_pending_cells(tmp_path, capsys):
    study = tmp_path / "nameless"
    _finished(study, "relu/wd=0.5")
    assert W.load_plan(study) == (None, "no config found for nameless (pass --configfile)")
    data, summary, _ = W.snapshot(study)
    assert not W.done(summary, None)  # unknown plan: never claims the study is done
    assert W.main([str(study), "--once"]) == 0
    assert "pass --configfile" in capsys.readouterr().out


def test_table_and_plots_show_the_same_statistic(tmp_path):
    """Three seeds at 0.1, 0.2, 3.0: the median (0.2) in both, never the mean (1.1)."""
    rows = [
        {"cell_id": "relu/wd=0.5", "seed": s, "step": 10.0, "metric": m, "value": v}
        for s, v in enumerate([0.1, 0.2, 3.0])
        for m in ("train_loss", "test_acc")
    ]
    data = pd.DataFrame(rows)
    summary = W.summarise(data, {"relu/wd=0.5": "running"})
    assert summary["train CE"].tolist() == [pytest.approx(0.2)]
    spec = W.chart(data).to_dict()
    plotted = [
        r["value"]
        for values in spec["datasets"].values()
        for r in values
        if r["metric"] == "train_loss"
    ]
    assert plotted == [pytest.approx(0.2)]


def test_progress_counts_member_steps_and_prices_the_rest_from_the_eta_plan(tmp_path):

    from twoclocks.config import load_config

    plan = load_config(TEST_CONFIG)
    study = tmp_path / "test"
    _finished(study, "linear/depth=2")
    (study / "data" / "x.zarr").mkdir(parents=True)
    data, summary, _ = W.snapshot(study, plan)
    prog = W.progress(study, data, summary, plan)
    planned = sum(len(c.params["seeds"]) * c.params["steps"] for c in plan.cells)
    assert prog["member_steps_planned"] == planned == 4 * 2 * 120
    assert prog["member_steps_done"] == 2 * 120  # the finished cell, in full
    assert prog["elapsed_s"] is not None and prog["remaining_s"] is None
    assert "member-steps 240/960 (25%)" in W.headline(prog)
    assert "remaining: no estimate" in W.headline(prog)
    # the plan Snakemake saves at the start of a run prices what is left: one group not yet
    # trained, 2 members x 125 steps at 0.5 s per member-step = 125 s
    from twoclocks.eta import Eta, GroupPlan, write_plan

    todo = GroupPlan("linear/depth=3", members=2, steps=125, done_steps=0, work_ratio=1.0)
    write_plan(Eta("test", [todo], per_member_step_s=0.5, source="test"), study)
    assert "remaining ~2m05s" in W.headline(W.progress(study, data, summary, plan))
