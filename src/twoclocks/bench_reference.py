"""The bench's reference: training written the way peers do it (one ``nn.Module`` per model,
``torch.optim.AdamW``, models one after another on every train sample, the engine's metric set
computed with plain per-model code at the same log steps, metrics kept in Python lists and saved
to npz at the end). ``python -m twoclocks.bench`` times it against the stacked engine.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from twoclocks.train import engine
from twoclocks.train import metric_catalog as cat
from twoclocks.train import metrics as tm
from twoclocks.train.models import ReluEmbedNet, init_params, model_spec

__all__ = ["check_metric_set", "reference_train"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ref_forward(net: ReluEmbedNet, x: torch.Tensor):
    """The module's forward, keeping the combined embedding, pre-activations and last hidden."""
    ea, eb = net.embed(x[:, 0]), net.embed(x[:, 1])
    z = ea + eb if net.spec.combine == "sum" else torch.cat([ea, eb], dim=1)
    h, pres = z, []
    for layer in net.hidden:
        pres.append(layer(h))
        h = torch.relu(pres[-1])
    return net.head(h), z, torch.cat(pres, dim=1), h


def _ref_metrics(
    net, logits, z, pre, h, y, test_logits, y_test, prev_gates, keep, wd, skip=()
) -> tuple:
    """The engine's metric set for one model, with plain per-model code; values as floats
    (``update_ratio`` is a placeholder here: :func:`_ref_update_ratio` fills it after the step);
    metrics in ``skip`` (not logged on this row, ``Metric.every_rows``) are NaN."""
    row = {}
    for split, lg, yy in (("train", logits, y), ("test", test_logits, y_test)):
        lg = lg.detach().double()
        row[f"{split}_loss"] = F.cross_entropy(lg, yy).item()
        row[f"{split}_acc"] = (lg.argmax(1) == yy).double().mean().item()
        if split == "train":
            true = lg.gather(1, yy[:, None]).squeeze(1)
            other = lg.scatter(1, yy[:, None], -math.inf).amax(1)
            margin = true - other
            row["train_margin_min"], row["train_margin_mean"] = (
                margin.min().item(),
                margin.mean().item(),
            )
    blocks = net.block_params()
    row["sqnorm"] = [w.detach().double().pow(2).sum().item() for w in blocks.values()]
    row["sqnorm_total"] = sum(row["sqnorm"])
    row["grad_norm"] = [w.grad.double().norm().item() for w in blocks.values()]
    row["grad_norm_energy"] = [
        (w.grad.double() + wd * w.detach().double()).norm().item() for w in blocks.values()
    ]
    row["update_ratio"] = [math.nan] * len(blocks)
    w1, u, e = blocks["W1"].detach(), blocks["U"].detach(), blocks["E"].detach()
    mats = {"E": e, "W1": w1, "U": u, "UW": tm.end_to_end([w1[None], u[None]])[0]}
    sv = {k: torch.linalg.svdvals(v.double()) for k, v in mats.items()}
    row["srank"] = [(s.pow(2).sum() / s[0] ** 2).item() for s in sv.values()]
    row["singular_values"] = sv["UW"].tolist()
    n = y.numel()
    delta = torch.softmax(logits.detach().double(), 1) - F.one_hot(y, logits.shape[1]).double()
    row["delta_norm"] = delta.norm().item() / math.sqrt(n)
    row["h_norm"] = h.detach().double().norm().item() / math.sqrt(n)
    row["z_norm"] = z.detach().double().norm().item() / math.sqrt(n)
    row["U_spec"], row["W_spec"], row["E_spec"] = (sv[k][0].item() for k in ("U", "W1", "E"))
    gates = pre.detach() > 0
    flip = math.nan if prev_gates is None else (gates != prev_gates).double().mean().item()
    row["gate_flip_fraction"] = flip
    row["preact_min_abs"] = pre.detach().abs().min().item()
    energy = tm.fourier_energy(e[None, : int(net.spec.vocab_size)])[0]
    kept = energy[1:].topk(keep).values.sum()
    row["fourier_gap"] = ((energy.sum() - kept).clamp_min(0) / (energy.sum() + 1e-12)).item()
    hd = h.detach().double()
    c = logits.shape[1]
    counts = torch.bincount(y, minlength=c).double()
    mu = torch.zeros(c, hd.shape[1], dtype=hd.dtype, device=hd.device).index_add_(0, y, hd)
    mu = mu / counts.clamp_min(1)[:, None]
    present = counts > 0
    k = present.sum().double()
    within = (hd - mu[y]).pow(2).sum() / n
    mbar = mu[present].mean(0)
    between = 2 * k * (mu[present] - mbar).pow(2).sum() / (k * (k - 1))
    row["separation_gap"] = (within / (between + 1e-12)).item()
    for name, mat in (
        ("srank_gated", u.double() @ (gates.double().mean(0)[:, None] * w1.double())),
        ("srank_hidden", hd),
        ("srank_logits", logits.detach().double()),
    ):
        if name in skip:
            row[name] = math.nan
            continue
        s = torch.linalg.svdvals(mat)
        row[name] = (s.pow(2).sum() / s[0] ** 2).item()
    return row, gates


