"""Clock extraction: stopping times of one cell's trajectory (docs/science.md 1, 7; App. F.4).

Which clocks exist, what they read and which levels they cross is declared once, in
`analyze.clock_specs`; this module turns the declarations into the clocks table.

A clock T(level) is the first logged step after which a quantity stays at or below `level` for
`stability_window_logs` consecutive logs (the crossing log included), so a curve that touches the
level once and bounces back is not counted. A gap logged on every k-th row only (the gated map's
stable rank, NaN between) runs on its logged rows: its window counts logged rows of the gap
(k x the store's rows). The crossing is located between the crossing log and
the previous log by linear interpolation in log(quantity) (linear in the quantity for accuracies
and flip fractions), and `tau` (accumulated lr) is interpolated with the same fraction.

Representation clocks run on gaps that go to a true zero: each structural gap G(t) is measured
against its asymptote G_inf, estimated per member from a fit of its tail after T_cls(eps*)
(`tails.fit_tail`), and normalised at T_cls(eps*):
`g(t) = (G(t) - G_inf) / (G(T_cls) - G_inf)`. Only crossings after T_cls count; an earlier
crossing of the same level is kept as a row flagged `pre_fit` and never used by a law fit.
Definitions: docs/design.md "Clocks: definitions". Crossings are vectorised over
(seed, level, step); only the per-member tail fits loop over members.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from twoclocks.analyze.clock_specs import (
    CLOCK_COLUMNS,
    CLOCK_SPECS,
    CLOCKS,
    FLAG_COLUMNS,
    IDENTITY_COLUMNS,
    KL_FIELDS,
    LAW_CLOCKS,
    REP_CLOCKS,
    RESOLVE_SE,
    TAIL_FIELDS,
    TEXT_COLUMNS,
    ClockSpec,
)
from twoclocks.analyze.kl import fit_kl
from twoclocks.analyze.quantities import (
    cell_params,
    is_deep_linear,
    model_kind,
    regularised_energy,
    regularised_grad_norm,
)
from twoclocks.analyze.settings import DEFAULT_SETTINGS, resolve_settings
from twoclocks.analyze.tails import fit_tail

# names other modules import from here (declared in clock_specs, quantities and settings)
__all__ = [
    "CLOCKS",
    "CLOCK_COLUMNS",
    "DEFAULT_SETTINGS",
    "IDENTITY_COLUMNS",
    "LAW_CLOCKS",
    "REP_CLOCKS",
    "RESOLVE_SE",
    "TAIL_FIELDS",
    "ce_floor",
    "extract_clocks",
    "is_deep_linear",
    "model_kind",
    "regularised_energy",
    "regularised_grad_norm",
    "relapsed",
    "resolve_settings",
    "stable_crossing",
    "structural_gaps",
]


def ce_floor(dtype: str) -> float:
    """Smallest CE the training dtype resolves: finfo(dtype).eps (float32 ~1.2e-7).

    CE = -log p_y ~ 1 - p_y for a confident prediction, and p_y rounds to 1 in the training dtype
    once 1 - p_y drops below about the machine epsilon, so CE levels under it are not resolved by
    the training computation (docs/science.md 5), however precisely the logged loss is computed.
    """
    return float(np.finfo(np.dtype(dtype)).eps)


def stable_crossing(
    values: np.ndarray,
    steps: np.ndarray,
    tau: np.ndarray,
    levels: np.ndarray,
    window_logs: int,
    log_interp: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """First stable crossing of every level by every member (App. F.4).

    values (S, N) and tau (S, N) per member and log point, steps (N,), levels (K,).
    Returns step (S, K) and tau (S, K), NaN where no window of `window_logs` consecutive logs
    at or below the level fits inside the record (right-censored). NaN values count as not below.
    """
    values = np.asarray(values, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.float64)
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), values.shape)
    levels = np.asarray(levels, dtype=np.float64)
    n_logs = values.shape[1]
    w = int(window_logs)
    below = values[:, None, :] <= levels[None, :, None]  # (S, K, N); NaN -> False
    cs = np.concatenate([np.zeros(below.shape[:2] + (1,)), np.cumsum(below, axis=-1)], axis=-1)
    if w > n_logs:
        ok = np.zeros(below.shape[:2] + (0,), dtype=bool)
    else:
        ok = (cs[..., w:] - cs[..., : n_logs - w + 1]) == w  # window starting at each log
    found = ok.any(axis=-1)
    first = np.where(found, ok.argmax(axis=-1) if ok.shape[-1] else 0, 0)  # (S, K)
    prev = np.maximum(first - 1, 0)
    v_hi = np.take_along_axis(values, prev, axis=1)  # value at the previous log
    v_lo = np.take_along_axis(values, first, axis=1)  # value at the crossing log
    lv = np.broadcast_to(levels[None, :], first.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac_lin = (v_hi - lv) / (v_hi - v_lo)
        use_log = log_interp & (v_hi > 0) & (v_lo > 0) & (lv > 0)
        frac_log = (np.log(np.where(use_log, v_hi, 1.0)) - np.log(np.where(use_log, lv, 1.0))) / (
            np.log(np.where(use_log, v_hi, 1.0)) - np.log(np.where(use_log, v_lo, 1.0))
        )
    frac = np.where(use_log, frac_log, frac_lin)
    frac = np.clip(np.nan_to_num(frac, nan=1.0), 0.0, 1.0)
    frac = np.where(first == 0, 1.0, frac)  # already below at the first log
    s_prev, s_first = steps[prev], steps[first]
    t_prev = np.take_along_axis(tau, prev, axis=1)
    t_first = np.take_along_axis(tau, first, axis=1)
    step = np.where(found, s_prev + frac * (s_first - s_prev), np.nan)
    tau_out = np.where(found, t_prev + frac * (t_first - t_prev), np.nan)
    return step, tau_out


def relapsed(
    values: np.ndarray,
    steps: np.ndarray,
    fired: np.ndarray,
    levels: np.ndarray,
    rule: str,
    factor: float,
    margin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each fired clock later leaves its level, and the first log step where it does.

    values (S, N) in the quantity's own units, steps (N,), fired (S, K) the clock's step (NaN:
    not fired), levels (K,). rule "factor": a log after the clock fired with quantity >
    factor * level (train or test CE back up); "margin": quantity < level - margin (test
    accuracy falling back); "": never. The stability window only asks `stability_window_logs`
    logs below the level, so a clock can fire and the run still end far from it (issue 26).
    Returns relapse (S, K) bool and relapse_step (S, K), NaN where none.
    """
    fired = np.asarray(fired, dtype=np.float64)
    if rule == "":
        return np.zeros(fired.shape, dtype=bool), np.full(fired.shape, np.nan)
    values = np.asarray(values, dtype=np.float64)[:, None, :]  # (S, 1, N)
    lv = np.asarray(levels, dtype=np.float64)[None, :, None]  # (1, K, 1)
    with np.errstate(invalid="ignore"):
        left = values > factor * lv if rule == "factor" else values < lv - margin  # NaN -> False
    later = np.asarray(steps, dtype=np.float64)[None, None, :] > fired[:, :, None]  # NaN -> False
    hit = left & later
    out = hit.any(axis=-1)
    first = np.asarray(steps, dtype=np.float64)[hit.argmax(axis=-1)]
    return out, np.where(out, first, np.nan)


