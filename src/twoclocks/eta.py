"""How long a study's training will take, said before its first train job (issue 25, item 4).

``study_eta(study)`` plans every train group (members x steps, minus what is already trained)
and prices a member-step from, in order of preference:

1. ``per_member_step_s`` given by the caller;
2. the newest bench record (``results/*/bench.json``, `python -m twoclocks.bench --output`)
   taken on this machine (same CPU model, same device type): its engine's per-member step time,
   metrics and writes included, at the bench's cadence;
3. ``calibrate_here=True``: a short measurement here (a few bare steps of the bench's cell, plus the
   metric share the bench targets);
4. ``DEFAULT_PER_MEMBER_STEP_S``, the paper model's figure on a 2-core VM (docs/performance.md).

The bench times the paper model (relu_embed, d = H = 128, p = 113); another cell's member-step
is priced by its matmul work (distinct train inputs x weights of the matmuls, what sets its
FLOPs; a sum-embedding pair and its transpose count once) relative to the bench cell's, floored
at ``MIN_WORK_RATIO`` (small models are bound by per-step overhead, not FLOPs). Groups run
``jobs`` at a time, longest first. An estimate, good to about 2x (docs/performance.md): it does
not model the log cadence, snapshots or other load on the machine.

Snakemake prints ``Eta.line()`` when the workflow loads (`workflow/rules/common.smk`), so it is
the first line of a run and shows in ``snakemake -n``; ``python -m twoclocks.eta CONFIG`` prints
it too. At the start of a run (``onstart``) the plan is saved as ``<study dir>/eta.json``; a live
view (`twoclocks.watch`) gets the time left from the study dir alone with
``eta_of_run(study_dir).wall_s`` (None without a plan), or from the config with
``study_eta(study, results_dir=study_dir).wall_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import math
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twoclocks.train.progress import duration

__all__ = [
    "DEFAULT_PER_MEMBER_STEP_S",
    "MIN_WORK_RATIO",
    "Eta",
    "GroupPlan",
    "bench_rate",
    "eta_of_run",
    "matmul_work",
    "study_eta",
    "write_plan",
]

# Paper model (3 members, 1,500 steps, paper cadence, 2 threads) on the 2-core AMD EPYC VM:
# engine wall 12.3 s / (1,500 x 3) member-steps (docs/performance.md, 2026-11-29).
DEFAULT_PER_MEMBER_STEP_S = 2.7e-3
# The cell the default rate was measured on (the bench's: p = 113, d = H = 128, fraction 0.3).
DEFAULT_BENCH_SETUP = {
    "modulus": 113,
    "train_fraction": 0.3,
    "split": "unordered",
    "embed_dim": 128,
    "hidden_width": 128,
}
MIN_WORK_RATIO = 0.05
TRANSFORMER_DEFAULTS = {"d_model": 128, "d_mlp": 512, "n_layers": 1}  # the schema's
# bare step -> engine step: the bench's metric + write share target (<= 0.10)
CALIBRATION_OVERHEAD = 1.0 / 0.9


@dataclass(frozen=True)
class GroupPlan:
    """One train group: its members (cells x seeds), steps, steps already trained, and the
    cost of one of its member-steps relative to the bench cell's."""

    group_id: str
    members: int
    steps: int
    done_steps: int
    work_ratio: float

    def seconds(self, per_member_step_s: float, *, remaining: bool = True) -> float:
        steps = self.steps - self.done_steps if remaining else self.steps
        return steps * self.members * self.work_ratio * per_member_step_s


@dataclass(frozen=True)
class Eta:
    """The plan and its price; ``total_s`` / ``remaining_s`` are serial compute seconds,
    ``wall_s`` the remaining time with ``jobs`` train jobs at once."""

    study: str
    groups: list[GroupPlan]
    per_member_step_s: float
    source: str
    jobs: int = 1

    @property
    def member_steps(self) -> int:
        return sum(g.members * g.steps for g in self.groups)

    @property
    def total_s(self) -> float:
        return sum(g.seconds(self.per_member_step_s, remaining=False) for g in self.groups)

    @property
    def remaining_s(self) -> float:
        return sum(g.seconds(self.per_member_step_s) for g in self.groups)

    @property
    def wall_s(self) -> float:
        """Remaining wall time with ``jobs`` slots, longest group first (greedy)."""
        slots = [0.0] * max(1, self.jobs)
        for s in sorted((g.seconds(self.per_member_step_s) for g in self.groups), reverse=True):
            heapq.heappush(slots, heapq.heappop(slots) + s)
        return max(slots)

    def line(self) -> str:
        left = [g for g in self.groups if g.done_steps < g.steps]
        done = len(self.groups) - len(left)
        head = (
            f"study {self.study}: training ETA {duration(self.wall_s)} "
            f"({len(left)} of {len(self.groups)} train groups to run"
        )
        head += f", {done} done" if done else ""
        return (
            f"{head}; {self.member_steps:,} member-steps at {self.per_member_step_s * 1e3:.2g} ms "
            f"per paper-model member-step, {self.jobs} job(s) at once; rate from {self.source})"
        )


