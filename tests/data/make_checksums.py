"""Behaviour fixture: what the training engine writes for the tiny study, per CPU numerics.

Trains every train group of ``config/test.yaml`` (relu cells stacked over weight decay, deep
linear cells at depth 2 and 3) with ``engine.train_cell`` on one CPU thread, then records

- per numerics identity (``twoclocks.numerics.cpu_identity``: CPU capability, architecture,
  torch version, BLAS), a sha256 of every data variable and coordinate of each stacked
  trajectory store (bytes, dtype and shape, plus the variable's ``long_name``/``units``) and of
  each clock's rows of the clocks table (``analyze.clocks.extract_clocks`` per cell);
- once, the values themselves (``behaviour_values.npz``, float32 copies; weight snapshots as
  their norms plus the last snapshot), for machines whose identity has no record.

The fixture also freezes the resolved group params and the analysis settings, so later changes
of config defaults do not move it.

``tests/test_behaviour.py`` recomputes and compares: bitwise where this machine's identity has
a record, else within float32 tolerances (``TOLERANCE_ULPS``, derived in that test) with every
integer, flag, string and NaN/inf mask exact. A refactor of the engine, models, metrics or store
must leave every byte as it was.

Regenerate only when a change of behaviour is intended (say so in the commit message)::

    PYTHONPATH=$PWD/src python tests/data/make_checksums.py --check          # compare only
    PYTHONPATH=$PWD/src python tests/data/make_checksums.py --record         # pin this CPU
    PYTHONPATH=$PWD/src python tests/data/make_checksums.py --update-clocks  # new clock rules
    PYTHONPATH=$PWD/src python tests/data/make_checksums.py --accept srank_logits update_ratio
    PYTHONPATH=$PWD/src python tests/data/make_checksums.py                  # rewrite all

``--record`` adds this machine's checksums once its values agree with the recorded ones within
the tolerances. ``--update-clocks`` rewrites only the clocks, and refuses if any trajectory
variable changed: a change of clock definitions must not hide a change of what training writes.
``--accept NAME ...`` rewrites only the named store variables (new or intentionally changed
metrics; the variable-attribute digest moves with them) and clocks (one read from a changed
variable, e.g. ``--accept test_loss gen_loss``), and refuses if anything else changed. Both
write this machine's record and drop the records of other identities (they cannot be
recomputed here; those machines compare within tolerances until ``--record`` is run there).
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
VALUES = HERE / "behaviour_values.npz"
# |got - recorded| <= TOLERANCE_ULPS * eps(training dtype) * (|recorded| + max |recorded| of the
# variable): tests/test_behaviour.py says how this was measured.
TOLERANCE_ULPS = 512
# Statistics whose rounding error is set by the quantities they are taken over, not by their own
# size: preact_min_abs = min |pre-activation| (~1e-3) inherits the error of pre-activations of
# size ~1. Their scale is at least this (in their own units).
SCALE_FLOOR = {"preact_min_abs": 1.0}
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


def store_values(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Every variable and coordinate of a store, float ones as float32 copies; weight snapshots
    (``snap_*``, dims seed, checkpoint, ...) as their Frobenius norms per (seed, checkpoint)
    plus the last checkpoint in full. Also the ``long_name``/``units`` digest (exact)."""
    out = {}
    for name, var in {**ds.coords, **ds.data_vars}.items():
        a = np.asarray(var.values)
        if a.dtype.kind in "OTU":
            out[name] = np.asarray([str(v) for v in a.ravel()]).reshape(a.shape)
        elif name.startswith("snap_"):
            flat = a.astype(np.float64).reshape(a.shape[0], a.shape[1], -1)
            out[name + "#norm"] = np.sqrt((flat**2).sum(-1)).astype(np.float32)
            out[name + "#last"] = a[:, -1].astype(np.float32)
        elif a.dtype.kind == "f":
            out[name] = a.astype(np.float32)
        else:
            out[name] = a
    out["__var_attrs__"] = np.asarray(store_checksums(ds)["__var_attrs__"])
    return out


