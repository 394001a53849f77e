"""Clock extraction: stopping times of one cell's trajectory (docs/science.md 1, paper App. F.4).

A clock T(level) is the first logged step after which a quantity stays at or below `level` for
`stability_window_logs` consecutive logs (the crossing log included), so a curve that touches the
level once and bounces back is not counted. The crossing is located between the crossing log and
the previous log by linear interpolation in log(quantity) (linear in the quantity for accuracies
and flip fractions), and `tau` (accumulated lr) is interpolated with the same fraction. The exact
normalisation of every structural gap is documented in docs/design.md ("Clocks: definitions").
All work is vectorised over (seed, level, step); nothing loops over members.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

DEFAULT_SETTINGS: dict = {
    # train-CE levels for the classifier clock (eq. 2.1), descending
    "eps": [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6],
    # normalised structural-gap levels for the representation clocks (eq. 2.2), descending
    "eta": [0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002, 0.001],
    "stability_window_logs": 5,
    "acc_threshold": 0.99,
    "test_loss_level": [1e-1, 1e-2],
    "gate_flip_threshold": 1e-3,
    # matrix of `srank` for the stable-rank gap; None = end-to-end map ("UW" relu, "A" linear)
    "srank_matrix": None,
    # stable-rank gap floor: "one" (the lower bound of any stable rank) or "min" (the member's
    # own minimum over the run; looks ahead, so every decreasing run reaches every level)
    "srank_floor": "one",
    "srank_reference": "peak",
    # T_KL rule for the representation power law: "onset" (rep_srank clock at t_kl_onset_eta),
    # "profile" (profile least squares on the log scale), or "zero"
    "t_kl_rule": "onset",
    "t_kl_onset_eta": 0.9,
    "bootstrap_samples": 1000,
    "bootstrap_seed": 0,
    "min_points": 3,
    "ci_level": 0.95,
    # response of every fit: "step" or "tau"
    "fit_time": "step",
    # late-time slope cross-check window on the normalised energy gap [low, high]
    "late_gap_range": [1e-3, 1e-1],
    # reference levels for the separation ratio T_rep / T_cls and the cross-cell scaling fits
    "reference_levels": {
        "cls": 1e-3,
        "rep_srank": 0.5,
        "rep_energy": 0.1,
        "rep_fourier": 0.5,
        "rep_sep": 0.5,
        "gen_acc": 0.99,
        "gen_loss": 1e-2,
        "gate": 1e-3,
    },
    # shorthands (config schema): override reference_levels["cls"] / every rep_* level
    "cls_ref_eps": None,
    "rep_ref_eta": None,
    "scaling_axes": ["weight_decay", "depth", "train_fraction"],
}

CLOCKS = ("cls", "rep_srank", "rep_energy", "rep_fourier", "rep_sep", "gen_acc", "gen_loss", "gate")
REP_CLOCKS = ("rep_srank", "rep_energy", "rep_fourier", "rep_sep")
IDENTITY_COLUMNS = ("study", "grid", "cell_id", "cell_hash")
CLOCK_COLUMNS = (
    "seed",
    "clock",
    "level",
    "step",
    "tau",
    "censored",
    "below_floor",
    "diverged",
    "dtype",
    "quantity_min",
)


def resolve_settings(settings: dict | None) -> dict:
    """DEFAULT_SETTINGS overlaid with the config's `analysis` section (unknown keys rejected)."""
    settings = dict(settings or {})
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown analysis settings: {sorted(unknown)}")
    out = {**DEFAULT_SETTINGS, **settings}
    out["reference_levels"] = {
        **DEFAULT_SETTINGS["reference_levels"],
        **settings.get("reference_levels", {}),
    }
    if out["cls_ref_eps"] is not None:
        out["reference_levels"]["cls"] = float(out["cls_ref_eps"])
    if out["rep_ref_eta"] is not None:
        out["reference_levels"].update(dict.fromkeys(REP_CLOCKS, float(out["rep_ref_eta"])))
    if int(out["stability_window_logs"]) < 1:
        raise ValueError("stability_window_logs must be >= 1")
    return out


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


def _cell_params(ds: xr.Dataset) -> dict:
    cell = ds.attrs.get("cell", "{}")
    return json.loads(cell) if isinstance(cell, str) else dict(cell)


