"""``python -m twoclocks.bench``: how fast the stacked engine is, measured in one run.

One JSON record, every number taken in the same process on the same machine:

1. ``speedup_per_member``: per-member step time of a reference loop written the way peers do it
   (one ``nn.Module`` per model, ``torch.optim.AdamW``, models trained one after another on every
   train sample, the same metric set computed with plain per-model code at the same log steps,
   metrics kept in Python lists and saved to npz at the end) over that of ``train_cell`` (all
   members stacked, distinct inputs weighted by multiplicity, full metric cadence, zarr
   trajectory).
2. ``mfu``: model FLOPs of a training step (forward + backward matmuls as the reference computes
   them: embedding gather free, a Linear ``(n, k) x (k, m)`` costs ``2nkm`` forward and ``4nkm``
   backward) per second of the engine's bare training step, over the GEMM peak (a large matmul
   timed here, same dtype and threads). The engine skips work the reference does (first layer
   through per-token tables, distinct inputs only), so this can exceed 1; ``mfu_executed``
   counts the FLOPs the engine actually runs, the hardware utilisation. ``mfu_end_to_end`` uses
   the whole ``train_cell`` wall.
3. ``metrics_write_share``: share of ``train_cell`` wall time the training thread spends on
   metrics (test forward and log rows) and store writes (copies, queueing and waiting; the zarr
   and state writes run on a background thread), as ``train_cell`` itself times them.
4. ``stacking_per_member_ratio``: per-member step time with N members over that with 1.
5. ``late_vs_early_speed``: steps/s in the last 10% of a longer, higher-lr run (weights and Adam
   moments shrink, where subnormal floats slow CPUs) over the first 10%.
6. ``dry_run_1000_cells_s``: ``snakemake -n`` wall time on a generated 1,000-cell grid.

Default log cadence: the paper config's ``log_every_steps`` and a dense window scaled to the run
length (paper dense steps x steps / paper steps, likewise the snapshot count), so the share of
logged steps matches a full 15k-step run of config/paper.yaml. A run's fixed costs (store
creation on the writer thread, the final flush and validation) do not scale with it: they weigh
ten times more in the default 1,500-step run than in a full-length one (``--steps 15000``,
docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from twoclocks.bench_memory import (
    TABLE_SETTING,
    TRANSFORMER_SETTING,
    format_table,
    memory_row,
    memory_table,
    transformer_table,
)
from twoclocks.bench_reference import check_metric_set as _check_metric_set  # noqa: F401
from twoclocks.bench_reference import reference_train
from twoclocks.config import load_config
from twoclocks.data.io import build_dataset, data_params
from twoclocks.provenance import json_safe
from twoclocks.train import engine
from twoclocks.train.models import model_spec

__all__ = [
    "TARGETS",
    "bench_cell",
    "dry_run_config",
    "gemm_peak_flops",
    "main",
    "model_flops_per_step",
    "parse_args",
    "reference_train",
    "run_bench",
]

REPO = Path(__file__).resolve().parents[2]


def _paper_logging() -> dict:
    """The paper study's log cadence (config/paper.yaml), the cadence the bench reproduces."""
    try:
        import yaml

        cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
        return {**cfg["logging"], "steps": cfg["base"]["steps"]}
    except (OSError, KeyError, TypeError):
        return {"log_dense_steps": 100, "log_every_steps": 50, "snapshot_count": 16, "steps": 15000}


_PAPER = _paper_logging()
PAPER_STEPS = int(_PAPER["steps"])
PAPER_DENSE_STEPS = int(_PAPER["log_dense_steps"])
PAPER_EVERY_STEPS = int(_PAPER["log_every_steps"])
PAPER_SNAPSHOTS = int(_PAPER["snapshot_count"])

