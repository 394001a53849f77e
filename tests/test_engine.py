"""Training engine: equivalence, member independence, determinism, resume, divergence, devices."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RELU_CELL

from twoclocks.data.modular import make_modular
from twoclocks.data.teacher import make_teacher
from twoclocks.train import store as ts
from twoclocks.train.engine import log_steps, progress_stream, snapshot_steps, train_cell
from twoclocks.train.models import ReluEmbedNet, init_params, model_spec

CELL = dict(TINY_RELU_CELL)


@pytest.fixture(scope="module")
def modular():
    return make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    ds = ts.open_trajectory(path).load()
    return {n: v.values for n, v in {**ds.data_vars, **ds.coords}.items()}


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k, strict=True)


def test_schedules():
    assert list(log_steps(25, 3, 10)) == [0, 1, 2, 3, 10, 20, 25]
    snaps = snapshot_steps(1000, 6)
    assert len(snaps) == 6 and snaps[0] == 0 and snaps[-1] == 1000
    assert np.all(np.diff(snaps) > 0) and np.all(np.diff(np.log(snaps[1:])) > 0.5)


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_engine_matches_torch_adamw_reference(modular, tmp_path):
    cell = dict(CELL, dtype="float64", steps=200, snapshot_count=2, lr=[1e-2, 3e-3, 2e-2])
    out = train_cell(cell, modular, tmp_path / "run" / "trajectory.zarr")
    traj = ts.open_trajectory(out).load()
    spec = model_spec(cell, modular.attrs)
    p0 = init_params(spec, cell["seeds"], dtype=torch.float64)
    x = torch.as_tensor(modular["x_train"].values)
    y = torch.as_tensor(modular["y_train"].values)
    for i, lr in enumerate(cell["lr"]):
        net = ReluEmbedNet.from_member(spec, p0, i)
        opt = torch.optim.AdamW(
            list(net.block_params().values()), lr=lr, weight_decay=1.0, betas=(0.9, 0.98)
        )
        for _ in range(200):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        for name, v in net.block_params().items():
            got = traj[f"snap_{name}"].values[i, -1]
            ref = v.detach().numpy()
            assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max(), name
        logits = net(x).detach()
        loss = F.cross_entropy(logits.double(), y).item()
        assert traj.train_loss.values[i, -1] == pytest.approx(loss, rel=1e-9)
    assert traj.checkpoint_step.values.tolist() == [0, 200]
    np.testing.assert_allclose(traj.tau.values[:, -1], np.array(cell["lr"]) * 200)


@pytest.mark.slow  # > 1.5 s: full suite only (fast tier < 90 s)
def test_member_independent_of_stack(modular, tmp_path):
    a = dict(CELL, seeds=[0, 1, 2], lr=[1e-2, 3e-3, 5e-3], weight_decay=[1.0, 0.5, 0.1])
    b = dict(CELL, seeds=[2, 5], lr=[5e-3, 1e-2], weight_decay=[0.1, 2.0])
    ra = ts.open_trajectory(train_cell(a, modular, tmp_path / "a" / "trajectory.zarr")).load()
    rb = ts.open_trajectory(train_cell(b, modular, tmp_path / "b" / "trajectory.zarr")).load()
    for name, var in ra.data_vars.items():
        np.testing.assert_array_equal(
            var.sel(seed=2).values, rb[name].sel(seed=2).values, err_msg=name, strict=True
        )


def test_same_config_bitwise_identical_store(modular, tmp_path):
    cell = dict(CELL, model="deep_linear", depth=3, width=8, balanced_init=True)
    a = train_cell(cell, modular, tmp_path / "a" / "trajectory.zarr")
    b = train_cell(cell, modular, tmp_path / "b" / "trajectory.zarr")
    _assert_identical(_arrays(a), _arrays(b))
    assert ts.open_trajectory(a).attrs == ts.open_trajectory(b).attrs


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_divergent_member_frozen_others_unchanged(modular, tmp_path):
    bad = dict(CELL, seeds=[0, 1, 2], lr=[1e-2, 1e30, 1e-2])
    ok = dict(CELL, seeds=[0, 2], lr=[1e-2, 1e-2])
    rb = ts.open_trajectory(train_cell(bad, modular, tmp_path / "bad" / "trajectory.zarr")).load()
    ro = ts.open_trajectory(train_cell(ok, modular, tmp_path / "ok" / "trajectory.zarr")).load()
    div = rb.diverged_step.values
    assert div[0] == -1 and div[2] == -1 and div[1] >= 1
    status = json.loads(rb.attrs["seed_status"])
    assert status == {"0": "ok", "1": f"diverged@{div[1]}", "2": "ok"}
    loss = rb.train_loss.sel(seed=1)
    assert np.isnan(loss.sel(step=slice(div[1], None))).all()
    assert np.isfinite(loss.sel(step=slice(None, div[1] - 1))).all()
    for name, var in ro.data_vars.items():
        if name == "diverged_step":
            continue
        np.testing.assert_array_equal(
            var.values, rb[name].sel(seed=[0, 2]).values, err_msg=name, strict=True
        )


def test_cuda_without_gpu_is_a_clear_error(modular, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="device: auto"):
        train_cell(dict(CELL, device="cuda"), modular, tmp_path / "x" / "trajectory.zarr")


def test_store_attrs_and_partial_never_visible(modular, tmp_path, monkeypatch):
    store_path = tmp_path / "runs" / "c" / "trajectory.zarr"
    seen = []
    real_save = ts.save_state

    def spy(state_dir, arrays):
        real_save(state_dir, arrays)
        seen.append((store_path.exists(), ts.partial_path(store_path).exists()))

    monkeypatch.setattr(ts, "save_state", spy)
    cell = dict(CELL, task="teacher", model="deep_linear", depth=2, width=6, balanced_init=False)
    cell.update(
        input_dim=5, num_classes=3, teacher_rank=2, train_size=30, test_size=20, data_seed=0
    )
    data = make_teacher(
        input_dim=5, num_classes=3, teacher_rank=2, train_size=30, test_size=20, data_seed=0
    )
    out = train_cell(cell, data, store_path)
    assert seen and all(s == (False, True) for s in seen)
    assert out == store_path and store_path.exists()
    assert not ts.partial_path(store_path).exists() and not ts.state_path(store_path).exists()
    ds = ts.open_trajectory(out)
    assert json.loads(ds.attrs["cell"]) == cell
    prov = json.loads(ds.attrs["provenance"])
    assert prov["dtype"] == "float32" and prov["device"] == "cpu"
    assert ds.attrs["dtype"] == "float32" and ds.attrs["device"] == "cpu"
    for name, var in {**ds.data_vars, **ds.coords}.items():
        assert var.attrs.get("long_name") and var.attrs.get("units"), name
    assert {"schatten_energy", "balancedness_gap", "separation_gap"} <= set(ds.data_vars)
    assert "fourier_gap" not in ds and "gate_flip_fraction" not in ds
    assert ds.block.values.tolist() == ["W1", "W2"] and ds.matrix.values.tolist() == [
        "W1",
        "W2",
        "A",
    ]
    assert ds.step.values.tolist() == log_steps(120, 10, 10).tolist()
    assert np.all(ds.balancedness_gap.values >= -1e-4)


RUNNER = textwrap.dedent(
    """
    import json, logging, os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from twoclocks.data.modular import make_modular
    from twoclocks.train import store as ts
    from twoclocks.train.engine import train_cell

    logging.basicConfig(level=logging.INFO)
    cell = json.loads(sys.argv[1])
    kill_after, sig = int(sys.argv[3]), sys.argv[4]
    calls = []
    real_save = ts.save_state

    def save(state_dir, arrays):
        real_save(state_dir, arrays)
        calls.append(int(arrays["step"]))
        if sig == "SIGKILL" and len(calls) == kill_after:
            os.kill(os.getpid(), getattr(signal, sig))

    ts.save_state = save  # runs on the writer thread: SIGKILL right after a durable state

    def on_step(t):  # SIGTERM from the training thread right after a fixed update
        if sig == "SIGTERM" and kill_after and t == 40 * kill_after + 1:
            os.kill(os.getpid(), signal.SIGTERM)

    ds = make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)
    train_cell(cell, ds, Path(sys.argv[2]), on_step=on_step)
    print("saved", calls)
    """
)


def _run(script: Path, cell: dict, path: Path, kill_after: int, sig: str):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(script), json.dumps(cell), str(path), str(kill_after), sig],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "rows_per_decade"), [("SIGKILL", 0), ("SIGTERM", 0), ("SIGKILL", 10), ("SIGTERM", 10)]
)
def test_resume_after_kill_is_bitwise_identical(modular, tmp_path, sig, rows_per_decade):
    """Also on the geometric cadence (`log_rows_per_decade`; rows 40, 50, 62, 78, 98, 120)."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    cell = dict(CELL, seeds=[0, 1])
    if rows_per_decade:
        cell["log_rows_per_decade"] = rows_per_decade
    path = tmp_path / "killed" / "trajectory.zarr"
    first = _run(script, cell, path, 2, sig)
    assert first.returncode == (-9 if sig == "SIGKILL" else 128 + 15), first.stderr
    assert not path.exists() and ts.partial_path(path).exists()
    saved = ts.load_state(ts.state_path(path))
    # SIGKILL dies right after the 2nd checkpoint (step 80) is on disk; SIGTERM, sent by the
    # training thread during update 81, is answered with a save at step 81.
    assert int(saved["step"]) == (80 if sig == "SIGKILL" else 81)
    second = _run(script, cell, path, 0, "SIGKILL")
    assert second.returncode == 0, second.stderr
    assert f"resuming cell at step {int(saved['step'])}" in second.stderr
    # progress: counted from the resumed step (no rate over steps this run did not take)
    rows = log_steps(cell["steps"], 10, 10, rows_per_decade)
    last_row = int(rows[rows <= int(saved["step"])][-1])  # 80 linear, 78 geometric
    want = f"step {int(saved['step'])}/{cell['steps']} resuming, 2 members; @{last_row} "
    assert want in second.stderr
    ref = train_cell(cell, modular, tmp_path / "ref" / "trajectory.zarr")
    _assert_identical(_arrays(path), _arrays(ref))


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("real_tty", "stderr_tty", "progress", "drawn"),
    [
        (True, False, None, True),  # interactive snakemake: sys.stderr is the rule's log file
        (False, True, None, False),  # batch job whose code swapped in a TTY-like stderr
        (False, False, None, False),
        (True, True, False, False),
        (False, False, True, True),
    ],
)
def test_progress_bar_decided_on_the_real_stderr(
    monkeypatch, real_tty, stderr_tty, progress, drawn
):
    real = _Stream(real_tty)
    monkeypatch.setattr(sys, "__stderr__", real)
    monkeypatch.setattr(sys, "stderr", _Stream(stderr_tty))
    assert progress_stream(progress) is (real if drawn else None)