def _normalised(g: xr.DataArray, floor: xr.DataArray | float) -> xr.DataArray:
    """(G(t) - floor) / (G(0) - floor): 1 at initialisation, 0 at the gap's floor."""
    g0 = g.isel(step=0)
    denom = (g0 - floor).where(lambda d: d > 0)
    return (g - floor) / denom


def _from_peak(g: xr.DataArray, floor: xr.DataArray | float, tol: float = 0.02) -> xr.DataArray:
    """(G(t) - floor) / (max_t G - floor) from the member's peak on; NaN before the peak.

    The peak is the last step at which G is within `tol` (relative) of its maximum. Adam's first
    steps make the stable rank dip and recover (a start-up blip); measuring the decline from the
    last peak keeps that transient from firing the representation clock.
    """
    top = g.max("step")
    near_top = g >= top - tol * np.abs(top)
    steps = g["step"].broadcast_like(g)
    peak_step = steps.where(near_top).max("step")
    denom = (top - floor).where(lambda d: d > 0)
    return ((g - floor) / denom).where(g["step"] >= peak_step)


def structural_gaps(ds: xr.Dataset, settings: dict | None = None) -> dict[str, xr.DataArray]:
    """Normalised structural gaps (seed, step) for every representation clock the store supports.

    rep_srank: (srank(t) - f) / (max srank - f) of `srank_matrix` from the member's last peak
        on (the last step within 2% of the max; NaN before it; `srank_reference: peak`, the
        default), or (srank(t) - f) / (srank(0) - f) (`srank_reference: init`); f = 1 (floor
        "one") or the member's minimum over the run (floor "min"); srank = ||M||_F^2 / ||M||_2^2
        (eq. 2.3).
    rep_energy: Delta(t) / Delta(0) with Delta(t) = E(t) - min_t E(t), where E is the objective
        actually regularised: relu E = train CE + weight_decay / 2 * sqnorm_total (the penalty
        whose gradient is the decoupled AdamW / coupled SGD decay step); deep linear
        E = train CE + (weight_decay * L / 2) * ||A||_{S_{2/L}}^{2/L}, the infimum of
        CE + weight_decay / 2 * sum_l ||W_l||_F^2 over factorisations of A (eqs. 2.7, 4.2).
    rep_fourier: fourier_gap(t) / fourier_gap(0) (floor 0; App. F.5 S_rule).
    rep_sep: separation_gap(t) / separation_gap(0) (floor 0; App. F.5 S_sep).
    """
    s = resolve_settings(settings)
    cell = _cell_params(ds)
    model = cell.get("model", "relu_embed")
    gaps: dict[str, xr.DataArray] = {}
    if "srank" in ds:
        matrix = s["srank_matrix"] or ("A" if model == "deep_linear" else "UW")
        if matrix not in ds["srank"].coords["matrix"].values:
            raise ValueError(f"srank_matrix {matrix!r} not in store matrices")
        sr = ds["srank"].sel(matrix=matrix).drop_vars("matrix")
        if s["srank_floor"] == "one":
            floor = 1.0
        elif s["srank_floor"] == "min":
            floor = sr.min("step")
        else:
            raise ValueError(f"srank_floor must be 'one' or 'min', got {s['srank_floor']!r}")
        if s["srank_reference"] == "peak":
            gaps["rep_srank"] = _from_peak(sr, floor)
        else:
            gaps["rep_srank"] = _normalised(sr, floor)
    wd = float(cell.get("weight_decay", 0.0))
    energy = None
    if model == "deep_linear" and "schatten_energy" in ds:
        depth = float(cell.get("depth", 1))
        energy = ds["train_loss"] + wd * depth / 2.0 * ds["schatten_energy"]
    elif model != "deep_linear" and "sqnorm_total" in ds:
        energy = ds["train_loss"] + wd / 2.0 * ds["sqnorm_total"]
    if energy is not None:
        gaps["rep_energy"] = _normalised(energy, energy.min("step"))
    if "fourier_gap" in ds:
        gaps["rep_fourier"] = _normalised(ds["fourier_gap"], 0.0)
    if "separation_gap" in ds:
        gaps["rep_sep"] = _normalised(ds["separation_gap"], 0.0)
    return {k: v.transpose("seed", "step") for k, v in gaps.items()}


def _tau(ds: xr.Dataset, cell: dict) -> np.ndarray:
    if "tau" in ds.coords or "tau" in ds:
        return ds["tau"].transpose("seed", "step").values.astype(np.float64)
    lr = float(cell.get("lr", 1.0))
    return np.broadcast_to(
        lr * ds["step"].values.astype(np.float64), (ds.sizes["seed"], ds.sizes["step"])
    )


