"""Trajectory store: region writes, validation, resume state without pickle, load_study."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import TINY_RELU_CELL

import twoclocks
from twoclocks.data.modular import make_modular
from twoclocks.train import store as ts
from twoclocks.train.engine import train_cell
from twoclocks.train.manifest import write_manifest


def _layout(steps: int = 1200) -> ts.StoreLayout:
    log_at = np.arange(steps, dtype=np.int64)
    return ts.StoreLayout(
        seeds=[3, 4],
        steps=log_at,
        tau=np.outer([0.1, 0.2], log_at),
        blocks=["W1"],
        matrices=["W1", "A"],
        sv_count=2,
        checkpoint_steps=np.array([0, steps - 1]),
        metrics={
            "train_loss": (None, "train loss", "nat"),
            "srank": ("matrix", "stable rank", "1"),
            "singular_values": ("sv", "singular values", "1"),
        },
        snapshots={"W1": (2, 3)},
        snapshot_dtype="float64",
        attrs={"cell": "{}", "provenance": "{}", "dtype": "float64", "device": "cpu"},
    )


def _buffers(layout):
    b = {n: np.full(layout.metric_shape(n), np.nan) for n in layout.metrics}
    b["diverged_step"] = np.full(len(layout.seeds), -1, dtype=np.int64)
    return b


def test_region_writes_are_idempotent_and_validated(tmp_path):
    layout = _layout()
    path = tmp_path / "s.zarr"
    ts.create_store(path, layout)
    buf = _buffers(layout)
    rng = np.random.default_rng(0)
    for n in layout.metrics:
        buf[n][:] = rng.random(buf[n].shape)
    # Written in uneven blocks, one of them twice (a retried write).
    for lo, hi in [(0, 5), (5, 700), (5, 700), (700, 1200)]:
        ts.write_rows(path, layout, buf, lo, hi)
    for k in range(2):
        ts.write_snapshot(path, layout, k, {"W1": rng.random((2, 2, 3))})
    with pytest.raises(ValueError, match="seed_status"):
        ts.validate_store(path, layout)
    ts.write_attrs(path, {"seed_status": json.dumps({"3": "ok", "4": "ok"})})
    ts.validate_store(path, layout)
    ds = ts.open_trajectory(path).load()
    for n in layout.metrics:
        np.testing.assert_array_equal(ds[n].values, buf[n])
    np.testing.assert_array_equal(ds.tau.values, layout.tau)
    np.testing.assert_array_equal(ts.read_buffers(path, layout)["train_loss"], buf["train_loss"])


def test_validation_catches_missing_rows(tmp_path):
    layout = _layout(30)
    path = tmp_path / "s.zarr"
    ts.create_store(path, layout)
    buf = _buffers(layout)
    buf["train_loss"][:, :20] = 1.0
    ts.write_rows(path, layout, buf, 0, 20)
    ts.write_attrs(path, {"seed_status": "{}"})
    with pytest.raises(ValueError, match="train_loss not filled"):
        ts.validate_store(path, layout)
    # A member that diverged at step 20 is complete without rows from 20 on.
    buf["diverged_step"][:] = 20
    for n in ("srank", "singular_values"):
        buf[n][:, :20] = 1.0
    ts.write_rows(path, layout, buf, 0, 30)
    with pytest.raises(ValueError, match="snapshot"):
        ts.validate_store(path, layout)
    ts.write_snapshot(path, layout, 0, {"W1": np.ones((2, 2, 3))})
    ts.validate_store(path, layout)


def test_state_roundtrip_without_pickle(tmp_path):
    arrays = {
        "param/W1": np.arange(6.0).reshape(2, 3),
        "step": np.asarray(7),
        "fp": np.asarray("x"),
    }
    ts.save_state(tmp_path / "st", arrays)
    got = ts.load_state(tmp_path / "st")
    assert got.keys() == arrays.keys()
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
    assert ts.load_state(tmp_path / "missing") is None
    with zipfile.ZipFile(tmp_path / "st" / ts.STATE_FILE) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    assert not (tmp_path / "st" / (ts.STATE_FILE + ".tmp")).exists()


CELL = dict(
    TINY_RELU_CELL,
    study="tiny",
    grid="g",
    modulus=11,
    embed_dim=8,
    hidden_width=16,
    steps=30,
    seeds=[0, 1],
    log_dense_steps=5,
    log_every_steps=5,
    snapshot_count=3,
    checkpoint_every_steps=100,
)


def test_load_study_over_two_cells(tmp_path):
    data = make_modular(op="add", modulus=11, train_fraction=0.5, split="unordered", split_seed=0)
    for wd, steps in [(0.5, 30), (1.0, 40)]:
        cid = f"relu/wd={wd}"
        cell = dict(CELL, cell_id=cid, cell_hash=f"h{wd}", weight_decay=wd, steps=steps)
        store = tmp_path / "runs" / cid / "trajectory.zarr"
        train_cell(cell, data, store)
        write_manifest(store, store.with_name("manifest.json"))  # as the unstack rule does
    study = twoclocks.load_study(tmp_path)
    assert study.sizes["cell"] == 2
    assert sorted(study.cell.values.tolist()) == ["relu/wd=0.5", "relu/wd=1.0"]
    # `steps` differs too, but only the axes in the cell ids are grid axes.
    assert json.loads(study.attrs["grid_axes"]) == ["weight_decay"]
    assert "steps" not in study.coords and study.weight_decay.dtype == np.float64
    assert sorted(study.weight_decay.values.tolist()) == [0.5, 1.0]
    assert study.step.values.max() == 40
    short = study.sel(cell="relu/wd=0.5")
    assert np.isnan(short.train_loss.sel(step=40)).all()
    assert np.isfinite(short.train_loss.sel(step=30)).all()
    assert (study.diverged_step.values == -1).all()
    assert not any(v.startswith("snap_") for v in study.data_vars)
    with_snaps = twoclocks.load_study(tmp_path, snapshots=True)
    assert "snap_E" in with_snaps and with_snaps.sizes["cell"] == 2


def test_load_study_axes_are_clean_selectable_coords(tmp_path):
    """Cells of two grids: only the axes in their ids that vary are coords, with clean dtypes."""
    data = make_modular(op="add", modulus=11, train_fraction=0.5, split="unordered", split_seed=0)
    cells = [
        dict(CELL, cell_id="relu/wd=0.5", grid="relu", weight_decay=0.5),
        dict(CELL, cell_id="relu/wd=1.0", grid="relu", weight_decay=1.0),
        dict(CELL, cell_id="wide/width=32", grid="wide", hidden_width=32, op="add"),
        dict(CELL, cell_id="wide/width=8/op=add", grid="wide", hidden_width=8, op="add"),
    ]
    for c in cells:
        c = dict(c, steps=20, seeds=[0], snapshot_count=2, cell_hash=c["cell_id"][-6:])
        store = tmp_path / "runs" / c["cell_id"] / "trajectory.zarr"
        train_cell(c, data, store)
        write_manifest(store, store.with_name("manifest.json"))
    ds = twoclocks.load_study(tmp_path)
    # `op` labels a cell but is "add" everywhere: not an axis.
    assert json.loads(ds.attrs["grid_axes"]) == ["weight_decay", "hidden_width"]
    assert {"cell_hash", "grid", "hidden_width", "weight_decay"} <= set(ds.coords)
    assert not {"op", "cell_id", "steps", "seeds"} & set(ds.coords)
    assert ds.weight_decay.dtype == np.float64 and ds.hidden_width.dtype == np.int64
    assert ds.grid.dtype == object and set(ds.grid.values) == {"relu", "wide"}
    picked = ds.sel(cell=ds.weight_decay == 1.0)
    assert picked.cell.values.tolist() == ["relu/wd=1.0", "wide/width=32", "wide/width=8/op=add"]
    assert picked.diverged_step.dtype == np.int64
    assert ds.sel(
        cell=(ds.grid == "wide") & (ds.hidden_width < CELL["hidden_width"])
    ).cell.values.tolist() == ["wide/width=8/op=add"]
    by_width = ds.set_xindex("hidden_width").sel(hidden_width=CELL["hidden_width"])
    assert sorted(by_width.cell.values) == ["relu/wd=0.5", "relu/wd=1.0"]
    cells_attr = json.loads(ds.attrs["cells"])
    assert cells_attr["wide/width=32"]["hidden_width"] == 32


def test_axis_values_have_clean_dtypes():
    from twoclocks.study import _axis_values

    depth = _axis_values([None, 2, 3])  # relu cells have no depth
    assert depth.dtype == np.float64 and np.isnan(depth[0]) and depth[1:].tolist() == [2.0, 3.0]
    assert _axis_values([2, 3]).dtype == np.int64
    assert _axis_values([0.5, 1]).dtype == np.float64
    assert _axis_values([True, False]).dtype == bool
    ops = _axis_values(["add", None])
    assert ops.dtype == object and ops.tolist() == ["add", None]
    betas = _axis_values([[0.9, 0.98], [0.9, 0.99]])
    assert betas.dtype == object and betas.tolist() == ["[0.9, 0.98]", "[0.9, 0.99]"]


def test_zarr_writes_equal_xarray_region_writes_byte_for_byte(tmp_path):
    """`write_rows` / `write_snapshots` write through zarr; the files equal those an xarray
    region write (what they replaced) makes."""
    import xarray as xr

    layout = _layout(600)
    rng = np.random.default_rng(1)
    buf = _buffers(layout)
    for n in layout.metrics:
        buf[n][:, :550] = rng.random(buf[n][:, :550].shape)
    buf["diverged_step"][1] = 7
    snaps = [{"W1": rng.random((2, 2, 3))} for _ in range(2)]
    ours, ref = tmp_path / "ours.zarr", tmp_path / "ref.zarr"
    for p in (ours, ref):
        ts.create_store(p, layout)
    ts.write_rows(ours, layout, buf, 0, 550)
    ts.write_snapshots(ours, layout, 0, snaps)
    for a, b in [(0, 512), (512, 600)]:
        xr.Dataset({n: (layout.metric_dims(n), buf[n][:, a:b]) for n in layout.metrics}).to_zarr(
            ref, region={"step": slice(a, b)}, consolidated=False
        )
    xr.Dataset({"diverged_step": (("seed",), buf["diverged_step"])}).to_zarr(
        ref, region={"seed": slice(0, 2)}, consolidated=False
    )
    stacked = np.stack([s["W1"] for s in snaps], axis=1).astype(layout.snapshot_dtype)
    xr.Dataset({"snap_W1": (("seed", "checkpoint", "W1_row", "W1_col"), stacked)}).to_zarr(
        ref, region={"checkpoint": slice(0, 2)}, consolidated=False
    )
    files = sorted(f.relative_to(ours) for f in ours.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(ref) for f in ref.rglob("*") if f.is_file())
    for f in files:
        assert (ours / f).read_bytes() == (ref / f).read_bytes(), f
