"""Clock extraction: stopping times of one cell's trajectory (docs/science.md 1, 7; App. F.4).

A clock T(level) is the first logged step after which a quantity stays at or below `level` for
`stability_window_logs` consecutive logs (the crossing log included), so a curve that touches the
level once and bounces back is not counted. The crossing is located between the crossing log and
the previous log by linear interpolation in log(quantity) (linear in the quantity for accuracies
and flip fractions), and `tau` (accumulated lr) is interpolated with the same fraction.

Representation clocks run on gaps that go to a true zero: each structural gap G(t) is measured
against its asymptote G_inf, estimated per member from a fit of its tail after T_cls(eps*)
(`fits.fit_tail`), and normalised at T_cls(eps*):
`g(t) = (G(t) - G_inf) / (G(T_cls) - G_inf)`. Only crossings after T_cls count; an earlier
crossing of the same level is kept as a row flagged `pre_fit` and never used by a law fit.
Definitions: docs/design.md "Clocks: definitions". Crossings are vectorised over
(seed, level, step); only the per-member tail fits loop over members.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from twoclocks.train.store import end_to_end_matrix

DEFAULT_SETTINGS: dict = {
    # train-CE levels for the classifier clock (eq. 2.1), descending, log-spaced over 5 decades;
    # levels under the training dtype's resolution are flagged below_floor
    "eps": [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6],
    # normalised-gap levels for the representation clocks (eq. 2.2), descending, log-spaced
    # over more than two decades (the gap is 1 at T_cls(eps_star) and 0 at its asymptote)
    "eta": [0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002],
    # train-CE level whose clock T_cls(eps_star) starts the representation clocks: gaps are
    # normalised there and only later crossings count (every margin positive: p_y >= 0.999)
    "eps_star": 1e-3,
    "stability_window_logs": 5,
    "acc_threshold": 0.99,
    "test_loss_level": [1e-1, 1e-2],
    "gate_flip_threshold": 1e-3,
    # matrix of `srank` for the stable-rank gap; None = the store's end-to-end map
    # (`end_to_end_matrix` attr: "UW" relu, "A" deep linear)
    "srank_matrix": None,
    "bootstrap_samples": 1000,
    "bootstrap_seed": 0,
    # fewest distinct uncensored post-fit levels for a law fit (the power law has 3 parameters)
    "min_levels": 4,
    "ci_level": 0.95,
    # response of every fit: "step" or "tau"
    "fit_time": "step",
    # reference levels for the separation ratio T_rep / T_cls and the cross-cell scaling fits
    "reference_levels": {
        "cls": 1e-3,
        "rep_srank": 0.1,
        "rep_energy": 0.1,
        "rep_fourier": 0.1,
        "rep_sep": 0.1,
        "rep_spurious": 0.1,
        "gen_acc": 0.99,
        "gen_loss": 1e-2,
        "gate": 1e-3,
    },
    # shorthands (config schema): override reference_levels["cls"] / every rep_* level
    "cls_ref_eps": None,
    "rep_ref_eta": None,
    "scaling_axes": ["weight_decay", "depth", "train_fraction"],
    # the frozen-gate reduction stage (train.frozen_gates, issue 14): off by default (about two
    # extra trainings per ReLU cell); it runs to T_gen + reduction_margin * (T_gen - T_cls)
    "reduction": False,
    "reduction_margin": 0.25,
}

CLOCKS = (
    "cls",
    "rep_srank",
    "rep_energy",
    "rep_fourier",
    "rep_sep",
    "rep_spurious",
    "gen_acc",
    "gen_loss",
    "gate",
)
REP_CLOCKS = ("rep_srank", "rep_energy", "rep_fourier", "rep_sep", "rep_spurious")
LAW_CLOCKS = ("cls", *REP_CLOCKS)
IDENTITY_COLUMNS = ("study", "grid", "cell_id", "cell_hash")
# per-member tail fit of a gap (fits.fit_tail): asymptote and tail law, columns of the clocks table
TAIL_FIELDS = (
    "g_inf",
    "g_inf_se",
    "g_inf_source",
    "tail_law",
    "tail_delta_aic",
    "tail_timescale",
    "tail_exponent",
    "tail_t0",
    "tail_n",
)

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
    "pre_fit",
    "unresolved",
    "t_cls_ref",
    "raw_level",
    "g_ref",
    *TAIL_FIELDS,
    "kl_theta",
    "kl_theta_se",
    "kl_n",
    "kl_note",
)
# a normalised-gap level counts only if it lies more than this many standard errors of the
# fitted asymptote above it (se relative to G(T_cls) - G_inf)
RESOLVE_SE = 2.0
# settings from before these options: rejected with a pointer to what replaced them
_REMOVED = {
    "t_kl_rule": "the free-offset power law is fitted against the log law (fits.fit_law)",
    "t_kl_onset_eta": "the free-offset power law is fitted against the log law (fits.fit_law)",
    "srank_floor": "gaps are measured against a fitted asymptote",
    "srank_reference": "gaps are normalised at T_cls(eps_star)",
    "late_gap_range": "the tail shape is fitted per member (fits.fit_tail)",
    "min_points": "renamed min_levels",
}


def resolve_settings(settings: dict | None) -> dict:
    """DEFAULT_SETTINGS overlaid with the config's `analysis` section (unknown keys rejected)."""
    settings = dict(settings or {})
    gone = sorted(set(settings) & set(_REMOVED))
    if gone:
        raise ValueError(
            "removed analysis settings: "
            + "; ".join(f"{k} ({_REMOVED[k]})" for k in gone)
            + ". Delete them from the config's analysis section."
        )
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
    if not 0 < float(out["eps_star"]):
        raise ValueError(f"eps_star must be > 0, got {out['eps_star']!r}")
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