def extract_clocks(ds: xr.Dataset, settings: dict, axes: dict) -> pd.DataFrame:
    """Clocks table rows (design.md "Clocks table") for one cell's trajectory Dataset.

    One row per (seed, clock, level). Diverged members (diverged_step >= 0) get diverged=True
    and NaN times; never-reached levels get censored=True and NaN times; CE levels under the
    training dtype's floor (`ce_floor`) get below_floor=True (times still computed, fits skip
    them). `quantity_min` is the smallest value of the clock's quantity over the run (for
    accuracy: the largest accuracy), which shows how far a censored member got.
    """
    s = resolve_settings(settings)
    cell = _cell_params(ds)
    dtype = str(ds.attrs.get("dtype", cell.get("dtype", "float32")))
    floor = ce_floor(dtype)
    w = int(s["stability_window_logs"])
    steps = ds["step"].values.astype(np.float64)
    tau = _tau(ds, cell)
    seeds = ds["seed"].values.astype(np.int64)
    n_seeds = len(seeds)
    if "diverged_step" in ds:
        diverged = ds["diverged_step"].values.astype(np.int64) >= 0
    else:
        diverged = np.zeros(n_seeds, dtype=bool)

    def arr(name: str) -> np.ndarray:
        return ds[name].transpose("seed", "step").values.astype(np.float64)

    # (clock, quantity (S, N) to be <= level, levels, log interpolation, CE floor applies)
    specs: list[tuple[str, np.ndarray, np.ndarray, bool, bool]] = []
    if "train_loss" in ds:
        specs.append(("cls", arr("train_loss"), np.asarray(s["eps"], float), True, True))
    eta = np.asarray(s["eta"], dtype=float)
    for name, gap in structural_gaps(ds, s).items():
        lv = eta
        if name == "rep_srank" and s["t_kl_rule"] == "onset":
            lv = np.unique(np.append(eta, float(s["t_kl_onset_eta"])))[::-1]
        specs.append((name, gap.values.astype(np.float64), lv, True, False))
    if "test_acc" in ds:
        thr = float(s["acc_threshold"])
        specs.append(("gen_acc", -arr("test_acc"), np.asarray([-thr]), False, False))
    if "test_loss" in ds:
        tl = np.atleast_1d(np.asarray(s["test_loss_level"], dtype=float))
        specs.append(("gen_loss", arr("test_loss"), tl, True, True))
    if "gate_flip_fraction" in ds:
        thr = float(s["gate_flip_threshold"])
        specs.append(("gate", arr("gate_flip_fraction"), np.asarray([thr]), False, False))

    frames = []
    for clock, values, levels, log_interp, floored in specs:
        step, tau_c = stable_crossing(values, steps, tau, levels, w, log_interp)
        k = len(levels)
        sign = -1.0 if clock == "gen_acc" else 1.0
        with np.errstate(all="ignore"):
            qmin = np.nanmin(np.where(np.isfinite(values), values, np.inf), axis=1)
        qmin = np.where(np.isfinite(qmin), qmin, np.nan) * sign
        div = np.repeat(diverged[:, None], k, axis=1)
        step = np.where(div, np.nan, step)
        tau_c = np.where(div, np.nan, tau_c)
        frames.append(
            pd.DataFrame(
                {
                    "seed": np.repeat(seeds, k),
                    "clock": clock,
                    "level": np.tile(sign * levels, n_seeds),
                    "step": step.ravel(),
                    "tau": tau_c.ravel(),
                    "censored": (np.isnan(step) & ~div).ravel(),
                    "below_floor": np.tile(floored & (levels < floor), n_seeds),
                    "diverged": div.ravel(),
                    "dtype": dtype,
                    "quantity_min": np.repeat(qmin, k),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLOCK_COLUMNS)
    ident = {c: cell.get(c, "") for c in IDENTITY_COLUMNS}
    ident["cell_id"] = ident["cell_id"] or ds.attrs.get("cell_id", "")
    head = pd.DataFrame({**ident, **dict(axes)}, index=out.index)
    out = pd.concat([head, out[list(CLOCK_COLUMNS)]], axis=1)
    out["seed"] = out["seed"].astype("int64")
    for c in ("censored", "below_floor", "diverged"):
        out[c] = out[c].astype(bool)
    return out
