"""Datasets: labels, split sizes, disjointness, leakage, determinism."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twoclocks.data.io import build_dataset, load_dataset, save_dataset
from twoclocks.data.modular import is_prime, make_modular
from twoclocks.data.teacher import make_teacher

PRIMES = [p for p in range(2, 40) if is_prime(p)]


def pairs(ds, side):
    return {tuple(r) for r in ds[f"x_{side}"].values.tolist()}


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_labels_are_correct(op):
    p = 13
    ds = make_modular(op, p, 0.5, "ordered", 1)
    for side in ("train", "test"):
        x, y = ds[f"x_{side}"].values, ds[f"y_{side}"].values
        for (a, b), label in zip(x, y, strict=True):
            if op == "div":
                expected = next(c for c in range(p) if (c * b) % p == a)
            else:
                expected = {"add": a + b, "sub": a - b, "mul": a * b}[op] % p
            assert label == expected
    n = p * p if op in ("add", "sub") else (p - 1) ** 2
    assert ds.sizes["train"] + ds.sizes["test"] == n


@settings(max_examples=30, deadline=None)
@given(
    p=st.sampled_from(PRIMES[1:]),
    frac=st.floats(0.05, 0.95),
    split=st.sampled_from(["ordered", "unordered"]),
    seed=st.integers(0, 1000),
)
def test_split_is_a_disjoint_cover_of_the_right_size(p, frac, split, seed):
    ds = make_modular("add", p, frac, split, seed)
    train, test = pairs(ds, "train"), pairs(ds, "test")
    assert not train & test
    assert len(train) + len(test) == p * p
    if split == "ordered":
        assert len(train) == round(frac * p * p)
    else:
        groups = p * (p + 1) // 2
        target = round(frac * groups)
        # each unordered group holds one (diagonal) or two pairs
        assert target <= len(train) <= 2 * target


@settings(max_examples=20, deadline=None)
@given(p=st.sampled_from(PRIMES[1:]), frac=st.floats(0.1, 0.9), seed=st.integers(0, 1000))
def test_unordered_split_never_leaks_transposes(p, frac, seed):
    ds = make_modular("add", p, frac, "unordered", seed)
    train = pairs(ds, "train")
    assert all((b, a) not in train for a, b in pairs(ds, "test"))
    assert ds.attrs["transpose_leak_fraction"] == 0.0


def test_ordered_split_records_its_leakage():
    ds = make_modular("add", 59, 0.3, "ordered", 0)
    train = pairs(ds, "train")
    off = [(a, b) for a, b in pairs(ds, "test") if a != b]
    leaked = sum((b, a) in train for a, b in off) / len(off)
    assert ds.attrs["transpose_leak_fraction"] == pytest.approx(leaked)
    assert 0.2 < leaked < 0.4  # about train_fraction, as docs/science.md 5 warns


def test_teacher_labels_follow_the_rank_r_teacher():
    ds = make_teacher(
        input_dim=16, num_classes=6, teacher_rank=2, train_size=200, test_size=100, data_seed=3
    )
    w = ds["teacher"].values
    assert np.linalg.matrix_rank(w) == 2
    for side in ("train", "test"):
        np.testing.assert_array_equal(
            np.argmax(ds[f"x_{side}"].values @ w.T, axis=1), ds[f"y_{side}"].values
        )
    assert ds.sizes["train"] == 200 and ds.sizes["test"] == 100


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


@pytest.mark.parametrize(
    "spec",
    [
        {
            "task": "modular",
            "op": "add",
            "modulus": 11,
            "train_fraction": 0.4,
            "split": "unordered",
            "split_seed": 2,
        },
        {
            "task": "teacher",
            "input_dim": 8,
            "num_classes": 4,
            "teacher_rank": 2,
            "train_size": 32,
            "test_size": 16,
            "data_seed": 5,
        },
    ],
)
def test_same_spec_gives_byte_identical_stores(tmp_path, spec):
    a = save_dataset(build_dataset(spec), tmp_path / "a.zarr")
    b = save_dataset(build_dataset(spec), tmp_path / "b.zarr")
    assert tree_digest(a) == tree_digest(b)
    assert not (tmp_path / "a.zarr.partial").exists()
    back = load_dataset(a)
    np.testing.assert_array_equal(back["x_train"].values, build_dataset(spec)["x_train"].values)
    assert "provenance" in back.attrs and back.attrs["task"] == spec["task"]


def test_dataset_loads_quietly_with_snakemakes_timestamp_file(tmp_path):
    """Snakemake marks directory outputs with a `.snakemake_timestamp` file; zarr would warn."""
    import warnings

    path = save_dataset(make_modular("add", 7, 0.5, "unordered", 0), tmp_path / "d.zarr")
    (path / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(path).attrs["task"] == "modular"


def test_changed_seed_changes_the_split():
    a = make_modular("add", 23, 0.3, "unordered", 0)
    b = make_modular("add", 23, 0.3, "unordered", 1)
    assert pairs(a, "train") != pairs(b, "train")
