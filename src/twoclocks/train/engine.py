"""The training loop of one cell: all seeds stacked as members of one tensor program.

``train_cell`` trains a resolved cell (docs/design.md) full batch and writes its trajectory
store. Per step: forward + backward of ``sum_i mean-CE_i`` (each member's gradient is exactly its
own, no shared reduction, clipping or scaler), divergence check, logging/snapshots when scheduled,
one optimiser update. Metrics at step t use the parameters after t updates (step 0 = init), from
the same forward/backward that drives the next update, so train metrics cost no extra pass.
Inputs the model cannot tell apart (``models.distinct_samples``) are trained and evaluated once,
weighted by multiplicity; every loss and sample mean equals the one over all samples. Store and
resume-state writes run on one background thread, in order (``BackgroundWriter``).

Phases (each a short function over one `Run` dataclass): ``set_up`` (model, schedules
(`train.schedule`), parameters, store layout, samples, optimiser; a new store's creation starts
on the writer thread as soon as the layout is known), ``_open_or_resume`` (waits for that
creation, so no log row runs beside it), ``_loop`` (per step: ``gradients``, divergence check,
``_log``, ``_snapshot``, optimiser update, ``on_step`` hook, ``_checkpoint``), ``_finish``
(validate, publish). ``step`` is the bare training step the bench times; the progress bar and
lines are `train.progress`.

Faults: resume state is saved every ``checkpoint_every_steps`` (and on SIGTERM/SIGINT, which then
exit with 128 + signal); a re-run resumes from it and produces a bitwise identical store on CPU.
A member whose loss turns non-finite is frozen, its ``diverged_step`` recorded, its later
metrics NaN; the others are unaffected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from twoclocks.data.tasks import task
from twoclocks.provenance import digest
from twoclocks.train import metric_catalog as cat
from twoclocks.train import store as ts
from twoclocks.train.host_memory import keep_freed_memory
from twoclocks.train.manifest import seed_status
from twoclocks.train.models import (
    ModelSpec,
    distinct_samples,
    forward,
    init_params,
    model_spec,
)
from twoclocks.train.optim import make_optimizer
from twoclocks.train.progress import (  # noqa: F401  (re-exported: the old import path)
    PROGRESS_EVERY_FRACTION,
    PROGRESS_MIN_INTERVAL_S,
    Progress,
    progress_stream,
)
from twoclocks.train.schedule import cell_log_steps, log_steps, snapshot_steps
from twoclocks.train.writer import BackgroundWriter

__all__ = [
    "Run",
    "gradients",
    "log_steps",
    "member_losses",
    "progress_stream",
    "resolve_device",
    "set_up",
    "snapshot_steps",
    "step",
    "train_cell",
]

log = logging.getLogger("twoclocks.train")

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu (logged); ``cuda`` without a GPU is an error."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "device: cuda was requested but torch.cuda.is_available() is False (no GPU or a "
                "CPU-only torch build). Set `device: auto` (falls back to CPU) or `device: cpu` "
                "in the config, or run the job on a GPU node with a CUDA build of torch."
            )
        return torch.device("cuda")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.info("device: auto -> no CUDA available, training on CPU")
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; allowed: auto, cpu, cuda")


def _fingerprint(params: dict) -> str:
    return digest(params, chars=None)


class Samples(NamedTuple):
    """A split's distinct inputs, labels and multiplicities (None: all distinct), on the device."""

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None

    @classmethod
    def of(cls, spec: ModelSpec, x: torch.Tensor, y: torch.Tensor) -> Samples:
        return cls(*distinct_samples(spec, x, y))


@torch.no_grad()
def _log_row(metrics: list[cat.Metric], ctx: cat.LogContext) -> dict[str, torch.Tensor]:
    """All metrics of one log step as float64 tensors (M,) or (M, k), in declaration order.

    Sample means are weighted by the multiplicities of the context's samples (equal to the
    plain means over all samples)."""
    return {m.name: m.compute(ctx) for m in metrics}