def matmul_work(params: dict) -> float | None:
    """Train samples x weights of the matmuls of one member's forward (its FLOPs / 6 per step),
    from the cell params alone; None for a model or task it does not know."""
    model = params.get("model")
    if params.get("task") == "modular":
        p, frac = int(params["modulus"]), float(params["train_fraction"])
        n, classes = frac * p * p, p
        if model == "relu_embed" and params.get("combine", "sum") == "sum":
            # distinct inputs only: a pair and its transpose are one input (models.distinct_samples)
            n *= 0.5 if params.get("split") == "unordered" else 1 - frac / 2
    else:
        n, classes = params.get("train_size"), params.get("num_classes")
    if model == "relu_embed":
        width = int(params["embed_dim"]) * (2 if params.get("combine") == "concat" else 1)
        hidden = [int(params["hidden_width"])] * int(params.get("hidden_layers", 1))
        dims = [width, *hidden, classes]
    elif model == "transformer":  # K, V at the 3 positions; the last layer's Q, O, MLP at one
        d, f, layers = (int(params.get(k, v)) for k, v in TRANSFORMER_DEFAULTS.items())
        per_layer = 4 * d * d + 2 * d * f
        per_sample = 3 * (layers - 1) * per_layer + 3 * 2 * d * d + 2 * d * d + 2 * d * f
        return None if n is None else float(n) * (per_sample + d * int(classes))
    elif model == "deep_linear":
        dims = [params.get("input_dim"), *[params.get("width")] * (int(params["depth"]) - 1)]
        dims.append(classes)
    else:
        return None
    if n is None or any(d is None for d in dims):
        return None
    return float(n) * sum(int(a) * int(b) for a, b in zip(dims[:-1], dims[1:], strict=False))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or ""


def _bench_work(setup: dict) -> float:
    return matmul_work(
        {
            "task": "modular",
            "model": "relu_embed",
            "modulus": setup["modulus"],
            "train_fraction": setup["train_fraction"],
            "split": setup.get("split", "unordered"),
            "embed_dim": setup["embed_dim"],
            "hidden_width": setup["hidden_width"],
        }
    )