def clock_values(table) -> dict[str, dict[str, np.ndarray]]:
    """Per clock, its rows (sorted by seed and level) as arrays of CLOCK_HASH_COLUMNS."""
    out = {}
    for clock, rows in table.groupby("clock", sort=True):
        rows = rows.sort_values(["seed", "level"], kind="stable")
        cols = {}
        for col in CLOCK_HASH_COLUMNS:
            a = rows[col].to_numpy()
            cols[col] = a.astype(np.float32) if a.dtype.kind == "f" else a
        out[str(clock)] = cols
    return out


def run(inputs: dict, workdir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Train each group of ``inputs`` (one thread): (checksum tree, flat values).

    Values are keyed ``group|store|variable`` and ``group|clocks|cell|clock|column``.
    """
    from twoclocks.analyze.clocks import extract_clocks
    from twoclocks.data.io import build_dataset, data_params
    from twoclocks.train.engine import train_cell
    from twoclocks.train.store import open_trajectory

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out, values = {}, {}
        for i, (gid, group) in enumerate(inputs["groups"].items()):
            params = group["params"]
            data = build_dataset(data_params(params))
            path = train_cell(params, data, workdir / f"g{i}" / "trajectory.zarr", progress=False)
            ds = open_trajectory(path).load()
            values.update({f"{gid}|store|{k}": v for k, v in store_values(ds).items()})
            clocks, start = {}, 0
            for cell in group["cells"]:
                n = len(cell["params"]["seeds"])
                sub = ds.isel(seed=slice(start, start + n))
                start += n
                sub.attrs["cell"] = json.dumps(cell["params"], sort_keys=True)
                table = extract_clocks(sub, dict(inputs["analysis"]), dict(cell["axes"]))
                cid = cell["params"]["cell_id"]
                clocks[cid] = clock_checksums(table)
                for clock, cols in clock_values(table).items():
                    values.update({f"{gid}|clocks|{cid}|{clock}|{c}": a for c, a in cols.items()})
            out[gid] = {"store": store_checksums(ds), "clocks": clocks}
        return out, values
    finally:
        torch.set_num_threads(threads)


def compute(inputs: dict, workdir: Path) -> dict:
    """Train each group of ``inputs`` (one thread) and return its checksums."""
    return run(inputs, workdir)[0]


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


def _group_eps(inputs: dict) -> dict[str, float]:
    """Machine epsilon of each group's training dtype (float32 unless the group says)."""
    return {
        gid: float(np.finfo(g["params"].get("dtype", "float32")).eps)
        for gid, g in inputs["groups"].items()
    }


def deviations(recorded: dict, got: dict, eps: dict[str, float]) -> dict[str, float | str]:
    """Per value key: the largest |got - recorded| in units of eps * (|recorded| + scale)
    (scale: the largest finite |recorded| of that array, at least its SCALE_FLOOR; 0.0 when
    equal), or a string saying why the two cannot be compared by size (shape, dtype, NaN/inf
    pattern, exact values)."""
    out: dict[str, float | str] = {}
    for key in sorted(set(recorded) | set(got)):
        if key not in got or key not in recorded:
            out[key] = "missing" if key not in got else "unexpected"
            continue
        a, b = np.asarray(recorded[key]), np.asarray(got[key])
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            out[key] = f"shape/kind {a.shape}/{a.dtype.kind} -> {b.shape}/{b.dtype.kind}"
        elif a.dtype.kind != "f":
            out[key] = 0.0 if np.array_equal(a, b) else "exact values differ"
        elif not (
            np.array_equal(np.isnan(a), np.isnan(b))
            and np.array_equal(np.isinf(a), np.isinf(b))
            and np.array_equal(a[np.isinf(a)], b[np.isinf(b)])
        ):
            out[key] = "NaN/inf pattern differs"
        else:
            fin = np.isfinite(a)
            x, y = a[fin].astype(np.float64), b[fin].astype(np.float64)
            scale = float(np.abs(x).max()) if x.size else 0.0
            scale = max(scale, SCALE_FLOOR.get(key.split("|")[-1], 0.0))
            unit = eps[key.split("|", 1)[0]] * (np.abs(x) + scale)
            dev = np.abs(x - y)
            out[key] = float((dev / np.where(unit > 0, unit, 1.0)).max()) if dev.any() else 0.0
    return out


def compare_values(recorded: dict, got: dict, eps: dict[str, float]) -> list[str]:
    """Differences beyond TOLERANCE_ULPS (float values) or any difference (the rest)."""
    problems = []
    for key, dev in deviations(recorded, got, eps).items():
        if isinstance(dev, str):
            problems.append(f"{key}: {dev}")
        elif dev > TOLERANCE_ULPS:
            problems.append(f"{key}: off by {dev:.0f} ulps of its scale (> {TOLERANCE_ULPS})")
    return problems


def load_values(path: Path = VALUES) -> dict[str, np.ndarray]:
    """The values `save_values` packed: key -> array."""
    with np.load(path, allow_pickle=False) as z:
        packed = {k: z[k] for k in z.files}
    out = {}
    for key, kind, shape, start in json.loads(str(packed.pop("index"))):
        size = int(np.prod(shape, dtype=np.int64))
        out[key] = packed[kind][start : start + size].reshape(shape)
    return out


def save_values(values: dict[str, np.ndarray], path: Path = VALUES) -> None:
    """Pack the arrays by dtype into one array each plus a JSON index (a few hundred small
    arrays as npz entries would cost ~400 bytes each)."""
    index, parts = [], {}
    for key in sorted(values):
        a = np.asarray(values[key])
        kind = a.dtype.str.lstrip("<>|=") if a.dtype.kind != "U" else "str"
        chunks = parts.setdefault(kind, [])
        index.append([key, kind, list(a.shape), sum(c.size for c in chunks)])
        chunks.append(a.ravel())
    packed = {k: np.concatenate(v) for k, v in parts.items()}
    np.savez_compressed(path, index=np.asarray(json.dumps(index)), **packed)


def this_identity() -> tuple[str, dict]:
    from twoclocks.numerics import cpu_identity, identity_key

    identity = cpu_identity()
    return identity_key(identity), identity


def check(fixture: dict, checksums: dict, values: dict) -> tuple[str, list[str]]:
    """Compare one run with the fixture: ("bitwise", problems) where this machine's identity
    has a record, else ("tolerance", problems) against the recorded values."""
    key, _ = this_identity()
    record = fixture["records"].get(key)
    if record is not None:
        return "bitwise", diff(record["checksums"], checksums)
    return "tolerance", compare_values(load_values(), values, _group_eps(fixture["inputs"]))


def _accepted(path: str, allowed: set[str]) -> bool:
    """Whether a difference lies in an allowed variable or clock. Differences read
    "/<group id>/store/<variable>: ..." or "/<group id>/clocks/<cell id>/<clock>: ..." (group
    and cell ids contain "/"), or for values "<group>|store|<variable>[#part]: ..." and
    "<group>|clocks|<cell>|<clock>|<column>: ..."."""
    name = path.split(": ", 1)[0]
    if "|store|" in name:
        return name.split("|store|", 1)[1].split("#", 1)[0] in allowed
    if "|clocks|" in name:
        return name.rsplit("|", 2)[1] in allowed
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


def _write(fixture: dict, values: dict | None = None) -> None:
    FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    if values is not None:
        save_values(values)


def _own_record(fixture: dict, checksums: dict) -> dict:
    """Make this machine's record the only one (others cannot be recomputed here)."""
    key, identity = this_identity()
    dropped = sorted(k for k in fixture["records"] if k != key)
    if dropped:
        print(f"dropped the records of {dropped}: run --record there to pin them again")
    old = fixture["records"].get(key, {}).get("checksums", checksums)
    fixture["records"] = {key: {"identity": identity, "checksums": old}}
    return fixture["records"][key]["checksums"]


def accept_variables(names: set[str]) -> int:
    """Rewrite the checksums and values of the store variables and clocks ``names`` (and the
    attribute digest); refuse if anything else differs."""
    fixture = json.loads(FIXTURE.read_text())
    with tempfile.TemporaryDirectory(prefix="twoclocks-behaviour-") as tmp:
        got, values = run(fixture["inputs"], Path(tmp))
    allowed = names | {"__var_attrs__"}
    mode, problems = check(fixture, got, values)
    other = [p for p in problems if not _accepted(p, allowed)]
    if other:
        print(f"other values changed ({mode}), nothing written:\n" + "\n".join(other))
        return 1
    record = _own_record(fixture, got)
    for gid, value in got.items():
        _take(record.setdefault(gid, {"store": {}, "clocks": {}})["store"], value["store"], allowed)
        clocks = record[gid]["clocks"]
        for cid, table in value["clocks"].items():
            _take(clocks.setdefault(cid, {}), table, allowed)
    stored = load_values()
    keys = set(stored) | set(values)
    _take(stored, values, {k for k in keys if _accepted(k + ": ", allowed)})
    _write(fixture, stored)
    print(f"accepted {sorted(names)} in {FIXTURE} and {VALUES}")
    return 0


def update_clocks() -> int:
    """Rewrite every clock's checksums and values; refuse if a trajectory variable changed."""
    fixture = json.loads(FIXTURE.read_text())
    with tempfile.TemporaryDirectory(prefix="twoclocks-behaviour-") as tmp:
        got, values = run(fixture["inputs"], Path(tmp))
    _mode, problems = check(fixture, got, values)
    stores = [p for p in problems if "/store/" in p or "|store|" in p]
    if stores:
        print("trajectories changed, clocks not updated:\n" + "\n".join(stores))
        return 1
    record = _own_record(fixture, got)
    for gid, value in got.items():
        record[gid]["clocks"] = value["clocks"]
    stored = {k: v for k, v in load_values().items() if "|clocks|" not in k}
    stored.update({k: v for k, v in values.items() if "|clocks|" in k})
    _write(fixture, stored)
    print(f"updated the clock checksums and values in {FIXTURE} and {VALUES}")
    return 0


def record_here() -> int:
    """Add this machine's checksums once its run agrees with the recorded values."""
    fixture = json.loads(FIXTURE.read_text())
    with tempfile.TemporaryDirectory(prefix="twoclocks-behaviour-") as tmp:
        got, values = run(fixture["inputs"], Path(tmp))
    problems = compare_values(load_values(), values, _group_eps(fixture["inputs"]))
    if problems:
        print("values differ beyond the tolerances, nothing recorded:\n" + "\n".join(problems))
        return 1
    key, identity = this_identity()
    fixture["records"][key] = {"identity": identity, "checksums": got}
    _write(fixture)
    print(f"recorded {key} in {FIXTURE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the fixture, write nothing")
    ap.add_argument(
        "--record", action="store_true", help="add this CPU's checksums (values must agree)"
    )
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
        return update_clocks()
    if args.record:
        return record_here()
    fixture = json.loads(FIXTURE.read_text()) if args.check else None
    inputs = fixture["inputs"] if args.check else frozen_inputs()
    with tempfile.TemporaryDirectory(prefix="twoclocks-behaviour-") as tmp:
        checksums, values = run(inputs, Path(tmp))
    if args.check:
        mode, problems = check(fixture, checksums, values)
        print(f"{this_identity()[0]}: compared {mode}")
        print("\n".join(problems) or "all equal")
        return 1 if problems else 0
    key, identity = this_identity()
    record = {
        "about": "tests/data/make_checksums.py: checksums per CPU numerics identity; values in "
        + VALUES.name,
        "inputs": inputs,
        "records": {key: {"identity": identity, "checksums": checksums}},
    }
    _write(record, values)
    print(f"wrote {FIXTURE} and {VALUES} ({key})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
