"""Stores written by other code, as docs/design.md "Analysis of your own trajectories" describes
them: the zarr format versions and the encodings of string coordinates it names are read."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from twoclocks.analyze.study_dir import check_store
from twoclocks.train.store import open_trajectory

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def _section() -> str:
    text = DESIGN.read_text()
    start = text.index("## Analysis of your own trajectories")
    return text[start : text.index("\n## ", start + 1)]


def test_the_docs_name_the_format_and_the_string_encoding():
    section = " ".join(_section().split())
    assert "zarr format 3" in section and "format 2 stores open too" in section
    assert re.search(r"variable-length UTF-8.*`vlen-utf8`", section)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("strings", ["object", "fixed"])
def test_documented_formats_and_string_coordinates_are_read(tmp_path, zarr_format, strings):
    names = ["UW", "E"]
    matrix = np.array(names, dtype=object) if strings == "object" else np.array(names)
    ds = xr.Dataset(
        {
            "train_loss": (("seed", "step"), np.linspace(1.0, 0.1, 6).reshape(2, 3)),
            "srank": (("seed", "step", "matrix"), np.ones((2, 3, 2))),
        },
        coords={"seed": [0, 1], "step": [0, 10, 20], "matrix": matrix},
    )
    path = tmp_path / "runs" / "c" / "trajectory.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's note on v3 string dtypes
        ds.to_zarr(path, consolidated=False, zarr_format=zarr_format)
        back = open_trajectory(path).load()
    assert [str(m) for m in back["matrix"].values] == names
    np.testing.assert_array_equal(back["srank"].values, ds["srank"].values)
    notes = check_store(path, back)
    assert not any("rep_srank" in n for n in notes)