def _ref_update_ratio(net, before: dict) -> list[float]:
    """``||theta_b(t+1) - theta_b(t)|| / ||theta_b(t)||`` per block, after ``opt.step()``."""
    return [
        ((w.detach().double() - before[k]).norm() / before[k].norm()).item()
        for k, w in net.block_params().items()
    ]


def check_metric_set(row: dict, spec) -> None:
    """The reference must log exactly the engine's declared metrics (``metric_catalog``)."""
    want, got = set(cat.names_for(spec)), set(row)
    if want != got:
        raise RuntimeError(
            f"bench reference metrics differ from the engine's: missing {sorted(want - got)}, "
            f"extra {sorted(got - want)}; add them to bench_reference._ref_metrics"
        )


def reference_train(params: dict, dataset, device: torch.device, dtype: torch.dtype) -> dict:
    """Train each member as its own ``ReluEmbedNet`` with ``torch.optim.AdamW``, one after another,
    logging the same metrics at the same steps and saving them (and snapshots) to npz."""
    spec = model_spec(params, dict(dataset.attrs))
    steps = int(params["steps"])
    log_at = set(
        engine.log_steps(
            steps, int(params["log_dense_steps"]), int(params["log_every_steps"])
        ).tolist()
    )
    snap_at = set(engine.snapshot_steps(steps, int(params["snapshot_count"])).tolist())
    keep = min(int(params["fourier_keep"]), int(spec.vocab_size) // 2)
    x = torch.as_tensor(dataset["x_train"].values, device=device)
    y = torch.as_tensor(dataset["y_train"].values, device=device)
    xt = torch.as_tensor(dataset["x_test"].values, device=device)
    yt = torch.as_tensor(dataset["y_test"].values, device=device)
    stacked = init_params(spec, params["seeds"], dtype=dtype, device=device)
    wd = float(params["weight_decay"])
    thinned = [m for m in cat.metrics_for(spec) if m.every_rows > 1]
    metrics_s = 0.0
    outdir = Path(tempfile.mkdtemp(prefix="twoclocks-ref-"))
    _sync(device)
    t0 = time.perf_counter()
    for i, seed in enumerate(params["seeds"]):
        net = ReluEmbedNet.from_member(spec, stacked, i)
        opt = torch.optim.AdamW(
            net.parameters(),
            lr=params["lr"],
            betas=tuple(params["betas"]),
            eps=params["adam_eps"],
            weight_decay=params["weight_decay"],
        )
        history: dict[str, list] = {}
        prev_gates = None
        for t in range(steps + 1):
            opt.zero_grad(set_to_none=True)
            logits, z, pre, h = _ref_forward(net, x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            if t in log_at:
                tm0 = time.perf_counter()
                with torch.no_grad():
                    test_logits = net(xt)
                skip = {m.name for m in thinned if not m.logged_at(len(history.get("step", [])))}
                row, prev_gates = _ref_metrics(
                    net, logits, z, pre, h, y, test_logits, yt, prev_gates, keep, wd, skip
                )
                if not history:
                    check_metric_set(row, spec)
                row["step"] = t
                for k, v in row.items():
                    history.setdefault(k, []).append(v)
                if t in snap_at:
                    np.savez(
                        outdir / f"snap_{seed}_{t}.npz",
                        **{k: v.detach().cpu().numpy() for k, v in net.block_params().items()},
                    )
                metrics_s += time.perf_counter() - tm0
            if t == steps:
                break
            before = None
            if t in log_at:
                before = {k: w.detach().double().clone() for k, w in net.block_params().items()}
            opt.step()
            if before is not None:
                tm0 = time.perf_counter()
                history["update_ratio"][-1] = _ref_update_ratio(net, before)
                metrics_s += time.perf_counter() - tm0
        tm0 = time.perf_counter()
        np.savez(outdir / f"metrics_{seed}.npz", **{k: np.asarray(v) for k, v in history.items()})
        metrics_s += time.perf_counter() - tm0
    _sync(device)
    wall = time.perf_counter() - t0
    shutil.rmtree(outdir, ignore_errors=True)
    return {"wall_s": wall, "metrics_write_s": metrics_s}
