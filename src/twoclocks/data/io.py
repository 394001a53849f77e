"""Dataset stores: zarr via xarray, written to a partial path and renamed into place."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import xarray as xr

from twoclocks import provenance
from twoclocks.data.modular import make_modular
from twoclocks.data.teacher import make_teacher
from twoclocks.publish import write_zarr

MODULAR_KEYS = ("op", "modulus", "train_fraction", "split", "split_seed")
TEACHER_KEYS = ("input_dim", "num_classes", "teacher_rank", "train_size", "test_size", "data_seed")


def data_params(params: dict) -> dict:
    """The subset of a resolved cell's params that determines its dataset."""
    keys = MODULAR_KEYS if params["task"] == "modular" else TEACHER_KEYS
    return {"task": params["task"], **{k: params[k] for k in keys}}


def build_dataset(spec: dict) -> xr.Dataset:
    """Generate the dataset described by `data_params(...)`."""
    kwargs = {k: v for k, v in spec.items() if k != "task"}
    if spec["task"] == "modular":
        return make_modular(**kwargs)
    if spec["task"] == "teacher":
        return make_teacher(**kwargs)
    raise ValueError(f"unknown task {spec['task']!r}; allowed: modular, teacher")


def save_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` with provenance to `path` atomically (partial store, then rename)."""
    ds = ds.copy()
    ds.attrs["provenance"] = provenance.to_json(provenance.collect())
    return write_zarr(path, ds)


def load_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Open a dataset store and load it into memory (datasets are small)."""
    with warnings.catch_warnings():
        # Snakemake drops a `.snakemake_timestamp` file into directory outputs; zarr warns on it.
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        return xr.open_zarr(path, consolidated=False).load()
