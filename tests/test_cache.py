"""Cross-study cache: identical cells are trained once, whatever their study or cell names."""

import numpy as np
import pytest
import torch
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


def cell(study, grid, **top):
    cfg = {**CONFIG, **top, "study": study, "grids": {grid: {"axes": {"weight_decay": [0.5]}}}}
    return load_config(cfg).cells[0]


def _forbid_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached cell was trained again")

    monkeypatch.setattr(cache, "train_cell", no_training)


def test_identical_cell_in_another_study_is_fetched_not_trained(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    first, second = cell("alpha", "relu"), cell("beta", "other")
    assert first.hash == second.hash and first.id != second.id
    dataset = build_dataset(data_params(first.params))
    a = cache.train_or_fetch(first.params, dataset, tmp_path / "a" / "trajectory.zarr")
    _forbid_training(monkeypatch)
    b = cache.train_or_fetch(second.params, dataset, tmp_path / "b" / "trajectory.zarr")
    da, db = open_trajectory(a).load(), open_trajectory(b).load()
    for name in da.data_vars:
        np.testing.assert_array_equal(da[name].values, db[name].values)
    assert cell_attr(db)["study"] == "beta" and cell_attr(db)["cell_id"] == "other/wd=0.5"
    assert db.attrs["cache_key"] == cache.cache_key(first.params)


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto resolves to cuda here")
def test_auto_and_cpu_share_an_entry_on_a_cpu_machine(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    on_cpu, on_auto = cell("alpha", "relu", device="cpu"), cell("beta", "relu", device="auto")
    assert on_cpu.hash != on_auto.hash, "cell_hash names the device; the cache key must not"
    assert cache.cache_key(on_cpu.params) == cache.cache_key(on_auto.params)
    dataset = build_dataset(data_params(on_cpu.params))
    a = cache.train_or_fetch(on_cpu.params, dataset, tmp_path / "a" / "trajectory.zarr")
    _forbid_training(monkeypatch)
    b = cache.train_or_fetch(on_auto.params, dataset, tmp_path / "b" / "trajectory.zarr")
    assert len(list((tmp_path / "cache").iterdir())) == 1
    da, db = open_trajectory(a).load(), open_trajectory(b).load()
    for name in da.data_vars:
        np.testing.assert_array_equal(da[name].values, db[name].values, err_msg=name)
    assert cell_attr(db)["device"] == "auto" and cell_attr(db)["study"] == "beta"


def test_cache_key_depends_on_thread_count_not_labels():
    c = cell("alpha", "relu").params
    threads = torch.get_num_threads()
    assert cache.cache_key(c) == cache.cache_key(c, threads=threads)
    assert cache.cache_key(c, threads=1) != cache.cache_key(c, threads=2)
    relabelled = {**c, "study": "z", "grid": "g", "cell_id": "g/x", "cell_hash": "0" * 12}
    assert cache.cache_key(relabelled, threads=1) == cache.cache_key(c, threads=1)
    assert cache.cache_key({**c, "seeds": [0, 2]}, threads=1) != cache.cache_key(c, threads=1)


def test_cache_key_names_the_run_code_version_and_device():
    params = cell("alpha", "relu", device="cpu").params
    key = cache.cache_key(params, threads=3)
    assert key == f"{cache.run_hash(params, threads=3)}-{cache.code_version()}-cpu"
    assert len(cache.run_hash(params)) == 12
