"""Cross-study cache: identical cells are trained once, whatever their study or cell names."""

import numpy as np
import pytest
import xarray as xr

from twoclocks.config import load_config
from twoclocks.data.io import build_dataset, data_params
from twoclocks.train import cache
from twoclocks.train.store import cell_attr, open_trajectory

CONFIG = {
    "seeds": [0, 1],
    "device": "cpu",
    "logging": {"log_dense_steps": 5, "log_every_steps": 5, "snapshot_count": 3},
    "base": {"modulus": 7, "embed_dim": 4, "hidden_width": 8, "steps": 15, "fourier_keep": 2},
}


def cell(study, grid):
    cfg = {**CONFIG, "study": study, "grids": {grid: {"axes": {"weight_decay": [0.5]}}}}
    return load_config(cfg).cells[0]


def test_identical_cell_in_another_study_is_fetched_not_trained(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    first, second = cell("alpha", "relu"), cell("beta", "other")
    assert first.hash == second.hash and first.id != second.id
    dataset = build_dataset(data_params(first.params))
    a = cache.train_or_fetch(first.params, dataset, tmp_path / "a" / "trajectory.zarr")

    def no_training(*args, **kwargs):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr(cache, "train_cell", no_training)
    b = cache.train_or_fetch(second.params, dataset, tmp_path / "b" / "trajectory.zarr")
    da, db = open_trajectory(a).load(), open_trajectory(b).load()
    for name in da.data_vars:
        np.testing.assert_array_equal(da[name].values, db[name].values)
    assert cell_attr(db)["study"] == "beta" and cell_attr(db)["cell_id"] == "other/wd=0.5"
    assert db.attrs["cache_key"].startswith(first.hash)


def test_changed_config_misses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    base = cell("alpha", "relu")
    changed = load_config(
        {**CONFIG, "study": "alpha", "grids": {"relu": {"axes": {"weight_decay": [0.6]}}}}
    ).cells[0]
    assert cache.cache_key(base.params) != cache.cache_key(changed.params)
    dataset = build_dataset(data_params(base.params))
    cache.train_or_fetch(base.params, dataset, tmp_path / "a" / "trajectory.zarr")
    calls = []
    real = cache.train_cell
    monkeypatch.setattr(cache, "train_cell", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache.train_or_fetch(changed.params, dataset, tmp_path / "b" / "trajectory.zarr")
    assert calls == [1]
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_cache_disabled_without_env(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.ENV, raising=False)
    assert cache.cache_dir() is None
    c = cell("alpha", "relu")
    out = cache.train_or_fetch(
        c.params, build_dataset(data_params(c.params)), tmp_path / "trajectory.zarr"
    )
    assert isinstance(xr.open_zarr(out, consolidated=False), xr.Dataset)


@pytest.mark.parametrize("device", ["cpu"])
def test_cache_key_names_the_device_and_code_version(device):
    c = cell("alpha", "relu")
    key = cache.cache_key({**c.params, "device": device})
    assert key == f"{c.hash}-{cache.code_version()}-{device}"