def model_kind(cell: dict | xr.Dataset) -> str:
    """The model a cell (its params) or trajectory store was trained with: the one place the
    analysis and report ask (clocks, claims, figures, study_dir).

    A store's ``model`` attr (written by the engine), else the params' ``model`` (Cell.params, a
    store's ``cell`` attr). Stores from older or other training code may name neither: they
    count as ``deep_linear`` when the params have a ``depth`` and no ``embed_dim``, else
    ``relu_embed``.
    """
    if isinstance(cell, xr.Dataset):
        if cell.attrs.get("model"):
            return str(cell.attrs["model"])
        cell = _cell_params(cell)
    if cell.get("model"):
        return str(cell["model"])
    return "deep_linear" if "depth" in cell and "embed_dim" not in cell else "relu_embed"


def is_deep_linear(cell: dict | xr.Dataset) -> bool:
    """Whether :func:`model_kind` is ``deep_linear`` (its energy and claims differ)."""
    return model_kind(cell) == "deep_linear"


def regularised_energy(ds: xr.Dataset, cell: dict) -> xr.DataArray | None:
    """E(t), the objective weight decay actually regularises (eqs. 2.7, 4.2); None if not logged.

    relu: E = train CE + weight_decay / 2 * sqnorm_total (the penalty whose gradient is the
    decoupled AdamW / coupled SGD decay step). Deep linear: E = train CE + (weight_decay * L / 2)
    * schatten_energy, the infimum of CE + weight_decay / 2 * sum_l ||W_l||_F^2 over
    factorisations of A.
    """
    wd = float(cell.get("weight_decay", 0.0))
    if "train_loss" not in ds:
        return None
    if is_deep_linear(cell):
        if "schatten_energy" not in ds:
            return None
        return ds["train_loss"] + wd * float(cell.get("depth", 1)) / 2.0 * ds["schatten_energy"]
    if "sqnorm_total" not in ds:
        return None
    return ds["train_loss"] + wd / 2.0 * ds["sqnorm_total"]