def structural_gaps(ds: xr.Dataset, settings: dict | None = None) -> dict[str, tuple]:
    """Raw structural gaps G (seed, step) and their structural lower bounds, by clock name:
    every declared clock of kind ``gap`` (`clock_specs`) whose quantity the store has.

    rep_srank: srank of `srank_matrix` (default the store's end-to-end map, `end_to_end_matrix`),
        srank = ||M||_F^2 / ||M||_2^2 (eq. 2.3), bound 1.
    rep_energy: `regularised_energy`, bound 0.
    rep_fourier: `fourier_gap` (App. F.5 S_rule), bound 0. rep_sep: `separation_gap` (S_sep), 0.
    rep_spurious: `spurious_energy` = ||A P_perp||_F^2 (deep linear, teacher with n < d; the
    map's energy on directions no train input spans, which only weight decay removes), bound 0.
    A gap whose variable the store lacks is absent (its clock is skipped).
    """
    s = resolve_settings(settings)
    cell = cell_params(ds)
    gaps: dict[str, tuple] = {}
    for spec in CLOCK_SPECS.values():
        if spec.kind == "gap" and (gap := spec.raw(ds, s, cell)) is not None:
            gaps[spec.name] = (gap.transpose("seed", "step"), spec.lower_bound)
    return gaps


