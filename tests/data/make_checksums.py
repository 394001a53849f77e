"""Behaviour fixture: checksums of everything the training engine writes for the tiny study.

Trains every train group of ``config/test.yaml`` (relu cells stacked over weight decay, deep
linear cells at depth 2 and 3) with ``engine.train_cell`` on one CPU thread, then records a
sha256 of every data variable and coordinate of each stacked trajectory store (bytes, dtype and
shape, plus the variable's ``long_name``/``units``) and of each clock's rows of the clocks table
(``analyze.clocks.extract_clocks`` on each cell's slice). The fixture also freezes the resolved
group params and the analysis settings, so later changes of config defaults do not move it.

``tests/test_behaviour.py`` recomputes the checksums and compares: a refactor of the engine,
models, metrics or store must leave every byte as it was (bitwise, on the CPU).

Regenerate only when a change of behaviour is intended (say so in the commit message)::

    PYTHONPATH=$PWD/src python tests/data/make_checksums.py --check          # compare only
    PYTHONPATH=$PWD/src python tests/data/make_checksums.py --update-clocks  # new clock rules
    PYTHONPATH=$PWD/src python tests/data/make_checksums.py --accept srank_logits update_ratio
    PYTHONPATH=$PWD/src python tests/data/make_checksums.py                  # rewrite all

``--update-clocks`` rewrites only the clock checksums, and refuses if any trajectory checksum
changed: a change of clock definitions must not hide a change of what training writes.
``--accept NAME ...`` rewrites only the named store variables (new or intentionally changed
metrics; the variable-attribute digest moves with them) and clocks (one read from a changed
variable, e.g. ``--accept test_loss gen_loss``), and refuses if anything else changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import xarray as xr

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURE = HERE / "behaviour_checksums.json"
CONFIG = REPO / "config" / "test.yaml"
CLOCK_HASH_COLUMNS = (
    "seed",
    "level",
    "step",
    "tau",
    "censored",
    "below_floor",
    "diverged",
    "quantity_min",
)

# Paths config/test.yaml does not take, on the same tiny modular task (the relu cell's params).
MODEL_ONLY = ("embed_dim", "combine", "hidden_width", "hidden_layers", "bias", "cell_hash")
EXTRA_CELLS = {
    "x_relu_concat_sgd_f64": {
        "embed_dim": 8,
        "combine": "concat",
        "hidden_width": 12,
        "hidden_layers": 2,
        "bias": False,
        "dtype": "float64",
        "optimizer": "sgd",
        "momentum": 0.9,
        "lr": 0.05,
        "init_scale": [1.0, 0.5],
        "weight_decay": 0.01,
        "steps": 60,
    },
    "x_linear_tokens": {
        "model": "deep_linear",
        "depth": 3,
        "width": 8,
        "balanced_init": True,
        "init_scale": 0.5,
        "steps": 60,
    },
    "x_relu_diverging": {
        "embed_dim": 8,
        "combine": "sum",
        "hidden_width": 12,
        "hidden_layers": 1,
        "bias": True,
        "lr": [0.01, 1.0e30],
        "steps": 40,
    },
}


def _digest(values: np.ndarray) -> str:
    a = np.ascontiguousarray(values)
    if a.dtype == object:
        a = np.asarray([str(v) for v in a.ravel()]).reshape(a.shape)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def store_checksums(ds: xr.Dataset) -> dict[str, str]:
    """sha256 per data variable and coordinate (values), and one over their long_name/units."""
    out = {name: _digest(var.values) for name, var in {**ds.coords, **ds.data_vars}.items()}
    attrs = {
        name: [var.attrs.get("long_name"), var.attrs.get("units")]
        for name, var in {**ds.coords, **ds.data_vars}.items()
    }
    out["__var_attrs__"] = hashlib.sha256(json.dumps(attrs, sort_keys=True).encode()).hexdigest()
    return dict(sorted(out.items()))


def clock_checksums(table) -> dict[str, str]:
    """sha256 per clock of its rows (sorted by seed and level), over CLOCK_HASH_COLUMNS."""
    out = {}
    for clock, rows in table.groupby("clock", sort=True):
        rows = rows.sort_values(["seed", "level"], kind="stable")
        h = hashlib.sha256()
        for col in CLOCK_HASH_COLUMNS:
            h.update(_digest(rows[col].to_numpy()).encode())
        out[str(clock)] = h.hexdigest()
    return out


def frozen_inputs() -> dict:
    """The resolved group params and analysis settings of config/test.yaml (current defaults)."""
    from twoclocks.config import load_config
    from twoclocks.train.group import stacked_params

    study = load_config(CONFIG)
    groups = {
        gid: {
            "params": stacked_params([c.params for c in cells]),
            "cells": [{"params": c.params, "axes": c.axes} for c in cells],
        }
        for gid, cells in study.groups.items()
    }
    relu = next(g for g in groups.values() if g["params"]["model"] == "relu_embed")
    modular = {k: v for k, v in relu["cells"][0]["params"].items() if k not in MODEL_ONLY}
    for name, override in EXTRA_CELLS.items():
        params = {**modular, **override, "grid": name, "cell_id": name, "group_id": name}
        groups[name] = {"params": params, "cells": [{"params": params, "axes": {}}]}
    return {"groups": groups, "analysis": study.config.get("analysis", {})}


def compute(inputs: dict, workdir: Path) -> dict:
    """Train each group of ``inputs`` (one thread) and return its checksums."""
    from twoclocks.analyze.clocks import extract_clocks
    from twoclocks.data.io import build_dataset, data_params
    from twoclocks.train.engine import train_cell
    from twoclocks.train.store import open_trajectory

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for i, (gid, group) in enumerate(inputs["groups"].items()):
            params = group["params"]
            data = build_dataset(data_params(params))
            path = train_cell(params, data, workdir / f"g{i}" / "trajectory.zarr", progress=False)
            ds = open_trajectory(path).load()
            clocks, start = {}, 0
            for cell in group["cells"]:
                n = len(cell["params"]["seeds"])
                sub = ds.isel(seed=slice(start, start + n))
                start += n
                sub.attrs["cell"] = json.dumps(cell["params"], sort_keys=True)
                table = extract_clocks(sub, dict(inputs["analysis"]), dict(cell["axes"]))
                clocks[cell["params"]["cell_id"]] = clock_checksums(table)
            out[gid] = {"store": store_checksums(ds), "clocks": clocks}
        return out
    finally:
        torch.set_num_threads(threads)


def diff(expected: dict, got: dict) -> list[str]:
    """Human-readable differences between two checksum trees."""
    problems = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k not in b:
                    problems.append(f"{where}/{k}: missing")
                elif k not in a:
                    problems.append(f"{where}/{k}: unexpected")
                else:
                    walk(a[k], b[k], f"{where}/{k}")
        elif a != b:
            problems.append(f"{where}: changed")

    walk(expected, got, "")
    return problems


def _accepted(path: str, allowed: set[str]) -> bool:
    """Whether a difference lies in an allowed variable or clock. Differences read
    "/<group id>/store/<variable>: ..." or "/<group id>/clocks/<cell id>/<clock>: ..." (group
    and cell ids contain "/")."""
    name = path.split(":", 1)[0]
    if "/store/" in name:
        return name.split("/store/", 1)[1] in allowed
    return "/clocks/" in name and name.rsplit("/", 1)[1] in allowed


def _take(old: dict, new: dict, allowed: set[str]) -> None:
    """Copy the allowed entries of ``new`` into ``old`` (dropping those ``new`` lacks)."""
    for name in sorted(set(new) | set(old)):
        if name in allowed:
            if name in new:
                old[name] = new[name]
            else:
                old.pop(name, None)


def accept_variables(names: set[str]) -> int:
    """Rewrite the checksums of the store variables and clocks ``names`` (and the attribute
    digest); refuse if anything else differs."""
    fixture = json.loads(FIXTURE.read_text())
    with tempfile.TemporaryDirectory(prefix="twoclocks-behaviour-") as tmp:
        got = compute(fixture["inputs"], Path(tmp))
    allowed = names | {"__var_attrs__"}
    other = [p for p in diff(fixture["checksums"], got) if not _accepted(p, allowed)]
    if other:
        print("other checksums changed, nothing written:\n" + "\n".join(other))
        return 1
    for gid, value in got.items():
        _take(fixture["checksums"][gid]["store"], value["store"], allowed)
        clocks = fixture["checksums"][gid]["clocks"]
        for cid, table in value["clocks"].items():
            _take(clocks.setdefault(cid, {}), table, allowed)
    FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    print(f"accepted {sorted(names)} in {FIXTURE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the fixture, write nothing")
    ap.add_argument(
        "--update-clocks",
        action="store_true",
        help="rewrite only the clock checksums (trajectories must be unchanged)",
    )
    ap.add_argument(
        "--accept",
        nargs="+",
        metavar="NAME",
        help="rewrite only these store variables and clocks; everything else must match",
    )
    args = ap.parse_args(argv)
    if args.accept:
        return accept_variables(set(args.accept))
    if args.update_clocks:
        fixture = json.loads(FIXTURE.read_text())
        with tempfile.TemporaryDirectory(prefix="twoclocks-behaviour-") as tmp:
            got = compute(fixture["inputs"], Path(tmp))
        stores = diff(
            {g: v["store"] for g, v in fixture["checksums"].items()},
            {g: v["store"] for g, v in got.items()},
        )
        if stores:
            print("trajectories changed, clocks not updated:\n" + "\n".join(stores))
            return 1
        for gid, value in got.items():
            fixture["checksums"][gid]["clocks"] = value["clocks"]
        FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
        print(f"updated the clock checksums in {FIXTURE}")
        return 0
    if args.check:
        fixture = json.loads(FIXTURE.read_text())
        inputs = fixture["inputs"]
    else:
        inputs = frozen_inputs()
    with tempfile.TemporaryDirectory(prefix="twoclocks-behaviour-") as tmp:
        checksums = compute(inputs, Path(tmp))
    if args.check:
        problems = diff(fixture["checksums"], checksums)
        print("\n".join(problems) or "all checksums equal")
        return 1 if problems else 0
    record = {
        "about": "tests/data/make_checksums.py: sha256 of every trajectory variable and clock",
        "torch": torch.__version__,
        "inputs": inputs,
        "checksums": checksums,
    }
    FIXTURE.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