def regularised_grad_norm(ds: xr.Dataset, cell: dict) -> tuple[xr.DataArray | None, str]:
    """||grad E|| (seed, step) of the regularised objective where the store gives it, else why not.

    Stores with `grad_norm_energy` (seed, step, block) = ||grad_b L + wd theta_b|| give
    ||grad E|| = sqrt(sum_blocks grad_norm_energy^2), the gradient of E = L + wd/2 ||theta||^2
    in parameter space (relu: exactly the energy of :func:`regularised_energy`; deep linear: the
    parameter-space energy, equal to the end-to-end one on balanced factorisations, which weight
    decay drives the tail towards); blocks held at init (`frozen_blocks`) are left out. Older
    stores have `grad_norm`, the loss gradient alone: it is ||grad E|| only when weight_decay == 0.
    """
    if "grad_norm_energy" in ds:
        # blocks held at init (`frozen_blocks`) are not optimised: E's gradient is over the rest
        frozen = {str(b) for b in cell.get("frozen_blocks", [])}
        g = ds["grad_norm_energy"]
        g = g.sel(block=[b for b in g["block"].values if str(b) not in frozen])
        return np.sqrt((g**2).sum("block")), ""
    if "grad_norm" not in ds:
        return None, "no grad_norm in the store"
    if float(cell.get("weight_decay", 0.0)) != 0.0:
        return None, (
            "grad_norm excludes weight decay and the store has no grad_norm_energy (seed, step, "
            "block) (written by twoclocks since 2026-11-29): re-train to get theta"
        )
    return np.sqrt((ds["grad_norm"] ** 2).sum("block")), ""


def structural_gaps(ds: xr.Dataset, settings: dict | None = None) -> dict[str, tuple]:
    """Raw structural gaps G (seed, step) and their structural lower bounds, by clock name.

    rep_srank: srank of `srank_matrix` (default the store's end-to-end map, `end_to_end_matrix`),
        srank = ||M||_F^2 / ||M||_2^2 (eq. 2.3), bound 1.
    rep_energy: `regularised_energy`, bound 0.
    rep_fourier: `fourier_gap` (App. F.5 S_rule), bound 0. rep_sep: `separation_gap` (S_sep), 0.
    rep_spurious: `spurious_energy` = ||A P_perp||_F^2 (deep linear, teacher with n < d; the
    map's energy on directions no train input spans, which only weight decay removes), bound 0.
    A gap whose variable the store lacks is absent (its clock is skipped).
    """
    s = resolve_settings(settings)
    cell = _cell_params(ds)
    gaps: dict[str, tuple] = {}
    if "srank" in ds:
        matrix = s["srank_matrix"] or end_to_end_matrix(ds)
        names = [str(m) for m in ds["srank"].coords["matrix"].values]
        if matrix not in names:
            raise ValueError(f"srank_matrix {matrix!r} not in the store's matrices {names}")
        gaps["rep_srank"] = (ds["srank"].sel(matrix=matrix).drop_vars("matrix"), 1.0)
    energy = regularised_energy(ds, cell)
    if energy is not None:
        gaps["rep_energy"] = (energy, 0.0)
    if "fourier_gap" in ds:
        gaps["rep_fourier"] = (ds["fourier_gap"], 0.0)
    if "separation_gap" in ds:
        gaps["rep_sep"] = (ds["separation_gap"], 0.0)
    if "spurious_energy" in ds:
        gaps["rep_spurious"] = (ds["spurious_energy"], 0.0)
    return {k: (v.transpose("seed", "step"), lo) for k, (v, lo) in gaps.items()}


def _tau(ds: xr.Dataset, cell: dict) -> np.ndarray:
    if "tau" in ds.coords or "tau" in ds:
        return ds["tau"].transpose("seed", "step").values.astype(np.float64)
    lr = float(cell.get("lr", 1.0))
    return np.broadcast_to(
        lr * ds["step"].values.astype(np.float64), (ds.sizes["seed"], ds.sizes["step"])
    )


