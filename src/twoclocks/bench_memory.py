"""Peak resident memory of train jobs: predicted (`train.memory`) against measured.

Each configuration trains in a fresh subprocess (``python -m twoclocks.bench_memory --child``),
which reports its own peak resident set (``VmHWM``), so one job's allocations never hide
another's. :func:`memory_table` runs the grid of issue 29's setting (concatenated 128-d
embeddings, (a + b) mod 97 on half of the ordered pairs, one seed) over hidden widths and
depths: peak memory, time per member-step and the share of time spent on metrics.
"""

from __future__ import annotations

import json
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
    with tempfile.TemporaryDirectory(prefix="twoclocks-mem-") as tmp:
        t0 = time.perf_counter()
        engine.train_cell(
            params,
            dataset,
            Path(tmp) / "t" / "trajectory.zarr",
            timings=timings,
            on_step=lambda _t: stamps.append(time.perf_counter()),
        )
        wall = time.perf_counter() - t0
    peak_kb = _peak_rss_kb()
    # steps 1 .. last: the first and last log rows (and set-up, final writes) fall outside
    step_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else wall
    out = {"peak_rss_mb": peak_kb / 1024.0, "wall_s": wall, "step_s": step_s, **timings}
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
        "modulus": int(params.get("modulus", 0)),
        "hidden_width": int(params.get("hidden_width", params.get("d_model", 0))),
        "hidden_layers": int(params.get("hidden_layers", params.get("n_layers", 0))),
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
    return f"{params.get('hidden_layers', 1)}x{params.get('hidden_width', 0)}"


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


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child())
    sys.exit("usage: python -m twoclocks.bench --memory-table (this module's --child is internal)")