# name -> (comparison, threshold); CPU targets of issue 7.
TARGETS = {
    "speedup_per_member": (">=", 1.3),
    "mfu": (">=", 0.5),
    "metrics_write_share": ("<=", 0.1),
    "stacking_per_member_ratio": ("<=", 1.0),
    "late_vs_early_speed": (">=", 0.8),
    "dry_run_1000_cells_s": ("<=", 10.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m twoclocks.bench", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--modulus", type=int, default=113)
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--hidden-width", type=int, default=128)
    ap.add_argument("--train-fraction", type=float, default=0.3)
    ap.add_argument(
        "--split",
        choices=["unordered", "ordered"],
        default="unordered",
        help="train/test split over unordered (leak-free) or ordered pairs",
    )
    ap.add_argument("--members", type=int, default=3, help="seeds stacked in one cell")
    ap.add_argument(
        "--steps",
        type=int,
        default=1500,
        help="training steps of each timed run (default 1500, a tenth of the paper run)",
    )
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1.0)
    ap.add_argument(
        "--log-dense-steps", type=int, default=None, help="default: paper's, scaled to --steps"
    )
    ap.add_argument("--log-every-steps", type=int, default=PAPER_EVERY_STEPS)
    ap.add_argument(
        "--snapshot-count", type=int, default=None, help="default: scaled like the paper run"
    )
    ap.add_argument("--late-steps", type=int, default=400, help="0 skips the late-speed run")
    ap.add_argument("--late-lr", type=float, default=1e-2)
    ap.add_argument("--mfu-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side; fastest kept")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--dry-run-cells", type=int, default=1000, help="0 skips the dry run")
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the predicted vs measured peak memory of the bench's job (a subprocess run)",
    )
    ap.add_argument(
        "--memory-table",
        nargs="?",
        const="mlp",
        choices=["mlp", "transformer"],
        help="instead of the speed record: peak memory and time per member-step of the canonical "
        "grokking MLP (concat 128-d embeddings, mod 97, half the ordered pairs, one seed) over "
        "widths x depths, or (`transformer`) of beyond.yaml's transformer over 1-2 layers, "
        "moduli 97 and 47 and 1-3 stacked members",
    )
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Setup


