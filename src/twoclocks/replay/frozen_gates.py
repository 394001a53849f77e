"""The frozen-gate reduction experiment, a replay stage (issue 14 item 1; docs/science.md 3,
Prop. 4.1).

The paper's bridge from deep-linear theory to ReLU grokking: "in regions where the activation
patterns on the training set remain fixed, the network reduces to a linear model in the active
coordinates". This module tests it directly. For each member and anchor t0 in
{T_cls(eps*), midpoint of [T_cls, T_gen]} the exact training state at t0 (parameters and AdamW
moments) is continued two ways, up to T_gen + `margin` (T_gen - T_cls) (at most the cell's steps):

(a) the real network (the engine's own `gradients` + optimiser update);
(b) the network whose every training sample's gate mask is frozen at its t0 pattern
    (``h = pre * mask`` instead of ``relu(pre)``: the linear model in the active coordinates).
    Test samples have no frozen mask, so test metrics evaluate (b)'s parameters in the real
    network; ``train_loss_real`` does the same on the training set.

The state at t0 is rebuilt by replaying training from step 0 with the cell's params (bitwise
deterministic on the CPU). Three stacks run in lockstep: the real one and one frozen stack per
anchor, in which member i uses its live gates (``mask = pre > 0``, bitwise the real network)
until its own t0 and the frozen mask after it, so every member forks at its own step with the
exact parameters and optimiser moments. A frozen stack starts as a copy of the real one at its
first member's t0 (before it, it would only repeat the real replay). Controls (checked, else
RuntimeError naming step and block): the real replay equals the store's weight snapshots
bitwise at every snapshot step it passes; each frozen member equals the real one bitwise at its
t0.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
import xarray as xr

from twoclocks.train import engine
from twoclocks.train import metrics as tm
from twoclocks.train.models import forward
from twoclocks.train.optim import make_optimizer

__all__ = ["ANCHORS", "anchor_steps", "clock_times", "reduce_cell", "run_stage"]

ANCHORS = ("cls", "mid")


def clock_times(
    clocks: pd.DataFrame, seeds, eps_star: float, gen_level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per seed (in ``seeds`` order) T_cls(eps_star) and T_gen (``gen_acc`` at ``gen_level``) in
    steps from a cell's clocks table; NaN where censored or missing."""

    def pick(clock: str, level: float) -> np.ndarray:
        rows = clocks[(clocks["clock"] == clock) & np.isclose(clocks["level"], level, rtol=1e-9)]
        if "pre_fit" in rows:
            rows = rows[~rows["pre_fit"].astype(bool)]
        ok = rows[~rows["censored"].astype(bool)]
        by_seed = dict(zip(ok["seed"].astype(int), ok["step"].astype(float), strict=True))
        return np.array([by_seed.get(int(s), np.nan) for s in seeds], dtype=np.float64)

    return pick("cls", eps_star), pick("gen_acc", gen_level)