def member_losses(
    logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Training loss per member, (M, n, C) -> (M,): each member's own mean CE in the training
    dtype (weighted by the sample multiplicities ``weight`` if given). The engine backpropagates
    their sum, so member i's gradient is exactly its own."""
    m, n, c = logits.shape
    ce = F.cross_entropy(logits.reshape(m * n, c), y.repeat(m), reduction="none").view(m, n)
    if weight is None:
        return ce.mean(1)
    w = weight.to(ce.dtype)
    return (ce * w).sum(1) / w.sum()


def _to_tensor(a, device, dtype=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), device=device, dtype=dtype)


StepHook = Callable[[int], None]


def train_cell(
    params: dict,
    dataset: xr.Dataset,
    store_path: Path,
    *,
    state_dir: Path | None = None,
    progress: bool | None = None,
    timings: dict | None = None,
    on_step: StepHook | None = None,
) -> Path:
    """Train one cell (all its seeds stacked) and publish its trajectory store at ``store_path``.

    Resumes from ``state_dir`` (default ``<store_path>.state``) if a state for the same params
    exists. ``progress``: see `progress_stream`. ``timings``: if a dict, filled with the seconds the
    training thread spent in metrics (test forward and log rows) and in store writes (copies,
    submits, waits and the final synchronous steps; the writes themselves run in the
    background), and the wall time. ``on_step(t)``: called right after the optimiser update that
    makes ``t`` updates (the bench stamps steps with it). Returns ``store_path``.
    """
    store_path = Path(store_path)
    state_dir = ts.state_path(store_path) if state_dir is None else Path(state_dir)
    device = resolve_device(str(params.get("device", "auto")))
    flush = device.type == "cpu" and bool(params.get("flush_denormal", True))
    keep_freed_memory()  # temporaries reused, not page-faulted in every step (bits unchanged)
    if flush:
        torch.set_flush_denormal(True)
    try:
        t0 = time.perf_counter()
        writer, state = BackgroundWriter(), _resume_state(params, store_path, state_dir)

        def create(layout: ts.StoreLayout) -> None:  # overlaps the rest of set-up
            if state is None:
                writer.submit(ts.create_store, ts.partial_path(store_path), layout)

        try:
            run = set_up(params, dataset, device, on_layout=create)
        except BaseException:
            with contextlib.suppress(Exception):
                writer.close()
            raise
        run.on_step, run.writer = on_step, writer
        _open_or_resume(run, store_path, state_dir, state)
        _loop(run, progress)
        out = _finish(run)
        if timings is not None:
            timings.update(run.clock, wall_s=time.perf_counter() - t0)
        return out
    finally:
        if flush:
            torch.set_flush_denormal(False)


@dataclass
class Run:
    """One cell's training run: what the phases share (built by :func:`set_up`)."""

    params: dict
    spec: ModelSpec
    seeds: list[int]
    steps: int
    train: Samples
    test: Samples
    p: dict[str, torch.Tensor]
    opt: Any
    metrics: list[cat.Metric]
    layout: ts.StoreLayout
    log_index: dict[int, int]
    snap_index: dict[int, int]
    ckpt_every: int
    fourier_keep: int
    # filled by _open_or_resume and the loop
    store_path: Path | None = None
    partial: Path | None = None
    state_dir: Path | None = None
    writer: BackgroundWriter | None = None
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    diverged: torch.Tensor | None = None
    prev_gates: torch.Tensor | None = None
    pending_update: tuple | None = None  # (LogContext, row) awaiting this step's update
    flushed: int = 0
    pending_snaps: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    start: int = 0
    t: int = 0
    on_step: StepHook | None = None
    clock: dict[str, float] = field(default_factory=lambda: {"metrics_s": 0.0, "writes_s": 0.0})

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.params)