def bench_rate(paths: list[Path], device: str = "cpu") -> tuple[float, float, str] | None:
    """``(per_member_step_s, bench work, source)`` of the newest readable bench record among
    ``paths`` taken on this machine (CPU model) and device type, else None."""
    here = _cpu_model()
    found = []
    for path in paths:
        try:
            rec = json.loads(Path(path).read_text())
            machine, eng = rec["machine"], rec["engine"]
            if machine.get("cpu_model") != here or machine.get("device") != device:
                continue
            found.append((str(rec.get("date", "")), path, eng["per_member_step_s"], rec["setup"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not found:
        return None
    date, path, rate, setup = max(found, key=lambda f: f[0])
    return float(rate), _bench_work(setup), f"bench {path} ({date})"


def calibrate(threads: int | None = None, steps: int = 20) -> tuple[float, float, str]:
    """Time ``steps`` bare steps of the bench's cell here (3 members, best of 3 rounds) and
    price an engine member-step at that over 0.9 (the bench's metric + write share target)."""
    import time

    import torch

    from twoclocks import bench
    from twoclocks.data.io import build_dataset, data_params
    from twoclocks.train import engine

    if threads:
        torch.set_num_threads(int(threads))
    args = bench.parse_args(["--device", "cpu"])
    params = bench.bench_cell(args) | {"device": "cpu"}
    dataset = build_dataset(data_params(params))
    run = engine.set_up(params, dataset, torch.device("cpu"))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            engine.step(run)
        best = min(best, (time.perf_counter() - t0) / steps)
    per_member = best / len(run.seeds) * CALIBRATION_OVERHEAD
    return per_member, matmul_work(params), f"a {steps}-step calibration here"


def _done_steps(results_dir: Path | None, group_id: str, steps: int) -> int:
    """Steps a group has trained: all if its train output exists, else its resume state's."""
    if results_dir is None:
        return 0
    if (results_dir / "stacked" / group_id / "train").is_dir():
        return steps
    state = results_dir / "state" / group_id / "work" / "engine" / "state.npz"
    with contextlib.suppress(OSError, ValueError, KeyError):
        with np.load(state, allow_pickle=False) as z:
            return min(steps, int(z["step"]))
    return 0


def study_eta(
    study,
    *,
    results_dir: str | Path | None = None,
    jobs: int = 1,
    per_member_step_s: float | None = None,
    bench_paths: list[Path] | None = None,
    calibrate_here: bool = False,
    threads: int | None = None,
) -> Eta:
    """The training plan of ``study`` (a `config.Study`) and its expected runtime.

    ``results_dir``: the study's results folder; groups already trained there count as done
    (and partly trained ones by their resume state). ``bench_paths``: bench records to look for
    a rate in (default ``results/*/bench.json`` under the working directory). See the module
    docstring for the rate sources and the cost model.
    """
    device = "cuda" if study.config.get("device") == "cuda" else "cpu"
    results = Path(results_dir) if results_dir is not None else None
    bench_work = _bench_work(DEFAULT_BENCH_SETUP)
    if per_member_step_s is not None:
        rate, source = float(per_member_step_s), "the caller"
    else:
        paths = bench_paths
        if paths is None:
            paths = sorted(Path("results").glob("*/bench.json"))
        found = bench_rate(paths, device)
        if found is None and calibrate_here:
            found = calibrate(threads)
        if found is None:
            why = "a CPU figure" if device == "cuda" else "no bench of this machine"
            found = (DEFAULT_PER_MEMBER_STEP_S, bench_work, f"the default, {why}")
        rate, bench_work, source = found
    groups = []
    for gid, cells in study.groups.items():
        steps = max(int(c.params["steps"]) for c in cells)
        members = sum(len(c.params["seeds"]) for c in cells)
        works = [matmul_work(c.params) for c in cells]
        ratio = max(MIN_WORK_RATIO, max((w or bench_work) for w in works) / bench_work)
        groups.append(GroupPlan(gid, members, steps, _done_steps(results, gid, steps), ratio))
    return Eta(study.name, groups, rate, source, max(1, int(jobs)))


PLAN_FILE = "eta.json"


def write_plan(eta: Eta, study_dir: str | Path) -> Path:
    """Save the plan and its rate as ``<study_dir>/eta.json`` (Snakemake does at the start of a
    run), so a live view can price what is left without the config."""
    path = Path(study_dir) / PLAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(eta)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def eta_of_run(study_dir: str | Path, jobs: int | None = None) -> Eta | None:
    """The plan saved in ``study_dir`` (`write_plan`) with every group's trained steps read
    again from the study dir now; None if there is no readable plan. ``.remaining_s`` /
    ``.wall_s`` is the time left."""
    root = Path(study_dir)
    try:
        data = json.loads((root / PLAN_FILE).read_text())
        groups = [
            GroupPlan(**{**g, "done_steps": _done_steps(root, g["group_id"], int(g["steps"]))})
            for g in data["groups"]
        ]
        jobs = int(jobs or data["jobs"])
        return Eta(data["study"], groups, float(data["per_member_step_s"]), data["source"], jobs)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m twoclocks.eta CONFIG``: print a study's training ETA."""
    from twoclocks.config import load_config

    ap = argparse.ArgumentParser(prog="python -m twoclocks.eta", description=main.__doc__)
    ap.add_argument("config", type=Path)
    ap.add_argument(
        "--results", type=Path, default=None, help="study dir (default results/<study>)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="train jobs at once")
    ap.add_argument("--calibrate", action="store_true", help="measure here if no bench record")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    study = load_config(args.config)
    results = args.results or Path("results") / study.name
    eta = study_eta(
        study,
        results_dir=results,
        jobs=args.jobs,
        calibrate_here=args.calibrate,
        threads=args.threads,
    )
    print(eta.line())
    for g in sorted(eta.groups, key=lambda g: -g.seconds(eta.per_member_step_s)):
        print(
            f"  {g.group_id}: {g.members} members x {g.steps} steps "
            f"({g.done_steps} done), work x{g.work_ratio:.2f}, "
            f"{duration(g.seconds(eta.per_member_step_s))}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