def anchor_steps(
    t_cls: np.ndarray, t_gen: np.ndarray, steps: int, margin: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """``(t0 (2, M) int, horizon (M,) int)``: anchors ceil(T_cls) and round((T_cls + T_gen)/2)
    (-1 where T_cls or T_gen is censored or T_gen <= T_cls), horizon ceil(T_gen + margin *
    (T_gen - T_cls)) capped at ``steps`` (-1 where no anchor)."""
    t_cls, t_gen = np.asarray(t_cls, float), np.asarray(t_gen, float)
    ok = np.isfinite(t_cls) & np.isfinite(t_gen) & (t_gen > t_cls)
    c, g = np.where(ok, t_cls, 0.0), np.where(ok, t_gen, 0.0)
    t0 = np.stack([np.ceil(c), np.round((c + g) / 2)]).astype(np.int64)
    horizon = np.minimum(np.ceil(g + margin * (g - c)), steps).astype(np.int64)
    t0 = np.where(ok[None, :] & (t0 <= steps), t0, -1)
    return t0, np.where(ok, horizon, -1)


def _frozen_gradients(run: engine.Run, gate):
    """`engine.gradients` with the frozen-gate forward on the training set."""
    for v in run.p.values():
        v.grad = None
    fwd = run.spec.forward(run.p, run.train.x, gate=gate)
    loss_m = engine.member_losses(fwd.logits, run.train.y, run.train.weight)
    loss_m.sum().backward()
    return fwd, loss_m


def _ce_acc(logits: torch.Tensor, s: engine.Samples) -> tuple[np.ndarray, np.ndarray]:
    """Per member float64 mean CE and accuracy, exactly as the engine logs them."""
    out = tm.logit_metrics(logits.detach(), s.y, s.weight)
    return out["loss"].cpu().numpy(), out["acc"].cpu().numpy()


def _flat(run: engine.Run) -> torch.Tensor:
    return torch.cat([v.detach().double().flatten(1) for v in run.p.values()], dim=1)


def reduce_cell(
    params: dict,
    dataset: xr.Dataset,
    store: xr.Dataset,
    t_cls: np.ndarray,
    t_gen: np.ndarray,
    *,
    margin: float = 0.25,
) -> xr.Dataset:
    """Run the frozen-gate reduction of one cell (see module docstring) and return both
    trajectories at the store's log steps up to the last member's horizon (and at it, at every
    anchor t0 and at every ceil(T_gen)).

    ``store``: the cell's trajectory (its ``step`` coord and ``snap_*`` weight snapshots are
    the control); ``t_cls``, ``t_gen`` (M,) per seed in steps (NaN: censored, see
    `clock_times`). Variables: ``real_{train,test}_{loss,acc}`` (seed, step); per anchor
    (``cls``, ``mid``) ``frozen_train_loss``/``frozen_train_acc`` (the linear model on the
    training set), ``frozen_train_loss_real``, ``frozen_test_loss``/``frozen_test_acc`` (its
    parameters in the real network) and ``divergence`` =
    ||theta_b - theta_a|| / ||theta_a - theta(t0)|| (all blocks, float64), NaN at and before t0;
    ``gate_drift``: the real network's training-set gate drift since the anchor's t0 (fraction
    of (sample, unit) gates off their t0 pattern, 0 at t0, NaN before); the steps are the
    store's log steps plus every t0, ceil(T_gen) and the horizon;
    ``t0`` (anchor, seed), ``horizon`` (seed), ``t_cls``, ``t_gen``.
    """
    # the replay runs on the CPU, where training is bitwise reproducible (the snapshot control)
    device = engine.resolve_device("cpu")
    seeds = [int(s) for s in params["seeds"]]
    if len(t_cls) != len(seeds) or len(t_gen) != len(seeds):
        raise ValueError(f"t_cls/t_gen need one value per seed ({len(seeds)})")
    t0, horizon = anchor_steps(t_cls, t_gen, int(params["steps"]), margin)
    last = int(horizon.max())
    if last < 0:
        raise ValueError(
            "no member has both T_cls(eps*) and T_gen uncensored with T_gen > T_cls: nothing "
            "to reduce (train longer or check the clocks table)"
        )
    flush = device.type == "cpu" and bool(params.get("flush_denormal", True))
    if flush:  # as in train_cell: the replay must run the same arithmetic
        torch.set_flush_denormal(True)
    try:
        return _run(params, dataset, store, t0, horizon, last, device, t_cls, t_gen, seeds)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _run(params, dataset, store, t0, horizon, last, device, t_cls, t_gen, seeds) -> xr.Dataset:
    real = engine.set_up(params, dataset, device)
    # a frozen stack equals the real one until its first member forks: it is forked from the
    # real replay then (parameters and optimiser state), not run beside it from step 0
    frozen: list[engine.Run | None] = [None for _ in ANCHORS]
    m = len(seeds)
    log_at = sorted(
        {int(s) for s in store["step"].values if int(s) <= last}
        | _extra_steps(t0, horizon, t_gen, last)
    )
    log_row = {s: i for i, s in enumerate(log_at)}
    snaps = {}
    if "checkpoint_step" in store.coords:
        snaps = {int(s): k for k, s in enumerate(store["checkpoint_step"].values) if s <= last}
    shape_r, shape_f = (m, len(log_at)), (len(ANCHORS), m, len(log_at))
    out = {f"real_{n}": np.full(shape_r, np.nan) for n in _NAMES_REAL}
    out.update({f"frozen_{n}": np.full(shape_f, np.nan) for n in _NAMES_FROZEN})
    out["divergence"] = np.full(shape_f, np.nan)
    out["gate_drift"] = np.full(shape_f, np.nan)
    masks: list[list[torch.Tensor | None]] = [[] for _ in ANCHORS]
    is_frozen = [torch.zeros(m, dtype=torch.bool, device=device) for _ in ANCHORS]
    theta0 = [torch.zeros(m, 0, dtype=torch.float64, device=device) for _ in ANCHORS]

    def gate_of(k):
        def gate(layer: int, pre: torch.Tensor) -> torch.Tensor:
            live = (pre > 0).to(pre.dtype)
            if not bool(is_frozen[k].any()):
                return live
            return torch.where(is_frozen[k][:, None, None], masks[k][layer - 1], live)

        return gate

    gates = [gate_of(k) for k in range(len(ANCHORS))]
    for t in range(last + 1):
        for k in range(len(ANCHORS)):
            new = torch.as_tensor(t0[k] == t, device=device)
            if bool(new.any()):
                if frozen[k] is None:
                    frozen[k] = _fork(real)
                _freeze(k, new, t, real, frozen[k], masks, theta0)
                is_frozen[k] = is_frozen[k] | new
        fwd_r, _ = engine.gradients(real)
        fwd_f = [
            None if run is None else _frozen_gradients(run, gates[k])[0]
            for k, run in enumerate(frozen)
        ]
        if t in snaps:
            _check_store(real, store, snaps[t], t)
        if t in log_row:
            _record(out, log_row[t], t, real, fwd_r, frozen, fwd_f, t0, theta0)
            _record_drift(out, log_row[t], t, fwd_r, masks, t0)
        if t == last:
            break
        real.opt.step()
        for run in frozen:
            if run is not None:
                run.opt.step()
    coords = {
        "anchor": np.array(ANCHORS, dtype=object),
        "seed": seeds,
        "step": np.asarray(log_at, np.int64),
    }
    data = {n: (("seed", "step"), v) for n, v in out.items() if n.startswith("real_")}
    data.update({n: (("anchor", "seed", "step"), v) for n, v in out.items() if n[:5] != "real_"})
    data["t0"] = (("anchor", "seed"), t0)
    data["horizon"] = (("seed",), horizon)
    data["t_cls"] = (("seed",), np.asarray(t_cls, np.float64))
    data["t_gen"] = (("seed",), np.asarray(t_gen, np.float64))
    attrs = {"cell_id": str(params.get("cell_id", "?")), "model": real.spec.kind}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _freeze(k: int, new: torch.Tensor, t: int, real, run, masks, theta0) -> None:
    """Members ``new`` of frozen stack ``k`` fork at step t: checked equal to the real replay,
    their gate masks become the live pattern now, and theta(t0) is recorded (in place)."""
    _check_equal(run, real, new, f"frozen stack {ANCHORS[k]} at its t0 = {t}")
    with torch.no_grad():
        pre = run.spec.forward(run.p, run.train.x).pre
    pats = [(a > 0).to(a.dtype) for a in pre]
    if not masks[k]:
        masks[k] = pats
    else:
        masks[k] = [
            torch.where(new[:, None, None], p, q) for p, q in zip(pats, masks[k], strict=True)
        ]
    flat = _flat(real)
    theta0[k] = flat if theta0[k].shape[1] == 0 else torch.where(new[:, None], flat, theta0[k])


def _extra_steps(t0: np.ndarray, horizon: np.ndarray, t_gen: np.ndarray, last: int) -> set:
    """Steps logged besides the store's: the horizon, every anchor t0 (the fork, where the
    frozen run equals the real one) and ceil(T_gen) of every member with anchors (where
    `relu_reduction` reads its measures)."""
    has = horizon >= 0
    gen = np.ceil(np.asarray(t_gen, float)[has]).astype(np.int64)
    return {last, *(int(s) for s in t0[t0 >= 0]), *(int(s) for s in gen if s <= last)}


@torch.no_grad()
def _record_drift(out, i, t, fwd_r, masks, t0) -> None:
    """The real network's cumulative training-set gate drift since each anchor's t0: fraction of
    (train sample, unit) gates whose live state differs from the frozen mask (0 at t0; the
    quantity of `replay.gates`, at every log step instead of the weight snapshots)."""
    live = torch.cat([(p > 0) for p in fwd_r.pre], dim=2)
    for k, mask in enumerate(masks):
        if not mask:
            continue
        frozen = torch.cat([m > 0 for m in mask], dim=2)
        drift = (live != frozen).double().mean(dim=(1, 2)).cpu().numpy()
        after = (t0[k] >= 0) & (t >= t0[k])
        out["gate_drift"][k, :, i] = np.where(after, drift, np.nan)


_NAMES_REAL = ("train_loss", "train_acc", "test_loss", "test_acc")
_NAMES_FROZEN = (*_NAMES_REAL, "train_loss_real")


def _fork(real: engine.Run) -> engine.Run:
    """A copy of ``real`` (same samples and spec) with its own parameters and optimiser."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in real.p.items()}
    opt = make_optimizer(real.params, p)
    opt.load_state_dict({k: v.clone() for k, v in real.opt.state_dict().items()})
    return dataclasses.replace(real, p=p, opt=opt)


@torch.no_grad()
def _record(out, i, t, real, fwd_r, frozen, fwd_f, t0, theta0) -> None:
    """One log row: CE/accuracy of every stack and the relative divergence."""
    test_r = real.spec.logits(real.p, real.test.x)
    for split, lg in (("train", fwd_r.logits), ("test", test_r)):
        ce, acc = _ce_acc(lg, real.train if split == "train" else real.test)
        out[f"real_{split}_loss"][:, i], out[f"real_{split}_acc"][:, i] = ce, acc
    flat_r = _flat(real)
    for k, (run, fwd) in enumerate(zip(frozen, fwd_f, strict=True)):
        if run is None:  # not forked yet: every member is before its t0 (NaN rows)
            continue
        after = t0[k] >= 0
        after &= t >= t0[k]
        ce, acc = _ce_acc(fwd.logits, run.train)
        real_train = forward(run.spec, run.p, run.train.x).logits
        real_test = run.spec.logits(run.p, run.test.x)
        ce_rt, _ = _ce_acc(real_train, run.train)
        ce_t, acc_t = _ce_acc(real_test, run.test)
        vals = {
            "train_loss": ce,
            "train_acc": acc,
            "train_loss_real": ce_rt,
            "test_loss": ce_t,
            "test_acc": acc_t,
        }
        for n, v in vals.items():
            out[f"frozen_{n}"][k, :, i] = np.where(after, v, np.nan)
        if theta0[k].shape[1]:
            num = (_flat(run) - flat_r).norm(dim=1)
            den = (flat_r - theta0[k]).norm(dim=1)
            div = (num / den).cpu().numpy()
            out["divergence"][k, :, i] = np.where(after & (t > t0[k]), div, np.nan)


def _check_equal(run, real, members: torch.Tensor, what: str) -> None:
    for b, v in run.p.items():
        a, r = v.detach()[members], real.p[b].detach()[members]
        if not torch.equal(a, r):
            raise RuntimeError(f"{what}: block {b} differs from the real replay (not bitwise)")
    for k, v in run.opt.state.items():
        if not torch.equal(v[members], real.opt.state[k][members]):
            raise RuntimeError(f"{what}: optimiser state {k} differs from the real replay")


def _check_store(real, store: xr.Dataset, k: int, t: int) -> None:
    """Control: the replayed parameters equal the store's weight snapshot at step t bitwise."""
    for b, v in real.p.items():
        name = f"snap_{b}"
        if name not in store:
            continue
        want = np.asarray(store[name].isel(checkpoint=k).values)
        got = v.detach().cpu().numpy()
        if not np.array_equal(got, want):
            bad = float(np.nanmax(np.abs(got.astype(np.float64) - want)))
            raise RuntimeError(
                f"replay differs from the stored run at step {t}, block {b} (max |diff| "
                f"{bad:.3g}): the replay is not bitwise the original (different device, torch "
                "build or params?); the reduction needs the exact state"
            )


def run_stage(
    store_path,
    clocks_path,
    out_path,
    *,
    eps_star: float,
    gen_acc_level: float,
    margin: float = 0.25,
    dataset_path=None,
) -> xr.Dataset:
    """The DAG stage ``reduce`` of one ReLU cell: read its trajectory store and clocks table,
    run `reduce_cell` on the CPU (the replay must be bitwise the stored run) and write the
    result to ``out_path`` (zarr). T_cls at ``eps_star`` (analysis), T_gen the ``gen_acc``
    clock at ``gen_acc_level`` (claims), the horizon ``margin`` (analysis.reduction_margin):
    the rule's params. ``dataset_path``: the cell's dataset store (else regenerated from the
    params). A cell where no member has both clocks gets a store with its clock times, ``t0`` =
    -1 and the reason in ``attrs["note"]`` (no trajectories), so a cell that did not grok does
    not stop the pipeline."""
    import json

    from twoclocks.data.io import build_dataset, data_params, load_dataset
    from twoclocks.train import store as ts

    store = ts.open_trajectory(store_path).load()
    params = json.loads(store.attrs["cell"])
    if params.get("model") != "relu_embed":
        raise ValueError(f"the reduction needs a relu_embed cell, not {params.get('model')!r}")
    seeds = [int(s) for s in store["seed"].values]
    t_cls, t_gen = clock_times(pd.read_parquet(clocks_path), seeds, eps_star, gen_acc_level)
    params = dict(params, device="cpu")
    data = load_dataset(dataset_path) if dataset_path else build_dataset(data_params(params))
    try:
        out = reduce_cell(params, data, store, t_cls, t_gen, margin=float(margin))
    except ValueError as err:
        if "nothing to reduce" not in str(err):
            raise
        out = _nothing_to_reduce(params, seeds, t_cls, t_gen, str(err))
    out.attrs.update(eps_star=float(eps_star), gen_acc_level=float(gen_acc_level))
    out.to_zarr(out_path, mode="w")
    return out


def _nothing_to_reduce(params: dict, seeds, t_cls, t_gen, note: str) -> xr.Dataset:
    """The reduce stage's output for a cell where no member has both clocks: the clock times,
    ``t0`` = -1 and the reason."""
    t0, horizon = anchor_steps(t_cls, t_gen, int(params["steps"]))
    return xr.Dataset(
        {
            "t0": (("anchor", "seed"), t0),
            "horizon": (("seed",), horizon),
            "t_cls": (("seed",), t_cls),
            "t_gen": (("seed",), t_gen),
        },
        coords={"anchor": np.array(ANCHORS, dtype=object), "seed": seeds},
        attrs={"cell_id": str(params.get("cell_id", "?")), "note": note},
    )