def _rep_gap_rows(
    name: str,
    g_raw: np.ndarray,
    lower: float,
    t_cls: np.ndarray,
    steps,
    tau,
    eta,
    w,
    grad: tuple[np.ndarray | None, str] = (None, ""),
) -> list[pd.DataFrame]:
    """Rows of one representation clock: per member tail fit, normalisation, crossings, and for
    the energy gap the Kurdyka-Lojasiewicz exponent where ||grad E|| is known (`grad`)."""
    from twoclocks.analyze.fits import KL_FIELDS, fit_kl, fit_tail

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
    tail = pd.DataFrame(tails, columns=list(TAIL_FIELDS))
    g_inf = tail["g_inf"].to_numpy(float)
    with np.errstate(all="ignore"):
        scale = np.where(g_ref - g_inf > 0, g_ref - g_inf, np.nan)
        g = (g_raw - g_inf[:, None]) / scale[:, None]  # 1 at T_cls, 0 at the asymptote
        # a level within RESOLVE_SE standard errors of the asymptote is not resolved (and no
        # level is where the asymptote was not fitted)
        se_rel = tail["g_inf_se"].to_numpy(float) / scale
    unresolved = ~(eta[None, :] > RESOLVE_SE * se_rel[:, None])
    kl = pd.DataFrame([dict.fromkeys(KL_FIELDS, np.nan)] * n_seeds)
    kl["kl_note"] = grad[1] if name == "rep_energy" else ""
    if name == "rep_energy" and grad[0] is not None:
        for i in range(n_seeds):
            if np.isfinite(t_cls[i]):
                res = fit_kl(steps, g_raw[i] - g_inf[i], grad[0][i], t_cls[i])
                kl.loc[i, list(KL_FIELDS)] = [res[f] for f in KL_FIELDS]
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


def extract_clocks(ds: xr.Dataset, settings: dict, axes: dict) -> pd.DataFrame:
    """Clocks table rows (design.md "Clocks table") for one cell's trajectory Dataset.

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
    cell = _cell_params(ds)
    if "train_loss" not in ds:
        raise ValueError("trajectory has no train_loss: every clock starts from the train CE")
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

    train = arr("train_loss")
    # (clock, quantity (S, N) to be <= level, levels, log interpolation, CE floor applies)
    specs: list[tuple[str, np.ndarray, np.ndarray, bool, bool]] = [
        ("cls", train, np.asarray(s["eps"], float), True, True)
    ]
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
        frames.append(
            pd.DataFrame(
                {
                    "s_idx": np.repeat(np.arange(n_seeds), k),
                    "clock": clock,
                    "level": np.tile(sign * levels, n_seeds),
                    "step": step.ravel(),
                    "tau": tau_c.ravel(),
                    "censored": np.isnan(step).ravel(),
                    "below_floor": np.tile(floored & (levels < floor), n_seeds),
                    "quantity_min": np.repeat(qmin, k),
                    "pre_fit": False,
                    "unresolved": False,
                }
            )
        )
    t_cls = stable_crossing(train, steps, tau, np.array([float(s["eps_star"])]), w)[0][:, 0]
    t_cls = np.where(diverged, np.nan, t_cls)
    eta = np.asarray(s["eta"], dtype=float)
    gn, why = regularised_grad_norm(ds, cell)
    grad = (None if gn is None else gn.transpose("seed", "step").values.astype(np.float64), why)
    for name, (gap, lower) in structural_gaps(ds, s).items():
        g_raw = gap.values.astype(np.float64)
        frames += _rep_gap_rows(name, g_raw, lower, t_cls, steps, tau, eta, w, grad)

    out = pd.concat(frames, ignore_index=True)
    div = diverged[out["s_idx"].to_numpy()]
    out.loc[div, ["step", "tau"]] = np.nan
    out["censored"] = out["censored"].astype(bool) & ~div
    out["diverged"] = div
    out["seed"] = seeds[out["s_idx"].to_numpy()]
    out["dtype"] = dtype
    for c in CLOCK_COLUMNS:
        if c not in out:
            out[c] = "" if c in ("g_inf_source", "tail_law", "kl_note") else np.nan
    for c in ("g_inf_source", "tail_law", "kl_note"):
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
    for c in ("censored", "below_floor", "diverged", "pre_fit", "unresolved"):
        out[c] = out[c].astype(bool)
    return out
