"""Stacked sweeps: cells trained in one program equal the same cells trained alone, bitwise."""

import json
import shutil

import numpy as np
import pytest
from conftest import TINY_RELU_CELL

from twoclocks.data.modular import make_modular
from twoclocks.study import load_study
from twoclocks.train.group import stacked_params, train_group
from twoclocks.train.manifest import seed_status
from twoclocks.train.store import open_trajectory


def cell(wd, lr=1e-2, **extra):
    return dict(
        TINY_RELU_CELL,
        cell_id=f"relu/wd={wd}",
        weight_decay=wd,
        lr=lr,
        steps=60,
        seeds=[0, 1],
        **extra,
    )


@pytest.fixture(scope="module")
def data():
    return make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)


def test_stacked_params_fold_hyperparameters_per_member():
    params = stacked_params([cell(0.5), cell(1.0, lr=3e-3)])
    assert params["seeds"] == [0, 1, 0, 1]
    assert params["weight_decay"] == [0.5, 0.5, 1.0, 1.0]
    assert params["lr"] == [1e-2, 1e-2, 3e-3, 3e-3]
    assert stacked_params([cell(0.5), dict(cell(1.0), grid="b")])["seeds"] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="differ in \\['hidden_width'\\]"):
        stacked_params([cell(0.5), cell(1.0, hidden_width=32)])


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_stacked_sweep_equals_cells_trained_alone(tmp_path, data):
    # the second cell comes from another grid, as config `stack_grids` allows
    other = dict(cell(1.0, lr=3e-3), grid="relu_b", cell_id="relu_b/wd=1.0")
    cells = [cell(0.5), other]
    stacked = train_group(cells, data, tmp_path / "stacked", state_dir=tmp_path / "s1")
    for c in cells:
        alone = train_group(
            [c],
            data,
            tmp_path / f"alone-{c['weight_decay']}",
            state_dir=tmp_path / f"s-{c['weight_decay']}",
        )
        a = open_trajectory(stacked[c["cell_id"]]).load()
        b = open_trajectory(alone[c["cell_id"]]).load()
        assert json.loads(a.attrs["cell"]) == c
        assert a.sizes == b.sizes
        for name in b.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        np.testing.assert_array_equal(a["tau"].values, b["tau"].values)
    assert not (tmp_path / "s1").exists()  # work dir cleaned after the split


def test_split_stores_record_axes_and_nested_ids_without_parsing(tmp_path, data):
    """Grid axes come from the config (the `axes` attr), not from the cell id: ids here name
    no axis at all, yet `load_study` finds `weight_decay`; a failed seed is reported per seed."""
    cells = [
        dict(cell(wd), cell_id=f"g/{name}", steps=20, snapshot_count=2)
        for wd, name in [(0.5, "a"), (1.0, "b/nested")]
    ]
    axes = {"g/a": {"weight_decay": 0.5}, "g/b/nested": {"weight_decay": 1.0}}
    paths = train_group(cells, data, tmp_path / "train", state_dir=tmp_path / "s", axes=axes)
    assert sorted(paths) == ["g/a", "g/b/nested"]
    for cid, path in paths.items():
        ds = open_trajectory(path)
        assert json.loads(ds.attrs["axes"]) == axes[cid]
        assert json.loads(ds.attrs["seed_status"]) == {"0": "ok", "1": "ok"}
        assert json.loads(ds.attrs["stacked_with"]) == ["g/a", "g/b/nested"]
        assert not path.with_name(path.name + ".partial").exists()
    shutil.copytree(tmp_path / "train" / "cells", tmp_path / "study" / "runs")
    # split stores straight from the train output, before unstack writes their manifests
    study = load_study(tmp_path / "study", verify=False)
    assert json.loads(study.attrs["grid_axes"]) == ["weight_decay"]
    assert study.weight_decay.sel(cell="g/b/nested").item() == 1.0
    e2e = {c: open_trajectory(p).attrs["end_to_end_matrix"] for c, p in paths.items()}
    assert json.loads(study.attrs["end_to_end_matrices"]) == e2e
    assert e2e == {"g/a": "UW", "g/b/nested": "UW"}


def test_seed_status_names_the_divergence_step():
    assert seed_status([3, 7], np.array([-1, 41])) == {"3": "ok", "7": "diverged@41"}
    with pytest.raises(ValueError):
        seed_status([0, 1], [-1])


def test_spurious_energy_of_a_member_does_not_depend_on_its_stack():
    """Measured on the paper study: a folded (M C, d) matmul gave stack-dependent last bits."""
    import torch

    from twoclocks.train.models.deep_linear import spurious_energy

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(15, 6, 24, generator=gen, dtype=torch.float64)
    x = torch.randn(24, 24, generator=gen, dtype=torch.float64)
    full = spurious_energy(a, x @ x.T)
    for i in range(15):
        assert torch.equal(spurious_energy(a[i : i + 1], x @ x.T)[0], full[i])
        assert torch.equal(spurious_energy(a[max(0, i - 3) : i + 1], x @ x.T)[-1], full[i])
