"""The training loop of one cell: all seeds stacked as members of one tensor program.

``train_cell`` trains a resolved cell (docs/design.md) full batch and writes its trajectory
store. Per step: forward + backward of ``sum_i mean-CE_i`` (each member's gradient is exactly its
own, no shared reduction, clipping or scaler), divergence check, logging/snapshots when scheduled,
one optimiser update. Metrics at step t use the parameters after t updates (step 0 = init), from
the same forward/backward that drives the next update, so train metrics cost no extra pass.
Inputs the model cannot tell apart (``models.distinct_samples``) are trained and evaluated once,
weighted by multiplicity; every loss and sample mean equals the one over all samples. Store and
resume-state writes run on one background thread, in order (``_Writer``).

Faults: resume state is saved every ``checkpoint_every_steps`` (and on SIGTERM/SIGINT, which then
exit with 128 + signal); a re-run resumes from it and produces a bitwise identical store on CPU.
A member whose loss turns non-finite is frozen, its ``diverged_step`` recorded, its later
metrics NaN; the others are unaffected.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple, TextIO

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from twoclocks.train import metric_catalog as cat
from twoclocks.train import store as ts
from twoclocks.train.models import (
    ModelSpec,
    distinct_samples,
    forward,
    init_params,
    model_spec,
)
from twoclocks.train.optim import make_optimizer

__all__ = [
    "log_steps",
    "member_losses",
    "progress_stream",
    "resolve_device",
    "snapshot_steps",
    "train_cell",
]

log = logging.getLogger("twoclocks.train")

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Writer:
    """Runs store writes on one background thread, in submission order, while training goes on.

    Everything submitted must own its data (copies, never views of live tensors or buffers).
    Order makes resume safe: a state file is only written after the rows and snapshots submitted
    before it. ``wait`` blocks until all submitted writes are done and re-raises the first error.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="twoclocks-writer")
        self._pending: list = []

    def submit(self, fn, *args) -> None:
        self._raise_failed()
        self._pending.append(self._pool.submit(fn, *args))

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for fut in done:
            fut.result()

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


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


def log_steps(steps: int, dense_steps: int, every_steps: int) -> np.ndarray:
    """Log points: every step in ``[0, dense_steps]``, then multiples of ``every_steps``, and
    always the last step."""
    dense = np.arange(0, min(dense_steps, steps) + 1)
    sparse = np.arange(0, steps + 1, max(1, every_steps))
    return np.unique(np.concatenate([dense, sparse, [steps]])).astype(np.int64)


def snapshot_steps(steps: int, count: int) -> np.ndarray:
    """``count`` distinct log-spaced steps in ``[0, steps]``, always with 0 and ``steps`` (fewer
    if ``steps + 1 < count``)."""
    count = max(2, int(count))
    if steps + 1 <= count:
        return np.arange(steps + 1, dtype=np.int64)
    if count == 2:
        return np.array([0, steps], dtype=np.int64)
    n = count - 1
    while True:
        pts = np.unique(np.round(np.geomspace(1, steps, n)).astype(np.int64))
        if len(pts) >= count - 1:
            break
        n += 1
    pick = np.unique(np.round(np.linspace(0, len(pts) - 1, count - 1)).astype(np.int64))
    return np.concatenate([[0], pts[pick]]).astype(np.int64)


def progress_stream(progress: bool | None = None) -> TextIO | None:
    """Where the progress bar is drawn: the process's own stderr (``sys.__stderr__``), or None.

    Pipeline scripts point ``sys.stderr`` at the rule's log file (`twoclocks.logs.to_file`), so
    TTY-ness is judged on ``sys.__stderr__``: an interactive ``snakemake`` run shows the bar on
    the terminal while log lines still go to the log; a batch job (stderr a file) draws none.
    ``progress=None`` draws only on a TTY; True forces the bar, False suppresses it.
    """
    stream = sys.__stderr__
    if stream is None or progress is False:
        return None
    if progress is None:
        try:
            progress = stream.isatty()
        except (AttributeError, ValueError, OSError):  # closed or not a real file
            progress = False
    return stream if progress else None


