"""Frozen-gate reduction (replay/frozen_gates.py): masked forward, exact replay, the fork."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_RELU_CELL

from twoclocks.analyze import claims as C
from twoclocks.data.modular import make_modular
from twoclocks.replay.frozen_gates import anchor_steps, clock_times, reduce_cell
from twoclocks.replay.stage import measure_cell
from twoclocks.train import store as ts
from twoclocks.train.engine import member_losses, train_cell
from twoclocks.train.models import init_params, model_spec

CELL = dict(TINY_RELU_CELL, snapshot_count=30)  # several snapshots on the plateau


@pytest.fixture(scope="module")
def modular():
    return make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)


@pytest.fixture(scope="module")
def trained(modular, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "trajectory.zarr"
    return ts.open_trajectory(train_cell(CELL, modular, path)).load()


@pytest.mark.parametrize("layers", [1, 2])
def test_mask_equal_to_the_live_pattern_gives_the_real_forward_and_gradients(modular, layers):
    cell = dict(CELL, hidden_layers=layers)
    spec = model_spec(cell, dict(modular.attrs))
    x = torch.as_tensor(modular["x_train"].values)
    y = torch.as_tensor(modular["y_train"].values)
    outs = []
    for gate in (None, lambda k, pre: (pre > 0).to(pre.dtype)):
        p = {k: v.requires_grad_(True) for k, v in init_params(spec, [0, 1]).items()}
        fwd = spec.forward(p, x, gate=gate)
        member_losses(fwd.logits, y).sum().backward()
        outs.append((fwd.logits.detach(), {k: v.grad for k, v in p.items()}))
    assert torch.equal(outs[0][0], outs[1][0])
    for k, g in outs[0][1].items():
        assert torch.equal(g, outs[1][1][k]), k


def test_frozen_mask_makes_the_layer_linear_in_the_active_coordinates(modular):
    spec = model_spec(CELL, dict(modular.attrs))
    x = torch.as_tensor(modular["x_train"].values)
    p = init_params(spec, [0])
    mask = (
        torch.rand(1, x.shape[0], spec.hidden_width, generator=torch.Generator().manual_seed(0))
        > 0.5
    ).float()
    fwd = spec.forward(p, x, gate=lambda k, pre: mask)
    z = p["E"][0][x[:, 0]] + p["E"][0][x[:, 1]]
    pre = z @ p["W1"][0].T + p["b1"][0]
    want = (pre * mask[0]) @ p["U"][0].T
    torch.testing.assert_close(fwd.logits[0], want, rtol=1e-5, atol=1e-5)
    # some masked-on units have negative pre-activations: the map is not the ReLU network
    assert bool(((pre < 0) & (mask[0] > 0)).any())


def test_anchor_steps_and_clock_times():
    t0, hz = anchor_steps(np.array([10.2, np.nan, 50.0]), np.array([30.0, 40.0, 40.0]), 100)
    assert t0.tolist() == [[11, -1, -1], [20, -1, -1]]
    assert hz.tolist() == [35, -1, -1]
    assert anchor_steps(np.array([10.0]), np.array([95.0]), 100)[1].tolist() == [100]
    clocks = pd.DataFrame(
        {
            "seed": [0, 1, 0, 1, 0],
            "clock": ["cls", "cls", "gen_acc", "gen_acc", "cls"],
            "level": [1e-3, 1e-3, 0.99, 0.99, 1e-2],
            "step": [12.5, 14.0, 40.0, 200.0, 5.0],
            "censored": [False, False, False, True, False],
        }
    )
    t_cls, t_gen = clock_times(clocks, [0, 1], 1e-3, 0.99)
    assert t_cls.tolist() == [12.5, 14.0]
    assert t_gen[0] == 40.0 and np.isnan(t_gen[1])


@pytest.mark.slow  # > 1.5 s: full suite only (fast tier < 90 s)
def test_reduction_replays_the_run_bitwise_and_forks_at_t0(modular, trained, tmp_path):
    t_cls, t_gen = np.array([20.0, 30.0, np.nan]), np.array([80.0, 90.0, 100.0])
    out = reduce_cell(CELL, modular, trained, t_cls, t_gen)
    steps = out["step"].values
    assert steps[-1] == out["horizon"].max() == 105
    # (a) the real branch is the original run, bitwise (metrics as the engine logs them)
    logged = np.isin(steps, trained["step"].values)
    stored = {int(s) for s in trained["step"].values if s <= 105}
    # the store's log steps, every anchor t0, ceil(T_gen) of the members with anchors, the horizon
    assert set(steps.tolist()) == stored | {20, 30, 50, 60, 80, 90, 105}
    store = trained.sel(step=steps[logged])
    for name in ("train_loss", "test_loss", "train_acc", "test_acc"):
        np.testing.assert_array_equal(out[f"real_{name}"].values[:, logged], store[name].values)
    t0 = out["t0"].values
    assert t0.tolist() == [[20, 30, -1], [50, 60, -1]]
    for k in range(2):
        for i in range(2):
            before, at = steps < t0[k, i], steps == t0[k, i]
            assert np.isnan(out["frozen_test_loss"].values[k, i, before]).all()
            # at t0 the fork has the real state: same numbers
            for name in ("train_loss", "test_loss", "train_acc", "test_acc"):
                np.testing.assert_array_equal(
                    out[f"frozen_{name}"].values[k, i, at], out[f"real_{name}"].values[i, at]
                )
            assert at.sum() == 1  # every t0 is a reduce step
            div = out["divergence"].values[k, i, steps > t0[k, i]]
            assert np.isfinite(div).all() and (div > 0).all()
            # the real network's gate drift since t0: 0 at the fork, a fraction after, NaN before
            drift = out["gate_drift"].values[k, i]
            assert np.isnan(drift[before]).all() and drift[at][0] == 0.0
            later = drift[steps > t0[k, i]]
            assert np.isfinite(later).all() and ((later >= 0) & (later <= 1)).all()
        # a member without anchors is never frozen and gets no frozen numbers
        assert np.isnan(out["frozen_train_loss"].values[k, 2]).all()
    # the frozen model's training loss is the linear model's: after t0 it differs from the
    # same parameters in the real network
    late = steps > t0[0, 0]
    assert not np.array_equal(
        out["frozen_train_loss"].values[0, 0, late],
        out["frozen_train_loss_real"].values[0, 0, late],
    )
    out.to_zarr(tmp_path / "reduce.zarr")


@pytest.fixture(scope="module")
def reduced(modular, trained):
    return reduce_cell(CELL, modular, trained, np.array([20.0, 30.0, 25.0]), np.full(3, 90.0))


def test_relu_reduction_claim_reads_every_pair_at_t_gen(trained, reduced):
    cid = CELL["cell_id"]
    study = {cid: trained}
    # the replay stage's table: gate drift from the snapshots and the reduction's rows
    measures = measure_cell(trained, cid, fourier_keep=6, reduction=reduced)
    s = C.resolve_claim_settings(None)
    runs = C.reduction_runs(measures, s)
    assert len(runs) == 6
    r = runs[f"{cid}/seed=0/cls"]
    steps = reduced["step"].values
    assert r["at_step"] == 90 and r["t0"] == 20  # ceil(T_gen) is a reduce step
    at = steps == 90
    assert r["divergence"] == pytest.approx(float(reduced["divergence"][0, 0, at][0]))
    assert r["gate_drift"] == pytest.approx(float(reduced["gate_drift"][0, 0, at][0]))
    real = reduced["real_test_loss"].values[0]
    frozen = reduced["frozen_test_loss"].values[0, 0, at][0]
    drop = np.log(real[steps == 20][0]) - np.log(real[at][0])
    assert r["test_ce_drop"] == pytest.approx(drop)
    assert r["test_ce_error"] == pytest.approx(
        abs(np.log(frozen) - np.log(real[at][0])) / abs(drop)
    )
    win = (steps > 20) & (steps <= 90)
    assert r["max_divergence"] == pytest.approx(np.nanmax(reduced["divergence"][0, 0, win]))
    # every pair is judged whatever the gate precondition; the verdict follows the stated rule
    # (the fixture's T_gen is arbitrary, so its test CE need not fall: no drop required here)
    for tol in (1e-6, 0.99):
        settings = {"reduction_tol": tol, "reduction_min_drop": -np.inf}
        claim = C.evaluate_claims(study, None, None, settings, measures=measures)[-1]
        assert claim["id"] == "relu_reduction" and "weight divergence" in claim["evidence"]
        tracked = [x["divergence"] <= tol and x["test_ce_error"] <= tol for x in runs.values()]
        assert claim["verdict"] == (C.PASS if np.mean(tracked) > 0.5 else C.FAIL)
    # without weight snapshots the precondition is unmeasured: the pairs are still judged
    bare = trained.drop_vars([v for v in trained.variables if str(v).startswith("snap_")])
    bare = bare.drop_vars("checkpoint_step")
    unmeasured = measure_cell(bare, cid, fourier_keep=6, reduction=reduced)
    loose = {"reduction_min_drop": -np.inf}
    claim = C.evaluate_claims({cid: bare}, None, None, loose, measures=unmeasured)[-1]
    assert claim["verdict"] != C.INCONCLUSIVE and "held in no run" in claim["evidence"]
    # the reduce stage's store given directly is folded in the same way
    direct = C.evaluate_claims({cid: bare}, None, None, loose, {cid: reduced})[-1]
    assert direct["evidence"] == claim["evidence"]
    # without the stage the claim is not listed
    plain = measure_cell(trained, cid, fourier_keep=6)
    assert all(c["id"] != "relu_reduction" for c in C.evaluate_claims(study, None, None))
    assert all(
        c["id"] != "relu_reduction"
        for c in C.evaluate_claims(study, None, None, None, measures=plain)
    )


def test_replay_that_misses_a_snapshot_stops_with_the_step_and_block(modular, trained):
    bad = trained.copy(deep=True)
    bad["snap_W1"][dict(checkpoint=2)] = bad["snap_W1"][dict(checkpoint=2)] + 1e-7
    step = int(bad["checkpoint_step"].values[2])
    with pytest.raises(RuntimeError, match=f"step {step}, block W1"):
        reduce_cell(CELL, modular, bad, np.array([20.0] * 3), np.array([80.0] * 3))


def test_no_usable_clock_is_a_clear_error(modular, trained):
    with pytest.raises(ValueError, match="nothing to reduce"):
        reduce_cell(CELL, modular, trained, np.full(3, np.nan), np.full(3, 80.0))


def test_stage_writes_both_trajectories_from_the_clocks_table(modular, trained, tmp_path):
    import xarray as xr

    from twoclocks.replay.frozen_gates import run_stage

    store = tmp_path / "trajectory.zarr"
    trained.to_zarr(store)
    rows = [(s, "cls", 1e-3, 20.0 + 5 * s, False) for s in range(3)]
    rows += [(s, "gen_acc", 0.99, 60.0, s == 2) for s in range(3)]  # seed 2 never generalised
    clocks = pd.DataFrame(rows, columns=["seed", "clock", "level", "step", "censored"])
    clocks.to_parquet(tmp_path / "clocks.parquet")
    out_path = tmp_path / "reduce.zarr"
    levels = {"eps_star": 1e-3, "gen_acc_level": 0.99}  # the rule's params (schema defaults)
    run_stage(store, tmp_path / "clocks.parquet", out_path, **levels)
    out = xr.open_zarr(out_path).load()
    assert out["t0"].values.tolist() == [[20, 25, -1], [40, 42, -1]]  # 42.5 rounds to even
    assert np.isfinite(out["divergence"].values[:, :2, -1]).all()
    assert np.isnan(out["divergence"].values[:, 2]).all()
    claim = C.evaluate_claims({CELL["cell_id"]: trained}, None, None, None, {"c": out})[-1]
    assert claim["id"] == "relu_reduction" and "scored" in claim["evidence"]
    # a cell where no member has both clocks: a store with the reason, no trajectories
    clocks.assign(censored=True).to_parquet(tmp_path / "none.parquet")
    empty = run_stage(store, tmp_path / "none.parquet", tmp_path / "none.zarr", **levels)
    assert "nothing to reduce" in empty.attrs["note"] and "divergence" not in empty


def test_measure_stage_writes_every_snapshot_pair_and_the_reduction(
    modular, trained, reduced, tmp_path
):
    """The replay rule `measure` reads the store and the dataset store (never the model's
    params to rebuild data) and writes the table the claims read; the same function as
    `measure_cell`, so the pipeline and `python -m twoclocks.analyze` judge the same numbers."""
    from twoclocks.data.io import save_dataset
    from twoclocks.replay.stage import run_measure

    store, data = tmp_path / "trajectory.zarr", tmp_path / "data.zarr"
    trained.to_zarr(store)
    save_dataset(modular, data)
    red = tmp_path / "reduce.zarr"
    reduced.to_zarr(red)
    cid = CELL["cell_id"]
    out = run_measure(
        store, tmp_path / "m.parquet", cell_id=cid, fourier_keep=3, dataset_path=data,
        reduce_path=red,
    )  # fmt: skip
    table = pd.read_parquet(tmp_path / "m.parquet")
    assert len(table) == len(out) and set(table["cell_id"]) == {cid}
    k = trained.sizes["checkpoint"]
    per_seed = table[table["measure"] == "gate_drift"].groupby("seed").size()
    assert per_seed.tolist() == [k * (k + 1) // 2] * trained.sizes["seed"]  # every pair
    assert {"displacement_U", "displacement_E", "fourier_gap_top3"} <= set(table["measure"])
    assert (table[table["measure"] == "reduction_divergence"]["ref_step"] >= 0).all()
    direct = measure_cell(trained, cid, fourier_keep=3, dataset=modular, reduction=reduced)
    pd.testing.assert_frame_equal(table, direct, check_dtype=False)  # parquet: string dtype
    # a store the gates cannot be recomputed from is recorded as unmeasured, with the reason
    assert (
        measure_cell(trained.drop_vars("snap_U"), cid, fourier_keep=3)["note"]
        .str.contains("no weight snapshots of")
        .any()
    )


def test_reduction_figure_from_the_replayed_cell(trained, reduced, tmp_path):
    """The divergence-against-drift figure on a real (tiny) reduce stage output, saved as the
    report saves it."""
    from twoclocks.report import figures as F

    measures = measure_cell(trained, CELL["cell_id"], fourier_keep=6, reduction=reduced)
    charts, _notes = F.build_figures({CELL["cell_id"]: trained}, None, None, measures=measures)
    curves = F.reduction.reduction_curves(measures)
    assert curves.groupby("line").ngroups == 6 and int(curves["at_gen"].sum()) == 6
    assert np.isfinite(curves["drift"]).all() and (curves["drift"] >= 0).all()
    F.save_chart(charts["reduction_drift"], tmp_path / "reduction_drift")
    assert (tmp_path / "reduction_drift.svg").stat().st_size > 1000