def set_up(
    params: dict,
    dataset: xr.Dataset,
    device: torch.device,
    on_layout: Callable[[ts.StoreLayout], None] | None = None,
) -> Run:
    """Phase 1: the model, schedules, initial parameters, store layout, samples and optimiser.

    ``on_layout(layout)`` is called as soon as the store layout is known, before the samples
    and the optimiser are built (`train_cell` starts creating the store there)."""
    dtype = DTYPES[str(params.get("dtype", "float32"))]
    seeds = [int(s) for s in params["seeds"]]
    steps = int(params["steps"])
    attrs = dict(dataset.attrs)
    dense = task(attrs["task"]).input_kind == "dense"
    input_dim = int(dataset.sizes["feature"]) if dense else None
    spec = model_spec(params, attrs, input_dim=input_dim)

    def split(name: str) -> Samples:
        x = spec.encode_inputs(_to_tensor(dataset[f"x_{name}"].values, device), dtype)
        y = _to_tensor(dataset[f"y_{name}"].values, device, torch.long)
        # Distinct inputs only, weighted by multiplicity (same losses and metrics).
        return Samples.of(spec, x, y)

    log_at = cell_log_steps(params)
    snap_at = snapshot_steps(steps, int(params["snapshot_count"]))
    p0 = init_params(spec, seeds, params.get("init_scale", 1.0), dtype=dtype, device=device)
    metrics = cat.metrics_for(spec)
    layout = _layout(params, spec, seeds, log_at, snap_at, metrics, p0, device, dtype)
    if on_layout is not None:
        on_layout(layout)
    train, test = split("train"), split("test")
    p = {k: v.requires_grad_(True) for k, v in p0.items()}
    return Run(
        params=params,
        spec=spec,
        seeds=seeds,
        steps=steps,
        train=train,
        test=test,
        p=p,
        opt=make_optimizer(params, p),
        metrics=metrics,
        layout=layout,
        log_index={int(s): i for i, s in enumerate(log_at)},
        snap_index={int(s): i for i, s in enumerate(snap_at)},
        ckpt_every=max(1, int(params["checkpoint_every_steps"])),
        fourier_keep=int(params.get("fourier_keep", 8)),
    )


def _layout(params, spec, seeds, log_at, snap_at, metrics, p0, device, dtype) -> ts.StoreLayout:
    """The store's shape and attrs, all known before the first step."""
    lr = np.broadcast_to(np.asarray(params["lr"], dtype=np.float64), (len(seeds),))
    dtype_name = str(dtype).split(".")[-1]
    try:
        from twoclocks import provenance

        prov = provenance.to_json(provenance.collect(device.type, dtype_name))
    except Exception as exc:  # provenance must never block training
        prov = json.dumps({"error": f"provenance unavailable: {exc!r}"})
    return ts.StoreLayout(
        seeds=seeds,
        steps=log_at,
        tau=lr[:, None] * log_at[None, :].astype(np.float64),
        blocks=spec.blocks(),
        matrices=spec.matrices(),
        sv_count=spec.sv_count,
        checkpoint_steps=snap_at,
        metrics={m.name: (m.dim, m.long_name, m.units) for m in metrics},
        snapshots={b: tuple(p0[b].shape[1:]) for b in spec.blocks()},
        snapshot_dtype=dtype_name,
        attrs={
            "cell": json.dumps(params, sort_keys=True, default=str),
            "provenance": prov,
            "dtype": dtype_name,
            "device": device.type,
            "model": spec.kind,
            "end_to_end_matrix": spec.end_to_end_name,
            "title": f"twoclocks trajectory of cell {params.get('cell_id', '?')}",
        },
    )


def _resume_state(params: dict, store_path: Path, state_dir: Path) -> dict | None:
    """The resume state in ``state_dir`` if it was written for these params next to an existing
    partial store, else None (a stale state is ignored, with a warning)."""
    state = ts.load_state(state_dir)
    if state is not None and (
        str(state["fingerprint"]) != _fingerprint(params)
        or not ts.partial_path(store_path).exists()
    ):
        log.warning("ignoring resume state in %s (different params or no partial store)", state_dir)
        state = None
    return state