def bench_cell(args: argparse.Namespace, *, members: int | None = None, **override) -> dict:
    """Resolved paper-model cell params (through ``load_config``, so validated) for the bench."""
    m = args.members if members is None else members
    steps = int(override.pop("steps", args.steps))
    dense = args.log_dense_steps
    if dense is None:
        dense = round(PAPER_DENSE_STEPS * steps / PAPER_STEPS)
    dense = int(override.pop("log_dense_steps", dense))
    snapshots = args.snapshot_count
    if snapshots is None:  # as many per step as the paper run: its 16 snapshots amortise
        snapshots = max(2, round(PAPER_SNAPSHOTS * steps / PAPER_STEPS))
    snapshots = int(override.pop("snapshot_count", snapshots))
    base = {
        "task": "modular",
        "op": "add",
        "modulus": args.modulus,
        "train_fraction": args.train_fraction,
        "split": args.split,
        "split_seed": 0,
        "model": "relu_embed",
        "embed_dim": args.embed_dim,
        "combine": "sum",
        "hidden_width": args.hidden_width,
        "hidden_layers": 1,
        "bias": True,
        "optimizer": "adamw",
        "lr": args.lr,
        "betas": [0.9, 0.98],
        "weight_decay": args.weight_decay,
        "steps": steps,
        "fourier_keep": min(8, args.modulus // 2),
    }
    base.update(override)
    cfg = {
        "study": "bench",
        "seeds": list(range(m)),
        "device": args.device,
        "dtype": args.dtype,
        "logging": {
            "log_dense_steps": dense,
            "log_every_steps": int(args.log_every_steps),
            "snapshot_count": snapshots,
            "checkpoint_every_steps": 1000,
        },
        "base": base,
        "grids": {"bench": {}},
    }
    return dict(load_config(cfg).cells[0].params)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak_flops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best FLOP/s of a large square matmul (``2 n^3`` FLOPs) on this device and thread count."""
    n = 8192 if device.type == "cuda" else 2048
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    c = a @ b
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def model_flops_per_step(spec, n_train: int) -> float:
    """Matmul FLOPs of one forward + backward of one member, as the reference computes them:
    each Linear (n, k) x (k, m) costs 6nkm (2 forward, 4 backward); the embedding gather is free."""
    dims = [spec.linear_input_dim] + [spec.hidden_width] * spec.hidden_layers + [spec.num_classes]
    return float(sum(6 * n_train * k * m for k, m in zip(dims[:-1], dims[1:], strict=True)))


# ---------------------------------------------------------------------------------------------
# Instrumented engine runs


def _timed_engine(params: dict, dataset, workdir: Path, device: torch.device) -> dict:
    """Run ``train_cell`` once: its own timings (wall, metrics, blocking writes) and per-update
    timestamps (the engine's ``on_step`` hook)."""
    stamps: list[float] = []
    out = workdir / f"run{len(list(workdir.iterdir()))}" / "trajectory.zarr"
    timings: dict = {}
    _sync(device)
    t0 = time.perf_counter()
    engine.train_cell(
        params,
        dataset,
        out,
        progress=False,
        timings=timings,
        on_step=lambda _t: stamps.append(time.perf_counter()),
    )
    _sync(device)
    wall = time.perf_counter() - t0
    shutil.rmtree(out.parent, ignore_errors=True)
    spent = {"metrics": timings["metrics_s"], "writes": timings["writes_s"]}
    return {"wall_s": wall, "spent_s": spent, "stamps": np.asarray(stamps) - t0}


def _step_loop_seconds(params: dict, dataset, device, steps: int) -> float:
    """Seconds per bare stacked training step: the engine's own ``step`` (forward, per-member
    CE, backward, optimiser update) on the engine's own set-up."""
    run = engine.set_up(params, dataset, device)
    for _ in range(3):
        engine.step(run)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step(run)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _train_samples(spec, dataset, device):
    """The engine's training samples: distinct inputs and multiplicities (``Samples``)."""
    x = torch.as_tensor(dataset["x_train"].values, device=device)
    y = torch.as_tensor(dataset["y_train"].values, device=device)
    return engine.Samples.of(spec, x, y)


def executed_flops_per_step(spec, n_distinct: int) -> float:
    """Matmul FLOPs one member's engine step actually executes (relu_embed): the per-token
    first-layer table ``E W1^T`` over the vocabulary, later layers and head over the distinct
    samples, each ``6 n k m`` for forward + backward."""
    vocab, d, h = int(spec.vocab_size), spec.embed_dim, spec.hidden_width
    tables = 2 if spec.combine == "concat" else 1
    first = 6 * vocab * d * h * tables
    rest = [h] * spec.hidden_layers + [spec.num_classes]
    return float(
        first + sum(6 * n_distinct * k * m for k, m in zip(rest[:-1], rest[1:], strict=True))
    )


# ---------------------------------------------------------------------------------------------
# Workflow dry run


def _split3(n: int) -> tuple[int, int, int]:
    """Three factors of ``n``, as even as the divisors allow."""
    a = max(d for d in range(1, int(round(n ** (1 / 3))) + 1) if n % d == 0)
    r = n // a
    b = max(d for d in range(1, int(math.isqrt(r)) + 1) if r % d == 0)
    return a, b, r // b


def dry_run_config(cells: int) -> dict:
    """The paper config with one relu grid whose axes (weight decay x lr x train fraction)
    multiply to ``cells``."""
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    n_frac, n_lr, n_wd = _split3(cells)
    axes = {
        "weight_decay": [round(0.1 + 0.01 * i, 4) for i in range(n_wd)],
        "lr": [float(f"{1e-4 * (1 + i):.6g}") for i in range(n_lr)],
        "train_fraction": [round(0.2 + 0.6 * i / max(1, n_frac - 1), 4) for i in range(n_frac)],
    }
    cfg["grids"] = {"relu": {"axes": {k: v for k, v in axes.items() if len(v) > 1 or k == "lr"}}}
    return cfg


def dry_run_seconds(cells: int) -> float:
    """Wall time of ``snakemake -n -q`` on a generated ``cells``-cell config (fresh directory)."""
    with tempfile.TemporaryDirectory(prefix="twoclocks-dry-") as tmp:
        cfg_path = Path(tmp) / "grid.yaml"
        cfg_path.write_text(yaml.safe_dump(dry_run_config(cells)))
        cmd = [
            "snakemake",
            "-n",
            "-q",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(cfg_path),
            "--directory",
            str(Path(tmp) / "work"),
            "--cores",
            "1",
        ]
        (Path(tmp) / "work").mkdir()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"snakemake dry run failed:\n{proc.stdout}\n{proc.stderr}")
    return wall


# ---------------------------------------------------------------------------------------------
# Machine and record


def _machine(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out = {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_start": list(os.getloadavg()),
    }
    return out


def _verdicts(record: dict) -> dict:
    out = {}
    for name, (op, thr) in TARGETS.items():
        v = record.get(name)
        if v is None or not math.isfinite(v):
            ok, status = None, "N/A"
        else:
            ok = bool(v >= thr) if op == ">=" else bool(v <= thr)
            status = "PASS" if ok else "FAIL"
        out[name] = {"value": v, "target": f"{op} {thr}", "pass": ok, "status": status}
    return out


def _window_rate(stamps: np.ndarray, steps: int) -> tuple[float, float]:
    """Steps/s over the first and last 10% of steps from per-update timestamps."""
    k = max(1, steps // 10)
    if len(stamps) < 2 * k + 1:
        return math.nan, math.nan
    early = k / (stamps[k] - stamps[0])
    late = k / (stamps[-1] - stamps[-1 - k])
    return float(early), float(late)


def run_bench(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Run every measurement and return the record (see the module docstring)."""
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = engine.resolve_device(args.device)
    dtype = engine.DTYPES[args.dtype]
    params = bench_cell(args) | {"device": device.type}
    dataset = build_dataset(data_params(params))
    spec = model_spec(params, dict(dataset.attrs))
    record = _record_head(args, argv, params, dataset, spec, device)
    runs = _timed_runs(args, params, dataset, device, dtype)
    # Peak and bare step interleaved, best of 3 rounds: other load on the machine only slows.
    rounds = [
        (gemm_peak_flops(device, dtype), _step_loop_seconds(params, dataset, device, k))
        for k in [max(1, args.mfu_steps)] * 3
    ]
    peak = max(runs["peak"], *(r[0] for r in rounds))
    step_s = min(r[1] for r in rounds)
    _speed_fields(record, runs, spec, args.members, int(params["steps"]), peak, step_s)
    _late_fields(record, runs["late"], args)
    record["dry_run_cells"] = args.dry_run_cells
    record["dry_run_s"] = dry_run_seconds(args.dry_run_cells) if args.dry_run_cells > 0 else None
    record["dry_run_1000_cells_s"] = record["dry_run_s"] if args.dry_run_cells == 1000 else None
    record["memory"] = memory_row(params, torch.get_num_threads()) if args.memory else None
    record["machine"]["load_avg_end"] = list(os.getloadavg())
    record["targets"] = _verdicts(record)
    return record


def _record_head(args, argv, params, dataset, spec, device) -> dict:
    """The record's command, date, machine and set-up."""
    n_distinct = len(_train_samples(spec, dataset, device).y)
    steps = int(params["steps"])
    log_at = engine.log_steps(steps, params["log_dense_steps"], params["log_every_steps"])
    setup = {"model": "relu_embed"}
    setup.update({k: getattr(args, k) for k in ("modulus", "embed_dim", "hidden_width")})
    setup.update(
        train_fraction=args.train_fraction,
        n_train=int(dataset.sizes["train"]),
        n_train_distinct=n_distinct,
        split=args.split,
        n_test=int(dataset.sizes["test"]),
        members=args.members,
        steps=steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        dtype=args.dtype,
        log_dense_steps=int(params["log_dense_steps"]),
        log_every_steps=int(params["log_every_steps"]),
        log_points=int(len(log_at)),
        snapshot_count=int(params["snapshot_count"]),
    )
    return {
        "command": shlex.join([sys.executable, "-m", "twoclocks.bench", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "machine": _machine(device),
        "setup": setup,
    }


def _timed_runs(args, params, dataset, device, dtype) -> dict:
    """Engine (N members and 1), reference and late-speed runs: the fastest of interleaved
    repeats (load from other processes only slows a run), with every wall kept."""
    out: dict = {"peak": gemm_peak_flops(device, dtype)}
    with tempfile.TemporaryDirectory(prefix="twoclocks-bench-") as tmp:
        work = Path(tmp)
        # Warm-up: first-call costs (imports, allocator, optimiser setup) of both sides.
        warm = bench_cell(args, steps=2, snapshot_count=2) | {"device": device.type}
        _timed_engine(warm, dataset, work, device)
        reference_train(
            bench_cell(args, steps=2, members=1, snapshot_count=2), dataset, device, dtype
        )
        one = bench_cell(args, members=1) | {"device": device.type}
        runs_n, refs, runs_1 = [], [], []
        for _ in range(max(1, args.repeats)):
            runs_n.append(_timed_engine(params, dataset, work, device))
            refs.append(reference_train(params, dataset, device, dtype))
            runs_1.append(_timed_engine(one, dataset, work, device))
        out["walls"] = {"engine": runs_n, "reference": refs, "engine_1_member": runs_1}
        for key, runs in (("run_n", runs_n), ("ref", refs), ("run_1", runs_1)):
            out[key] = min(runs, key=lambda d: d["wall_s"])
        out["late"] = None
        if args.late_steps > 0:
            late_params = bench_cell(
                args, steps=args.late_steps, lr=args.late_lr, log_dense_steps=0, snapshot_count=2
            ) | {"device": device.type}
            out["late"] = _timed_engine(late_params, dataset, work, device)
    return out


def _speed_fields(record, runs, spec, m, steps, peak, step_s) -> None:
    """Per-member step times, speed-up, FLOP utilisation, metric share and stacking ratio."""
    run_n, ref, run_1 = runs["run_n"], runs["ref"], runs["run_1"]
    n_train, n_distinct = record["setup"]["n_train"], record["setup"]["n_train_distinct"]
    flops = model_flops_per_step(spec, n_train)
    flops_exec = executed_flops_per_step(spec, n_distinct)
    eng_pm = run_n["wall_s"] / (steps * m)
    ref_pm = ref["wall_s"] / (steps * m)
    one_pm = run_1["wall_s"] / steps
    spent = run_n["spent_s"]
    record["repeats"] = len(runs["walls"]["engine"])
    record["walls_s"] = {k: [r["wall_s"] for r in v] for k, v in runs["walls"].items()}
    record["engine"] = {
        "wall_s": run_n["wall_s"],
        "per_member_step_s": eng_pm,
        "metrics_s": spent["metrics"],
        "writes_s": spent["writes"],
        "bare_step_s": step_s,
        "bare_per_member_step_s": step_s / m,
    }
    record["reference"] = {
        "wall_s": ref["wall_s"],
        "per_member_step_s": ref_pm,
        "metrics_write_s": ref["metrics_write_s"],
        "metrics_write_share": ref["metrics_write_s"] / ref["wall_s"],
    }
    record["speedup_per_member"] = ref_pm / eng_pm
    record["flops_per_member_step"] = flops
    record["gemm_peak_flops"] = peak
    record["step_flops_rate"] = flops * m / step_s
    record["mfu"] = flops * m / step_s / peak
    record["mfu_end_to_end"] = flops / eng_pm / peak
    record["executed_flops_per_member_step"] = flops_exec
    record["mfu_executed"] = flops_exec * m / step_s / peak
    record["metrics_write_share"] = min(1.0, sum(spent.values()) / run_n["wall_s"])
    record["stacking"] = {"per_member_step_s_1": one_pm, f"per_member_step_s_{m}": eng_pm}
    record["stacking_per_member_ratio"] = eng_pm / one_pm


def _late_fields(record, late, args) -> None:
    """Steps/s late in a longer, higher-lr run over early (subnormal floats slow CPUs)."""
    if late is None:
        record["late"], record["late_vs_early_speed"] = None, None
        return
    early_rate, late_rate = _window_rate(late["stamps"], args.late_steps)
    record["late"] = {
        "steps": args.late_steps,
        "lr": args.late_lr,
        "log_every_steps": int(args.log_every_steps),
        "early_steps_per_s": early_rate,
        "late_steps_per_s": late_rate,
        "flush_denormal": True,
    }
    record["late_vs_early_speed"] = late_rate / early_rate


def run_memory_table(args: argparse.Namespace) -> dict:
    """``--memory-table``: peak resident memory (predicted and measured) and time per
    member-step of issue 29's setting over hidden widths and depths (`bench_memory`)."""
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = engine.resolve_device(args.device).type
    if args.memory_table == "transformer":  # CPU jobs: measured against the host's peak
        rows = transformer_table(threads=torch.get_num_threads(), steps=args.steps)
        return {"setting": TRANSFORMER_SETTING, "rows": rows}

    def make(**shape) -> dict:
        return bench_cell(args, members=1, **TABLE_SETTING, **shape) | {"device": device}

    rows = memory_table(make, args.widths, args.layers, threads=torch.get_num_threads())
    return {"setting": TABLE_SETTING, "members": 1, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_table:
        record = run_memory_table(args)
        print(format_table(record["rows"]), file=sys.stderr)
    else:
        record = run_bench(args, argv)
    text = json.dumps(json_safe(record), indent=2, allow_nan=False)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
