"""Peak resident memory of train jobs: predicted (`train.memory`) against measured.

Each configuration trains in a fresh subprocess (``python -m twoclocks.bench_memory --child``),
which reports its own peak resident set (``VmHWM``), so one job's allocations never hide
another's. :func:`memory_table` runs the grid of issue 29's setting (concatenated 128-d
embeddings, (a + b) mod 97 on half of the ordered pairs, one seed) over hidden widths and
depths: peak memory, time per member-step and the share of time spent on metrics;
:func:`transformer_table` the same for the transformer. :func:`price_study` times one short
stacked job per train group of a study (``python -m twoclocks.bench_memory --price CONFIG``):
CPU and wall seconds per member-step, what config/beyond.yaml's price in docs/performance.md
comes from.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = [
    "TABLE_SETTING",
    "TRANSFORMER_SETTING",
    "format_table",
    "measure_job",
    "memory_row",
    "memory_table",
    "price_study",
    "transformer_cell",
    "transformer_table",
]

# Issue 29's setting: the three-layer MLP of the grokking literature at one seed.
TABLE_SETTING = {
    "modulus": 97,
    "train_fraction": 0.5,
    "split": "ordered",
    "embed_dim": 128,
    "combine": "concat",
    "betas": [0.9, 0.999],
}


# The transformer of the grokking literature (config/beyond.yaml's): d_model 128, 4 heads, ReLU
# MLP of 512, no LayerNorm, half of the ordered pairs, AdamW as beyond.yaml trains it.
TRANSFORMER_SETTING = {
    "task": "modular",
    "op": "add",
    "train_fraction": 0.5,
    "split": "ordered",
    "split_seed": 0,
    "model": "transformer",
    "d_model": 128,
    "n_heads": 4,
    "d_mlp": 512,
    "mlp_activation": "relu",
    "layernorm": False,
    "optimizer": "adamw",
    "lr": 1e-3,
    "betas": [0.9, 0.999],
}


def transformer_cell(
    modulus: int = 97, n_layers: int = 1, members: int = 1, steps: int = 4, **override
) -> dict:
    """A resolved transformer cell (through ``load_config``, so validated) of ``members``
    stacked seeds: ``steps`` steps, log rows at 0, 1, 2 and the last (the first computes every
    Fig. 3 candidate), two snapshots."""
    from twoclocks.config import load_config

    base = dict(TRANSFORMER_SETTING, modulus=int(modulus), n_layers=int(n_layers), steps=steps)
    base["fourier_keep"] = min(8, int(modulus) // 2)
    cfg = {
        "study": "bench-memory",
        "seeds": list(range(int(members))),
        "device": "cpu",
        "logging": {
            "log_dense_steps": 2,
            "log_every_steps": 50,
            "snapshot_count": 2,
            "checkpoint_every_steps": 1000,
        },
        "base": base | override,
        "grids": {"bench": {}},
    }
    return dict(load_config(cfg).cells[0].params)


def measure_job(params: dict, threads: int = 1, timeout_s: float = 3600.0) -> dict:
    """Train ``params`` (a resolved cell) in a fresh subprocess on ``threads`` torch threads; its
    peak resident memory (MB), wall time and the engine's own metric and write times."""
    proc = subprocess.run(
        [sys.executable, "-m", "twoclocks.bench_memory", "--child", str(int(threads))],
        input=json.dumps(params),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child() -> int:
    """The subprocess side of :func:`measure_job`: params on stdin, one JSON line out."""
    import torch

    from twoclocks.data.io import build_dataset, data_params
    from twoclocks.train import engine

    torch.set_num_threads(int(sys.argv[2]))  # as the train job does (train_threads)
    params = json.loads(sys.stdin.read())
    dataset = build_dataset(data_params(params))
    timings: dict = {}
    stamps: list[float] = []
    cpu: list[list[float]] = []  # [t, process CPU s] after each update: contention-free times

    def stamp(t: int) -> None:
        stamps.append(time.perf_counter())
        cpu.append([t, stamps[-1], time.process_time()])

    with tempfile.TemporaryDirectory(prefix="twoclocks-mem-") as tmp:
        t0 = time.perf_counter()
        engine.train_cell(
            params,
            dataset,
            Path(tmp) / "t" / "trajectory.zarr",
            timings=timings,
            on_step=stamp,
        )
        wall = time.perf_counter() - t0
    peak_kb = _peak_rss_kb()
    # steps 1 .. last: the first and last log rows (and set-up, final writes) fall outside
    step_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else wall
    out = {"peak_rss_mb": peak_kb / 1024.0, "wall_s": wall, "step_s": step_s, "stamps": cpu}
    out.update(timings)
    print(json.dumps(out))
    return 0


def _peak_rss_kb() -> int:
    """This process's peak resident set in kB: ``VmHWM`` of its own address space (Linux).
    ``ru_maxrss`` would do elsewhere, but on Linux it keeps the parent's resident size across
    fork and exec, so a child of a large process would report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def memory_row(params: dict, threads: int = 1) -> dict:
    """Predicted and measured peak of one job, with its time per member-step (the training
    steps between the first and last log rows) and the share of its wall time spent on the
    metrics of its ``log_rows`` rows (fixed costs weigh more in a short run)."""
    from twoclocks.train.engine import log_steps
    from twoclocks.train.memory import job_memory, mem_mb_of

    est = job_memory(params)
    got = measure_job(params, threads)
    members, steps = len(params["seeds"]), int(params["steps"])
    return {
        "model": str(params["model"]),
        "shape": _shape(params),
        "modulus": _first(params, "modulus"),
        "hidden_width": _first(params, "hidden_width", "d_model"),
        "hidden_layers": _first(params, "hidden_layers", "n_layers"),
        "n_train": est.n_train,
        "members": members,
        "steps": steps,
        "predicted_mb": est.total_mb,
        "predicted_parts_mb": est.parts,
        "declared_mem_mb": mem_mb_of(est),
        "measured_mb": got["peak_rss_mb"],
        "predicted_over_measured": est.total_mb / got["peak_rss_mb"],
        "per_member_step_s": got["step_s"] / members,
        "metrics_share": got["metrics_s"] / got["wall_s"],
        "log_rows": int(
            len(log_steps(steps, params["log_dense_steps"], params["log_every_steps"]))
        ),
        "wall_s": got["wall_s"],
    }


def _shape(params: dict) -> str:
    if params["model"] == "transformer":
        return (
            f"{params['n_layers']}L d{params['d_model']} h{params['n_heads']} mlp{params['d_mlp']}"
        )
    return f"{_first(params, 'hidden_layers') or 1}x{_first(params, 'hidden_width')}"


def _first(params: dict, *keys: str) -> int:
    """The table's column: the first of `keys` the job has (a model without it: 0)."""
    return next((int(params[k]) for k in keys if k in params), 0)


def transformer_table(
    layers=(1, 2), moduli=(97, 47), members=(1, 2, 3), threads: int = 1, steps: int = 4
) -> list[dict]:
    """One :func:`memory_row` per (layers, modulus, stacked members) of the transformer
    (`TRANSFORMER_SETTING`), each printed to stderr as it comes."""
    rows = []
    for n_layers in layers:
        for p in moduli:
            for m in members:
                params = transformer_cell(p, n_layers, m, steps=steps)
                rows.append(memory_row(params, threads))
                print(format_table(rows[-1:], header=not rows[:-1]), file=sys.stderr, flush=True)
    return rows


def memory_table(
    make_params, widths=(128, 256, 512, 1024), layers=(1, 2, 3), threads: int = 1
) -> list[dict]:
    """One :func:`memory_row` per (width, depth); ``make_params(**override)`` resolves a cell.
    Each row is also printed to stderr as it comes (the largest take minutes on a CPU)."""
    rows = []
    for depth in layers:
        for width in widths:
            params = make_params(hidden_width=int(width), hidden_layers=int(depth))
            rows.append(memory_row(params, threads))
            print(format_table(rows[-1:], header=not rows[:-1]), file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[dict], header: bool = True) -> str:
    """The rows as a fixed-width text table (what ``--memory-table`` prints)."""
    cols = (
        ("model", "model", "{}"),
        ("layers", "hidden_layers", "{:d}"),
        ("width", "hidden_width", "{:d}"),
        ("modulus", "modulus", "{:d}"),
        ("members", "members", "{:d}"),
        ("predicted MB", "predicted_mb", "{:.0f}"),
        ("measured MB", "measured_mb", "{:.0f}"),
        ("pred/meas", "predicted_over_measured", "{:.2f}"),
        ("mem_mb", "declared_mem_mb", "{:d}"),
        ("ms/member-step", "per_member_step_s", "{:.2f}"),
        ("metric share", "metrics_share", "{:.3f}"),
        ("log rows", "log_rows", "{:d}"),
    )
    cols = tuple(c for c in cols if all(c[1] in r for r in rows))  # older rows: no model
    lines = ["  ".join(f"{name:>14}" for name, _, _ in cols)] if header else []
    for r in rows:
        vals = [fmt.format(r[key] * (1000 if "step_s" in key else 1)) for _, key, fmt in cols]
        lines.append("  ".join(f"{v:>14}" for v in vals))
    return "\n".join(lines)


def price_study(config, steps: int = 10, dense: int = 4, threads: int = 1) -> dict[str, dict]:
    """Per-member-step CPU and wall time of each train group of a study (``config``: a path or
    dict), each in a fresh subprocess on ``threads`` torch threads: the group's cells stacked at
    the study's first seed, ``steps`` steps, log rows at steps 0..``dense`` and the last. A step's
    time is the median over the steps after ``dense`` (no log row among them); CPU time
    (`time.process_time`) is what a contended machine does not inflate by waiting. A log row's
    wall time is the engine's metric time over its rows."""
    import yaml

    from twoclocks.config import load_config
    from twoclocks.train.group import stacked_params
    from twoclocks.train.schedule import log_steps

    cfg = yaml.safe_load(Path(config).read_text()) if not isinstance(config, dict) else config
    cfg = dict(cfg, seeds=list(cfg["seeds"])[:1], device="cpu", train_threads=int(threads))
    never = 10 * steps
    cfg["logging"] = dict(log_dense_steps=dense, log_every_steps=never, snapshot_count=2)
    cfg["logging"]["checkpoint_every_steps"] = never
    cfg["base"] = dict(cfg["base"], steps=int(steps))
    out = {}
    for gid, cells in load_config(cfg).groups.items():
        params = stacked_params([dict(c.params) for c in cells])
        got, m = measure_job(params, threads), len(params["seeds"])
        after = [s for s in got["stamps"] if s[0] > dense]  # stamps after updates dense+1 ..
        walls = sorted(b[1] - a[1] for a, b in zip(after, after[1:], strict=False))
        cpus = sorted(b[2] - a[2] for a, b in zip(after, after[1:], strict=False))
        rows = len(log_steps(int(steps), dense, never))
        out[gid] = {
            "members": m,
            "cpu_per_member_step_s": cpus[len(cpus) // 2] / m,
            "wall_per_member_step_s": walls[len(walls) // 2] / m,
            "wall_per_row_s": got["metrics_s"] / rows,
            "load": os.getloadavg(),
        }
        print(gid, json.dumps(out[gid]), file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child())
    if sys.argv[1:2] == ["--price"]:  # python -m twoclocks.bench_memory --price CONFIG [STEPS]
        print(json.dumps(price_study(sys.argv[2], *map(int, sys.argv[3:4])), indent=1))
        sys.exit(0)
    sys.exit("usage: python -m twoclocks.bench --memory-table (this module's --child is internal)")