def _tau(ds: xr.Dataset, cell: dict) -> np.ndarray:
    if "tau" in ds.coords or "tau" in ds:
        return ds["tau"].transpose("seed", "step").values.astype(np.float64)
    lr = float(cell.get("lr", 1.0))
    return np.broadcast_to(
        lr * ds["step"].values.astype(np.float64), (ds.sizes["seed"], ds.sizes["step"])
    )


def _level_rows(
    spec: ClockSpec,
    values: np.ndarray,
    levels: np.ndarray,
    steps,
    tau,
    w: int,
    floor: float,
    s: dict,
) -> pd.DataFrame:
    """Rows of a classifier or threshold clock: its quantity (S, N) against its levels, with
    the relapse flag of its declared rule (`relapsed`).

    A clock crossed from below (`above`, accuracy) runs on the negated quantity and levels; the
    level and quantity_min columns are in the quantity's own units.
    """
    sign = -1.0 if spec.above else 1.0
    raw_values, raw_levels = values, levels
    if spec.above:
        values, levels = -values, -levels
    step, tau_c = stable_crossing(values, steps, tau, levels, w, spec.log_interp)
    relapse, relapse_step = relapsed(
        raw_values, steps, step, raw_levels, spec.relapse,
        float(s["relapse_factor"]), float(s["relapse_margin"]),
    )  # fmt: skip
    n_seeds, k = values.shape[0], len(levels)
    with np.errstate(all="ignore"):
        qmin = np.nanmin(np.where(np.isfinite(values), values, np.inf), axis=1)
    qmin = np.where(np.isfinite(qmin), qmin, np.nan) * sign
    return pd.DataFrame(
        {
            "s_idx": np.repeat(np.arange(n_seeds), k),
            "clock": spec.name,
            "level": np.tile(sign * levels, n_seeds),
            "step": step.ravel(),
            "tau": tau_c.ravel(),
            "censored": np.isnan(step).ravel(),
            "below_floor": np.tile(spec.ce_floor & (levels < floor), n_seeds),
            "quantity_min": np.repeat(qmin, k),
            "pre_fit": False,
            "unresolved": False,
            "relapse": relapse.ravel(),
            "relapse_step": relapse_step.ravel(),
        }
    )