def _fingerprint(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


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


def train_cell(
    params: dict,
    dataset: xr.Dataset,
    store_path: Path,
    *,
    state_dir: Path | None = None,
    progress: bool | None = None,
    timings: dict | None = None,
) -> Path:
    """Train one cell (all its seeds stacked) and publish its trajectory store at ``store_path``.

    Resumes from ``state_dir`` (default ``<store_path>.state``) if a state for the same params
    exists. ``progress``: see `progress_stream`. ``timings``: if a dict, filled with the seconds the
    training thread spent in metrics (test forward and log rows) and in store writes (copies,
    submits, waits and the final synchronous steps; the writes themselves run in the
    background), and the wall time. Returns ``store_path``.
    """
    store_path = Path(store_path)
    state_dir = ts.state_path(store_path) if state_dir is None else Path(state_dir)
    partial = ts.partial_path(store_path)
    device = resolve_device(str(params.get("device", "auto")))
    dtype_name = str(params.get("dtype", "float32"))
    dtype = DTYPES[dtype_name]
    flush = device.type == "cpu" and bool(params.get("flush_denormal", True))
    if flush:
        torch.set_flush_denormal(True)
    try:
        clock = {"metrics_s": 0.0, "writes_s": 0.0}
        t0 = time.perf_counter()
        out = _train(
            params, dataset, store_path, partial, state_dir, device, dtype, progress, clock
        )
        if timings is not None:
            timings.update(clock, wall_s=time.perf_counter() - t0)
        return out
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _train(params, dataset, store_path, partial, state_dir, device, dtype, progress, clock) -> Path:
    seeds = [int(s) for s in params["seeds"]]
    m = len(seeds)
    steps = int(params["steps"])
    attrs = dict(dataset.attrs)
    input_dim = int(dataset.sizes["feature"]) if attrs.get("task") == "teacher" else None
    spec = model_spec(params, attrs, input_dim=input_dim)

    x_train = _to_tensor(dataset["x_train"].values, device)
    x_test = _to_tensor(dataset["x_test"].values, device)
    y_train = _to_tensor(dataset["y_train"].values, device, torch.long)
    y_test = _to_tensor(dataset["y_test"].values, device, torch.long)
    x_train, x_test = spec.encode_inputs(x_train, dtype), spec.encode_inputs(x_test, dtype)
    # Train and evaluate on distinct inputs only, weighted by multiplicity (same losses/metrics).
    train, test = Samples.of(spec, x_train, y_train), Samples.of(spec, x_test, y_test)

    log_at = log_steps(steps, int(params["log_dense_steps"]), int(params["log_every_steps"]))
    snap_at = snapshot_steps(steps, int(params["snapshot_count"]))
    ckpt_every = max(1, int(params["checkpoint_every_steps"]))
    lr = np.broadcast_to(np.asarray(params["lr"], dtype=np.float64), (m,))
    tau = lr[:, None] * log_at[None, :].astype(np.float64)
    try:
        from twoclocks import provenance

        prov = provenance.to_json(provenance.collect(device.type, str(dtype).split(".")[-1]))
    except Exception as exc:  # provenance must never block training
        prov = json.dumps({"error": f"provenance unavailable: {exc!r}"})

    blocks = spec.blocks()
    matrices = spec.matrices()
    metrics = cat.metrics_for(spec)
    table = {m.name: (m.dim, m.long_name, m.units) for m in metrics}
    wants_delta = any(m.needs_delta for m in metrics)
    p0 = init_params(spec, seeds, params.get("init_scale", 1.0), dtype=dtype, device=device)
    sv_count = spec.sv_count
    dtype_name = str(dtype).split(".")[-1]
    layout = ts.StoreLayout(
        seeds=seeds,
        steps=log_at,
        tau=tau,
        blocks=blocks,
        matrices=matrices,
        sv_count=sv_count,
        checkpoint_steps=snap_at,
        metrics=table,
        snapshots={b: tuple(p0[b].shape[1:]) for b in blocks},
        snapshot_dtype=dtype_name,
        attrs={
            "cell": json.dumps(params, sort_keys=True, default=str),
            "provenance": prov,
            "dtype": dtype_name,
            "device": device.type,
            "title": f"twoclocks trajectory of cell {params.get('cell_id', '?')}",
        },
    )

    p = {k: v.requires_grad_(True) for k, v in p0.items()}
    opt = make_optimizer(params, p)
    fingerprint = _fingerprint(params)
    state = ts.load_state(state_dir)
    writer = _Writer()
    if state is not None and (str(state["fingerprint"]) != fingerprint or not partial.exists()):
        log.warning("ignoring resume state in %s (different params or no partial store)", state_dir)
        state = None
    prev_gates = None
    if state is None:
        writer.submit(ts.create_store, partial, layout)
        buffers = {n: np.full(layout.metric_shape(n), np.nan) for n in table}
        buffers["diverged_step"] = np.full(m, -1, dtype=np.int64)
        start = 0
    else:
        with torch.no_grad():
            for k, v in p.items():
                v.copy_(_to_tensor(state[f"param/{k}"], device))
        opt.load_state_dict(
            {k[4:]: _to_tensor(v, device) for k, v in state.items() if k.startswith("opt/")}
        )
        if "prev_gates" in state:
            prev_gates = _to_tensor(state["prev_gates"], device, torch.bool)
        buffers = ts.read_buffers(partial, layout)
        start = int(state["step"])
        log.info("resuming cell at step %d of %d from %s", start, steps, state_dir)

    diverged = _to_tensor(buffers["diverged_step"], device) >= 0
    log_index = {int(s): i for i, s in enumerate(log_at)}
    snap_index = {int(s): i for i, s in enumerate(snap_at)}
    flushed = int(np.searchsorted(log_at, start))
    fourier_keep = int(params.get("fourier_keep", 8))

    pending_snaps: dict[int, dict[str, np.ndarray]] = {}

    def flush(t: int) -> None:
        """Queue buffered log rows (steps < t) and snapshots for the partial store."""
        nonlocal flushed
        hi = int(np.searchsorted(log_at, t))
        rows = {k: v.copy() for k, v in buffers.items()}
        writer.submit(ts.write_rows, partial, layout, rows, flushed, hi)
        flushed = hi
        if pending_snaps:
            ks = sorted(pending_snaps)
            writer.submit(
                ts.write_snapshots, partial, layout, ks[0], [pending_snaps[k] for k in ks]
            )
            pending_snaps.clear()

    def save(t: int) -> None:
        """Queue rows, snapshots and then the resume state (copies of params and optimiser)."""
        flush(t)
        arrays = {f"param/{k}": v.detach().cpu().numpy().copy() for k, v in p.items()}
        arrays.update({f"opt/{k}": v.cpu().numpy().copy() for k, v in opt.state_dict().items()})
        arrays["step"] = np.asarray(t, dtype=np.int64)
        arrays["fingerprint"] = np.asarray(fingerprint)
        if prev_gates is not None:
            arrays["prev_gates"] = prev_gates.cpu().numpy().copy()
        writer.submit(ts.save_state, state_dir, arrays)

    interrupted: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, lambda s, _f: interrupted.append(s))
    bar = None
    bar_stream = progress_stream(progress)
    if bar_stream is not None:
        from tqdm import tqdm

        bar = tqdm(
            total=steps, initial=start, desc=str(params.get("cell_id", "train")), file=bar_stream
        )
    report_every = max(1, steps // 20)
    t0, tstart = time.perf_counter(), start
    last_test = float("nan")
    try:
        t = start
        while True:
            for v in p.values():
                v.grad = None
            fwd = forward(spec, p, train.x)
            loss_m = member_losses(fwd.logits, train.y, train.weight)
            loss_m.sum().backward()
            bad = ~torch.isfinite(loss_m.detach()) & ~diverged
            if bool(bad.any()):
                opt.freeze(bad)
                diverged |= bad
                buffers["diverged_step"][bad.cpu().numpy()] = t
                log.warning("members %s diverged at step %d", np.flatnonzero(bad.cpu()), t)
            if t in log_index:
                tm0 = time.perf_counter()
                with torch.no_grad():
                    test_logits = forward(spec, p, test.x).logits
                ctx = cat.LogContext(
                    spec, p, fwd, train, test, test_logits, prev_gates, fourier_keep, wants_delta
                )
                row = _log_row(metrics, ctx)
                prev_gates = ctx.gates
                i = log_index[t]
                any_diverged = bool(diverged.any())
                for name, val in row.items():
                    if any_diverged:
                        mask = (~diverged).view(-1, *([1] * (val.ndim - 1)))
                        val = torch.where(mask, val, torch.full_like(val, math.nan))
                    buffers[name][:, i] = val.cpu().numpy()
                finite = buffers["test_loss"][:, i][~np.isnan(buffers["test_loss"][:, i])]
                last_test = float(finite.mean()) if finite.size else math.nan
                clock["metrics_s"] += time.perf_counter() - tm0
            if t in snap_index:
                tw0 = time.perf_counter()
                pending_snaps[snap_index[t]] = {
                    b: v.detach().cpu().numpy().copy() for b, v in p.items()
                }
                clock["writes_s"] += time.perf_counter() - tw0
            if t % report_every == 0 or t == steps:
                rate = (t - tstart) / max(time.perf_counter() - t0, 1e-9)
                eta = (steps - t) / rate if rate > 0 else float("nan")
                lm = loss_m.detach().double().cpu().numpy()
                log.info(
                    "step %d/%d train_loss %s test_loss %.4g %.1f steps/s ETA %.0fs",
                    t,
                    steps,
                    np.array2string(lm, precision=3),
                    last_test,
                    rate,
                    eta,
                )
            if t == steps:
                break
            opt.step()
            t += 1
            if bar is not None:
                bar.update(1)
            if interrupted:
                save(t)
                writer.wait()
                raise _Interrupted(interrupted[0])
            if t % ckpt_every == 0 and t < steps:
                tw0 = time.perf_counter()
                save(t)
                clock["writes_s"] += time.perf_counter() - tw0
        tw0 = time.perf_counter()
        flush(steps + 1)
        writer.wait()
    except _Interrupted as exc:
        log.warning("signal %d: saved resume state at step %d, exiting", exc.signum, t)
        raise SystemExit(128 + exc.signum) from None
    finally:
        if bar is not None:
            bar.close()
        for sig, h in handlers.items():
            signal.signal(sig, h)
        if sys.exc_info()[0] is None:
            writer.close()
        else:  # already failing: let queued writes land (state stays consistent), keep that error
            with contextlib.suppress(Exception):
                writer.close()

    div = buffers["diverged_step"]
    status = {
        str(s): ("ok" if d < 0 else f"diverged@{int(d)}") for s, d in zip(seeds, div, strict=True)
    }
    ts.write_attrs(partial, {"seed_status": json.dumps(status, sort_keys=True)})
    ts.validate_store(partial, layout)
    out = ts.publish(partial, store_path, state_dir)
    clock["writes_s"] += time.perf_counter() - tw0
    return out