def test_progress_stream_without_a_real_stderr(monkeypatch):
    monkeypatch.setattr(sys, "__stderr__", None)
    assert progress_stream(None) is None and progress_stream(True) is None


def test_bar_goes_to_the_terminal_not_the_log(modular, tmp_path, monkeypatch):
    terminal, log_file = _Stream(True), _Stream(False)
    monkeypatch.setattr(sys, "__stderr__", terminal)
    monkeypatch.setattr(sys, "stderr", log_file)
    cell = dict(CELL, seeds=[0], steps=30, snapshot_count=2)
    train_cell(cell, modular, tmp_path / "trajectory.zarr")
    drawn = terminal.getvalue()
    assert "30/30" in drawn and cell["cell_id"] in drawn
    assert "30/30" not in log_file.getvalue()
    # the bar's text: train CE and test accuracy of the last log row, never NaN
    assert "@30 train_ce " in drawn and "test_acc " in drawn
    assert "nan" not in drawn.lower()


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]


def test_progress_lines_in_a_log(modular, tmp_path, monkeypatch, caplog):
    """No terminal: periodic log lines with step, steps/s, ETA and the members' CE and test
    accuracy (median [min, max]); step 0 has no rate, so no NaN ETA."""
    import twoclocks.train.progress as progress

    monkeypatch.setattr(progress, "PROGRESS_MIN_INTERVAL_S", 0.0)
    caplog.set_level("INFO", logger="twoclocks.train")
    cell = dict(CELL, steps=40, snapshot_count=2, log_dense_steps=3, log_every_steps=10)
    out = train_cell(cell, modular, tmp_path / "trajectory.zarr", progress=False)
    lines = _progress_lines(caplog)
    assert lines[0].startswith("step 0/40 starting, 3 members; @0 train_ce ")
    assert "steps/s" not in lines[0] and "ETA" not in lines[0]
    # every 5% of 40 steps = 2 steps, then the end
    assert [int(m.split()[1].split("/")[0]) for m in lines] == list(range(0, 41, 2))
    assert all("steps/s ETA " in m for m in lines[1:-1]) and "done" in lines[-1]
    assert not any("nan" in m.lower() for m in lines)
    # the summary is the store's last row: median [min, max] over the 3 members
    traj = ts.open_trajectory(out).load()
    ce = traj["train_loss"].isel(step=-1).values
    acc = traj["test_acc"].isel(step=-1).values
    want = (
        f"@40 train_ce {np.median(ce):.4g} [{ce.min():.4g}, {ce.max():.4g}] "
        f"test_acc {np.median(acc):.3f} [{acc.min():.3f}, {acc.max():.3f}]"
    )
    assert lines[-1].endswith(want)
    # between log rows (10, 20, ...) a line shows the latest row at or before its step
    assert "; @10 train_ce " in next(m for m in lines if m.startswith("step 12/40"))


def test_progress_lines_are_rare_in_a_fast_run(modular, tmp_path, caplog):
    """The 30 s floor: a run that takes a second logs its start and its end only."""
    caplog.set_level("INFO", logger="twoclocks.train")
    cell = dict(CELL, seeds=[0], steps=40, snapshot_count=2)
    train_cell(cell, modular, tmp_path / "trajectory.zarr", progress=False)
    lines = _progress_lines(caplog)
    assert len(lines) == 2 and lines[0].startswith("step 0/40 starting, 1 member;")
    assert lines[1].startswith("step 40/40 ") and "done" in lines[1]
    # one member: its value, no range
    assert "[" not in lines[1]