def _open_or_resume(run: Run, store_path: Path, state_dir: Path, state: dict | None) -> None:
    """Phase 2: fresh buffers for a new store (its creation, queued during set-up, is waited
    for here so no log row runs beside it), or params, optimiser, gates and rows restored from
    the resume ``state``."""
    run.store_path, run.state_dir = store_path, state_dir
    run.partial = ts.partial_path(store_path)
    device = run.p[run.spec.blocks()[0]].device
    if state is None:
        run.buffers = {n: np.full(run.layout.metric_shape(n), np.nan) for n in run.layout.metrics}
        run.buffers["diverged_step"] = np.full(len(run.seeds), -1, dtype=np.int64)
        run.start = 0
    else:
        with torch.no_grad():
            for k, v in run.p.items():
                v.copy_(_to_tensor(state[f"param/{k}"], device))
        run.opt.load_state_dict(
            {k[4:]: _to_tensor(v, device) for k, v in state.items() if k.startswith("opt/")}
        )
        if "prev_gates" in state:
            run.prev_gates = _to_tensor(state["prev_gates"], device, torch.bool)
        run.buffers = ts.read_buffers(run.partial, run.layout)
        run.start = int(state["step"])
        log.info("resuming cell at step %d of %d from %s", run.start, run.steps, state_dir)
    run.t = run.start
    run.diverged = _to_tensor(run.buffers["diverged_step"], device) >= 0
    run.flushed = int(np.searchsorted(run.layout.steps, run.start))
    tw0 = time.perf_counter()
    run.writer.wait()
    run.clock["writes_s"] += time.perf_counter() - tw0


def gradients(run: Run):
    """Forward and backward of ``sum_i mean-CE_i`` on the train samples: ``(fwd, loss_m)``."""
    for v in run.p.values():
        v.grad = None
    fwd = forward(run.spec, run.p, run.train.x)
    loss_m = member_losses(fwd.logits, run.train.y, run.train.weight)
    loss_m.sum().backward()
    return fwd, loss_m


def step(run: Run) -> None:
    """The bare training step (gradients, one optimiser update), as the loop runs it; the bench
    times this."""
    gradients(run)
    run.opt.step()


def _check_divergence(run: Run, loss_m: torch.Tensor) -> None:
    """Freeze members whose loss turned non-finite at this step and record the step."""
    bad = ~torch.isfinite(loss_m.detach()) & ~run.diverged
    if bool(bad.any()):
        run.opt.freeze(bad)
        run.diverged |= bad
        run.buffers["diverged_step"][bad.cpu().numpy()] = run.t
        log.warning("members %s diverged at step %d", np.flatnonzero(bad.cpu()), run.t)


def _log(run: Run, fwd) -> None:
    """Phase: one log row (test forward, every declared metric), NaN for diverged members.

    ``after_update`` metrics wait for this step's update (:func:`_log_update`)."""
    tm0 = time.perf_counter()
    with torch.no_grad():
        test_logits = run.spec.logits(run.p, run.test.x)
    ctx = cat.LogContext(
        spec=run.spec,
        params=run.p,
        fwd=fwd,
        train=run.train,
        test=run.test,
        test_logits=test_logits,
        prev_gates=run.prev_gates,
        fourier_keep=run.fourier_keep,
        delta=any(m.needs_delta for m in run.metrics),
        weight_decay=run.opt.weight_decay,
        # frozen blocks (`frozen_blocks`) take no weight decay either
        decay={b: d and b not in run.opt.frozen for b, d in run.opt.decay.items()},
    )
    i = run.log_index[run.t]
    due = [m for m in run.metrics if m.logged_at(i)]
    _store_row(run, _log_row([m for m in due if not m.after_update], ctx), i)
    run.prev_gates = ctx.gates
    if any(m.after_update for m in due):
        ctx.before = {b: v.detach().clone() for b, v in run.p.items()}
        run.pending_update = (ctx, i)
    run.clock["metrics_s"] += time.perf_counter() - tm0


def _log_update(run: Run) -> None:
    """Phase: the ``after_update`` metrics of the last log row, once its update is taken."""
    if run.pending_update is None:
        return
    tm0 = time.perf_counter()
    ctx, i = run.pending_update
    run.pending_update = None
    due = [m for m in run.metrics if m.after_update and m.logged_at(i)]
    _store_row(run, _log_row(due, ctx), i)
    run.clock["metrics_s"] += time.perf_counter() - tm0


def _store_row(run: Run, row: dict[str, torch.Tensor], i: int) -> None:
    """Copy metric values into log row ``i`` of the host buffers (NaN for diverged members)."""
    any_diverged = bool(run.diverged.any())
    for name, val in row.items():
        if any_diverged:
            mask = (~run.diverged).view(-1, *([1] * (val.ndim - 1)))
            val = torch.where(mask, val, torch.full_like(val, math.nan))
        run.buffers[name][:, i] = val.cpu().numpy()


