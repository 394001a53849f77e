"""Dataset stores: zarr via xarray, written to a partial path and renamed into place."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import xarray as xr

from twoclocks import provenance
from twoclocks.data.tasks import task
from twoclocks.publish import write_zarr


def data_params(params: dict) -> dict:
    """The subset of a resolved cell's params that determines its dataset (its task's keys; a key
    left out of the resolved cell at its default, config.OMITTED_AT_DEFAULT, stays out)."""
    keys = task(params["task"]).config_keys
    return {"task": params["task"], **{k: params[k] for k in keys if k in params}}


def build_dataset(spec: dict) -> xr.Dataset:
    """Generate the dataset described by `data_params(...)` with its registered task."""
    kwargs = {k: v for k, v in spec.items() if k != "task"}
    return task(spec["task"]).make(**kwargs)


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