def _member_tails(
    g_raw: np.ndarray, lower: float, t_cls: np.ndarray, steps: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per member: the tail fit after T_cls (TAIL_FIELDS, `tails.fit_tail`) and G(T_cls)
    (interpolated linearly between logs); NaN where T_cls never fired."""
    n_seeds = g_raw.shape[0]
    tails = []
    g_ref = np.full(n_seeds, np.nan)
    for i in range(n_seeds):
        if np.isfinite(t_cls[i]):
            fin = np.isfinite(g_raw[i])
            if fin.sum() >= 2:
                g_ref[i] = np.interp(t_cls[i], steps[fin], g_raw[i][fin])
            tails.append(fit_tail(steps, g_raw[i], t_cls[i], lower))
        else:
            tails.append({f: np.nan for f in TAIL_FIELDS} | {"g_inf_source": "", "tail_law": ""})
    return pd.DataFrame(tails, columns=list(TAIL_FIELDS)), g_ref


def _member_kl(
    g_raw: np.ndarray, g_inf: np.ndarray, t_cls: np.ndarray, steps: np.ndarray, grad: tuple | None
) -> pd.DataFrame:
    """Per member: the KL exponent of the gap above its asymptote (KL_FIELDS, `kl.fit_kl`) where
    ||grad E|| is known (`grad`: ((seed, step) array or None, the note why not); None for a
    clock without the `kl` fit: NaN and no note)."""
    n_seeds = g_raw.shape[0]
    kl = pd.DataFrame([dict.fromkeys(KL_FIELDS, np.nan)] * n_seeds)
    kl["kl_note"] = "" if grad is None else grad[1]
    if grad is not None and grad[0] is not None:
        for i in range(n_seeds):
            if np.isfinite(t_cls[i]):
                res = fit_kl(steps, g_raw[i] - g_inf[i], grad[0][i], t_cls[i])
                kl.loc[i, list(KL_FIELDS)] = [res[f] for f in KL_FIELDS]
    return kl


def _rep_gap_rows(
    name: str,
    g_raw: np.ndarray,
    lower: float,
    t_cls: np.ndarray,
    steps,
    tau,
    eta,
    w,
    grad: tuple[np.ndarray | None, str] | None = None,
) -> list[pd.DataFrame]:
    """Rows of one representation clock: per member tail fit, normalisation, crossings, and for
    a clock declared with the `kl` fit the Kurdyka-Lojasiewicz exponent (`grad`: ||grad E|| and
    the note why it is missing; None: no KL fit)."""
    logged = np.isfinite(g_raw).any(axis=0)  # a gap logged on every k-th row only (srank_gated)
    if not logged.all():  # runs on its logged rows: the stability window counts logged rows
        g_raw, steps, tau = g_raw[:, logged], steps[logged], tau[:, logged]
        grad = grad if grad is None or grad[0] is None else (grad[0][:, logged], grad[1])
    n_seeds = g_raw.shape[0]
    tail, g_ref = _member_tails(g_raw, lower, t_cls, steps)
    g_inf = tail["g_inf"].to_numpy(float)
    with np.errstate(all="ignore"):
        scale = np.where(g_ref - g_inf > 0, g_ref - g_inf, np.nan)
        g = (g_raw - g_inf[:, None]) / scale[:, None]  # 1 at T_cls, 0 at the asymptote
        # a level within RESOLVE_SE standard errors of the asymptote is not resolved (and no
        # level is where the asymptote was not fitted)
        se_rel = tail["g_inf_se"].to_numpy(float) / scale
    unresolved = ~(eta[None, :] > RESOLVE_SE * se_rel[:, None])
    kl = _member_kl(g_raw, g_inf, t_cls, steps, grad)
    post = np.where(steps[None, :] >= t_cls[:, None], g, np.nan)  # NaN never counts as below
    step_post, tau_post = stable_crossing(post, steps, tau, eta, w)
    step_all, tau_all = stable_crossing(g, steps, tau, eta, w)
    early = np.isfinite(step_all) & (step_all < t_cls[:, None])
    with np.errstate(all="ignore"):
        qmin = np.nanmin(np.where(np.isfinite(post), post, np.inf), axis=1)
    qmin = np.where(np.isfinite(qmin), qmin, np.nan)
    k = len(eta)

    def frame(step, tau_c, pre_fit: bool, keep: np.ndarray) -> pd.DataFrame:
        df = pd.DataFrame(
            {
                "s_idx": np.repeat(np.arange(n_seeds), k),
                "clock": name,
                "level": np.tile(eta, n_seeds),
                "step": step.ravel(),
                "tau": tau_c.ravel(),
                "censored": np.isnan(step).ravel(),
                "below_floor": False,
                "quantity_min": np.repeat(qmin, k),
                "pre_fit": pre_fit,
                "unresolved": unresolved.ravel(),
                "relapse": False,  # no relapse rule for gaps (clock_specs.RELAPSE_RULES)
                "t_cls_ref": np.repeat(t_cls, k),
                "raw_level": (g_inf[:, None] + eta[None, :] * scale[:, None]).ravel(),
                "g_ref": np.repeat(g_ref, k),
            }
        )
        for f in TAIL_FIELDS:
            df[f] = np.repeat(tail[f].to_numpy(), k)
        for f in (*KL_FIELDS, "kl_note"):
            df[f] = np.repeat(kl[f].to_numpy(), k)
        return df[keep.ravel()]

    return [
        frame(step_post, tau_post, False, np.ones((n_seeds, k), dtype=bool)),
        frame(step_all, tau_all, True, early),
    ]


def _grad_norm(ds: xr.Dataset, cell: dict) -> tuple[np.ndarray | None, str]:
    """||grad E|| (seed, step) as an array where the store gives it, and the note why not."""
    gn, why = regularised_grad_norm(ds, cell)
    return (None if gn is None else gn.transpose("seed", "step").values.astype(np.float64), why)


def _table(
    frames: list[pd.DataFrame], ds: xr.Dataset, cell: dict, axes: dict, diverged, dtype: str
) -> pd.DataFrame:
    """The clocks table from the per-clock row frames: diverged members' times blanked, the
    identity and axis columns in front, CLOCK_COLUMNS in order, flags and text typed."""
    seeds = ds["seed"].values.astype(np.int64)
    out = pd.concat(frames, ignore_index=True)
    div = diverged[out["s_idx"].to_numpy()]
    out.loc[div, ["step", "tau", "relapse_step"]] = np.nan
    out.loc[div, "relapse"] = False
    out["censored"] = out["censored"].astype(bool) & ~div
    out["diverged"] = div
    out["seed"] = seeds[out["s_idx"].to_numpy()]
    out["dtype"] = dtype
    for c in CLOCK_COLUMNS:
        if c not in out:
            out[c] = "" if c in TEXT_COLUMNS else np.nan
    for c in TEXT_COLUMNS:
        out[c] = out[c].fillna("").astype(str)
    ident = {c: cell.get(c, "") for c in IDENTITY_COLUMNS}
    ident["cell_id"] = ident["cell_id"] or ds.attrs.get("cell_id", "")
    # a list-valued axis (layer_init_scales, frozen_blocks) is one label, written as in cell ids;
    # an axis that is a column already (dtype) is not repeated
    labels = {
        k: "-".join(map(str, v)) if isinstance(v, list | tuple) else v
        for k, v in axes.items()
        if k not in CLOCK_COLUMNS
    }
    head = pd.DataFrame({**ident, **labels}, index=out.index)
    out = pd.concat([head, out[list(CLOCK_COLUMNS)]], axis=1)
    out["seed"] = out["seed"].astype("int64")
    for c in FLAG_COLUMNS:
        out[c] = out[c].astype(bool)
    return out


def extract_clocks(ds: xr.Dataset, settings: dict, axes: dict) -> pd.DataFrame:
    """Clocks table rows (design.md "Clocks table") for one cell's trajectory Dataset: one
    clock per declared clock (`clock_specs`) whose quantity the store has.

    One row per (seed, clock, level), plus `pre_fit` rows for representation-clock crossings
    before T_cls(eps_star). Diverged members (diverged_step >= 0) get diverged=True and NaN
    times; never-reached levels get censored=True and NaN times (a representation clock is also
    censored when T_cls(eps_star) never fired: its gap has no normalisation); CE levels under
    the training dtype's floor (`ce_floor`) get below_floor=True (times still computed, fits
    skip them). `quantity_min` is the smallest value of the clock's quantity over the run (for
    accuracy: the largest accuracy; for a normalised gap: after T_cls), which shows how far a
    censored member got. Representation rows carry the raw gap values next to the normalised
    level (`raw_level`, `g_ref` = G(T_cls), `g_inf` and its tail fit); `unresolved` marks
    levels within RESOLVE_SE standard errors of the fitted asymptote (all levels where it was
    not fitted): fits skip and count them.
    """
    s = resolve_settings(settings)
    cell = cell_params(ds)
    if "train_loss" not in ds:
        raise ValueError("trajectory has no train_loss: every clock starts from the train CE")
    dtype = str(ds.attrs.get("dtype", cell.get("dtype", "float32")))
    floor = ce_floor(dtype)
    w = int(s["stability_window_logs"])
    steps = ds["step"].values.astype(np.float64)
    tau = _tau(ds, cell)
    if "diverged_step" in ds:
        diverged = ds["diverged_step"].values.astype(np.int64) >= 0
    else:
        diverged = np.zeros(ds.sizes["seed"], dtype=bool)
    frames, train = [], None
    for spec in CLOCK_SPECS.values():
        if spec.kind == "gap" or (q := spec.raw(ds, s, cell)) is None:
            continue
        values = q.transpose("seed", "step").values.astype(np.float64)
        train = values if spec.kind == "classifier" else train
        frames.append(_level_rows(spec, values, spec.levels(s), steps, tau, w, floor, s))
    t_cls = stable_crossing(train, steps, tau, np.array([float(s["eps_star"])]), w)[0][:, 0]
    t_cls = np.where(diverged, np.nan, t_cls)
    grad = None
    for name, (gap, lower) in structural_gaps(ds, s).items():
        spec = CLOCK_SPECS[name]
        if "kl" in spec.fits and grad is None:
            grad = _grad_norm(ds, cell)
        g_raw = gap.values.astype(np.float64)
        kl_grad = grad if "kl" in spec.fits else None
        frames += _rep_gap_rows(name, g_raw, lower, t_cls, steps, tau, spec.levels(s), w, kl_grad)
    return _table(frames, ds, cell, axes, diverged, dtype)