def _snapshot(run: Run) -> None:
    tw0 = time.perf_counter()
    run.pending_snaps[run.snap_index[run.t]] = {
        b: v.detach().cpu().numpy().copy() for b, v in run.p.items()
    }
    run.clock["writes_s"] += time.perf_counter() - tw0


def _flush(run: Run, t: int) -> None:
    """Queue buffered log rows (steps < t) and snapshots for the partial store."""
    hi = int(np.searchsorted(run.layout.steps, t))
    rows = {k: v.copy() for k, v in run.buffers.items()}
    run.writer.submit(ts.write_rows, run.partial, run.layout, rows, run.flushed, hi)
    run.flushed = hi
    if run.pending_snaps:
        ks = sorted(run.pending_snaps)
        snaps = [run.pending_snaps[k] for k in ks]
        run.writer.submit(ts.write_snapshots, run.partial, run.layout, ks[0], snaps)
        run.pending_snaps.clear()


def _checkpoint(run: Run) -> None:
    """Phase: queue rows, snapshots and then the resume state (copies of params and optimiser)."""
    _flush(run, run.t)
    arrays = {f"param/{k}": v.detach().cpu().numpy().copy() for k, v in run.p.items()}
    arrays.update({f"opt/{k}": v.cpu().numpy().copy() for k, v in run.opt.state_dict().items()})
    arrays["step"] = np.asarray(run.t, dtype=np.int64)
    arrays["fingerprint"] = np.asarray(run.fingerprint)
    if run.prev_gates is not None:
        arrays["prev_gates"] = run.prev_gates.cpu().numpy().copy()
    run.writer.submit(ts.save_state, run.state_dir, arrays)


def _loop(run: Run, progress: bool | None) -> None:
    """Phase 3: steps ``start .. steps`` (log, snapshot, update, checkpoint), then the last rows.

    SIGTERM/SIGINT save a resume state after the current update and exit 128 + signal."""
    interrupted: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, lambda s, _f: interrupted.append(s))
    bar = Progress(run, progress)
    try:
        while True:
            fwd, loss_m = gradients(run)
            _check_divergence(run, loss_m)
            if run.t in run.log_index:
                _log(run, fwd)
            if run.t in run.snap_index:
                _snapshot(run)
            bar.report()
            if run.t == run.steps:
                break
            run.opt.step()
            _log_update(run)
            run.t += 1
            if run.on_step is not None:
                run.on_step(run.t)
            if bar.bar is not None:
                bar.bar.update(1)
            if interrupted:
                _checkpoint(run)
                run.writer.wait()
                raise _Interrupted(interrupted[0])
            if run.t % run.ckpt_every == 0 and run.t < run.steps:
                tw0 = time.perf_counter()
                _checkpoint(run)
                run.clock["writes_s"] += time.perf_counter() - tw0
        tw0 = time.perf_counter()
        _flush(run, run.steps + 1)
        run.writer.wait()
        run.clock["writes_s"] += time.perf_counter() - tw0
    except _Interrupted as exc:
        log.warning("signal %d: saved resume state at step %d, exiting", exc.signum, run.t)
        raise SystemExit(128 + exc.signum) from None
    finally:
        bar.close()
        for sig, h in handlers.items():
            signal.signal(sig, h)
        if sys.exc_info()[0] is None:
            run.writer.close()
        else:  # already failing: let queued writes land (state stays consistent), keep that error
            with contextlib.suppress(Exception):
                run.writer.close()


def _finish(run: Run) -> Path:
    """Phase 4: seed status, validation, atomic publish (the resume state is removed)."""
    tw0 = time.perf_counter()
    status = seed_status(run.seeds, run.buffers["diverged_step"])
    ts.write_attrs(run.partial, {"seed_status": json.dumps(status, sort_keys=True)})
    ts.validate_store(run.partial, run.layout)
    out = ts.publish(run.partial, run.store_path, run.state_dir)
    run.clock["writes_s"] += time.perf_counter() - tw0
    return out
