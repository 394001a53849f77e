"""Known truths at a study's horizon, cadence, level grids and noise (issue #22.7, 22.8).

A `Horizon` is what a study gives an estimator: its steps, its log steps (the engine's cadence),
its eps and eta grids, the stability window, the measured noise and the seed count. A `Family`
is a known law: a noise-free curve per member (train CE for the classifier clock, a raw gap G(t)
for a representation clock), its true law (LOG_LIKE or POLYNOMIAL), and its asymptote. Members
differ by a seed jitter of their time scales (SEED_JITTER) and by multiplicative log-normal noise
per log. Time scales are set relative to the horizon, so a family means the same thing at every
horizon; the power tails start at step 0 and are normalised at T_cls = T_CLS_FRACTION of the
horizon, so by the end they have fallen only 1 - 10^-p of their way (the asymptote unreached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from twoclocks.analyze.laws.decision import LOG_LIKE, POLYNOMIAL

SEED_JITTER = 0.1  # log-normal SD of a member's time scales around the family's
T_CLS_FRACTION = 0.1  # T_cls(eps*) of the representation families, as a fraction of the horizon
CE0 = 4.0  # initial train CE (about log of the class count)
DEFAULT_ETA = (0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002)
DEFAULT_EPS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)


def log_grid(
    steps: int, dense_steps: int, every_steps: int, rows_per_decade: int = 0
) -> np.ndarray:
    """The engine's log steps (`train/schedule.py` `log_steps`, the same function): every step
    up to dense_steps, then multiples of every_steps (geometric with that floor when
    rows_per_decade > 0), and the last step."""
    from twoclocks.train.schedule import log_steps

    return log_steps(steps, dense_steps, every_steps, rows_per_decade)


@dataclass(frozen=True)
class Horizon:
    """What a study gives an estimator: steps, log steps, level grids, window, noise, seeds."""

    name: str
    steps: int
    log_steps: np.ndarray
    eps: tuple = DEFAULT_EPS
    eta: tuple = DEFAULT_ETA
    window_logs: int = 5
    noise: float = 0.005
    n_seeds: int = 3
    dtype: str = "float32"


def horizon_from_config(cfg: dict, grid: str | None = None, noise: float = 0.005) -> Horizon:
    """A study's horizon from its loaded YAML (logging, base/grid steps, analysis grids)."""
    from twoclocks.analyze.clocks import DEFAULT_SETTINGS

    base = dict(cfg.get("base", {}))
    if grid is not None:
        base.update(cfg["grids"][grid].get("set", {}))
    lg = cfg.get("logging", {})
    an = {**DEFAULT_SETTINGS, **cfg.get("analysis", {})}
    steps = int(base["steps"])
    grid_steps = log_grid(
        steps,
        int(lg.get("log_dense_steps", 100)),
        int(lg["log_every_steps"]),
        int(lg.get("log_rows_per_decade", 0)),
    )
    return Horizon(
        name=f"{cfg.get('study', '?')}/{grid or 'base'}",
        steps=steps,
        log_steps=grid_steps,
        eps=tuple(an["eps"]),
        eta=tuple(an["eta"]),
        window_logs=int(an["stability_window_logs"]),
        noise=noise,
        n_seeds=len(cfg.get("seeds", [0, 1, 2])),
        dtype=str(base.get("dtype", cfg.get("dtype", "float32"))),
    )


@dataclass(frozen=True)
class Family:
    """A known law: clock ('cls' or 'rep'), truth, curve(t, scale, h) -> noise-free values."""

    name: str
    clock: str
    truth: str
    curve: object
    asymptote: float = 0.0
    known_zero: bool = False
    note: str = ""
    params: dict = field(default_factory=dict)


def _exp_gap(amps, fracs, g_inf=1.0):
    """G = g_inf + sum_i a_i exp(-(t - t_ref)/(f_i H')), H' = the horizon after T_cls."""

    def f(t, s, h):
        tr = T_CLS_FRACTION * h
        u = np.maximum(t - tr, 0.0) / (s * (h - tr))
        return g_inf + sum(a * np.exp(-u / fr) for a, fr in zip(amps, fracs, strict=True))

    return f


def _power_gap(p, g_inf=1.0, amp=4.0):
    def f(t, s, h):
        tr = T_CLS_FRACTION * h * s
        return g_inf + amp * (np.maximum(t, 1.0) / tr) ** (-p)

    return f


def _stretched_gap(a, frac, g_inf=1.0, amp=4.0):
    def f(t, s, h):
        tr = T_CLS_FRACTION * h
        return g_inf + amp * np.exp(-((np.maximum(t - tr, 0.0) / (s * frac * (h - tr))) ** a))

    return f


def _transient_gap(frac):
    base = _exp_gap([4.0], [frac])

    def f(t, s, h):
        tr = T_CLS_FRACTION * h
        return base(t, s, h) + 3.0 * np.exp(-(((t - 0.5 * tr) / (0.2 * tr)) ** 2))

    return f


def _ce(kind: str, **kw):
    """Train CE curves: CE reaches 1e-7 at 60% of the horizon unless a floor or power stops it."""

    def f(t, s, h):
        b = s * 0.6 * h / math.log(CE0 / 1e-7)
        if kind == "exp":
            return CE0 * np.exp(-t / b)
        if kind == "transient":
            tp = 0.1 * h * s
            return CE0 / (1 + np.exp(np.clip((t - tp) / b, -700, 700)))
        if kind == "floor":
            return kw["floor"] + CE0 * np.exp(-t / b)
        if kind == "stretched":
            return CE0 * np.exp(-((t / (b * 1.4)) ** kw["a"]))
        sc = s * h / (CE0 / 1e-5) ** (1 / kw["p"])  # power: CE reaches 1e-5 at the horizon
        return CE0 * (1 + t / sc) ** (-kw["p"])

    return f


def _known_zero_mixtures() -> list[Family]:
    """Sums of two and three rates whose zero is known by construction (the spurious energy, the
    Fourier energy outside the key frequencies): the generic GD tail of a known-zero gap."""
    return [
        Family(
            "mix2_known_zero",
            "rep",
            LOG_LIKE,
            _exp_gap([1.6, 2.4], [1 / 40, 1 / 8], 0.0),
            0.0,
            True,
            note="two rates 5x apart, zero known (spurious energy, off-key Fourier energy)",
        ),
        Family(
            "mix3_known_zero",
            "rep",
            LOG_LIKE,
            _exp_gap([1.3, 1.3, 1.4], [1 / 100, 1 / 20, 1 / 5], 0.0),
            0.0,
            True,
            note="three rates, zero known",
        ),
    ]


def families() -> dict[str, Family]:
    """The known truths of issue #22.7, by name."""
    fam = [
        Family("exp", "rep", LOG_LIKE, _exp_gap([4.0], [1 / 8]), 1.0, note="one rate, reached"),
        Family(
            "exp_slow", "rep", LOG_LIKE, _exp_gap([4.0], [1 / 3]), 1.0, note="one rate, fell 95%"
        ),
        Family(
            "exp_known_zero",
            "rep",
            LOG_LIKE,
            _exp_gap([4.0], [1 / 3], 0.0),
            0.0,
            True,
            note="one rate, zero known by construction",
        ),
        Family(
            "mix2",
            "rep",
            LOG_LIKE,
            _exp_gap([1.6, 2.4], [1 / 40, 1 / 8]),
            1.0,
            note="two rates 5x apart",
        ),
        Family(
            "mix3",
            "rep",
            LOG_LIKE,
            _exp_gap([1.3, 1.3, 1.4], [1 / 100, 1 / 20, 1 / 5]),
            1.0,
            note="three rates",
        ),
        Family(
            "near_log",
            "rep",
            LOG_LIKE,
            _stretched_gap(0.9, 1 / 8),
            1.0,
            note="stretched exponential a = 0.9: slope drifts ~25% over 2 decades",
        ),
        Family(
            "transient",
            "rep",
            LOG_LIKE,
            _transient_gap(1 / 8),
            1.0,
            note="start-up bump before T_cls, then one rate",
        ),
    ]
    fam += _known_zero_mixtures()
    for p in (0.5, 1.0, 2.0):
        fam.append(Family(f"power_p{p:g}", "rep", POLYNOMIAL, _power_gap(p), 1.0,
                          note=f"G_inf + A t^-{p:g}: fell {100 * (1 - 10**-p):.0f}% by the end",
                          params={"k": 1 / p}))  # fmt: skip
        fam.append(Family(f"power_p{p:g}_known_zero", "rep", POLYNOMIAL, _power_gap(p, 0.0), 0.0,
                          True, note=f"A t^-{p:g}, zero known", params={"k": 1 / p}))  # fmt: skip
    fam += [
        Family("cls_exp", "cls", LOG_LIKE, _ce("exp"), note="CE = c exp(-nu t)"),
        Family("cls_transient", "cls", LOG_LIKE, _ce("transient"), note="plateau, then one rate"),
        Family("cls_floor", "cls", LOG_LIKE, _ce("floor", floor=1e-5), note="CE floor 1e-5"),
        Family("cls_near_log", "cls", LOG_LIKE, _ce("stretched", a=1.15),
               note="rate accelerates: stretched exponential a = 1.15"),
        Family("cls_power", "cls", POLYNOMIAL, _ce("power", p=3.0), note="CE ~ t^-3",
               params={"k": 1 / 3}),
    ]  # fmt: skip
    return {f.name: f for f in fam}


def draw(fam: Family, hz: Horizon, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One study's members: (noisy values (S, N), time-scale jitter (S,)) on the log steps."""
    t = np.asarray(hz.log_steps, float)
    scale = np.exp(SEED_JITTER * rng.standard_normal(hz.n_seeds))
    clean = np.stack([fam.curve(t, s, hz.steps) for s in scale])
    noisy = clean * np.exp(hz.noise * rng.standard_normal(clean.shape))
    return noisy, scale


def clean(fam: Family, hz: Horizon, scale: np.ndarray) -> np.ndarray:
    """The members' noise-free curves."""
    t = np.asarray(hz.log_steps, float)
    return np.stack([fam.curve(t, s, hz.steps) for s in scale])


def t_ref_of(fam: Family, hz: Horizon, scale: np.ndarray) -> np.ndarray:
    """T_cls(eps*) of the representation families' members (the time their gap is normalised)."""
    return np.full(len(scale), T_CLS_FRACTION * hz.steps) * (
        scale if fam.name.startswith("power") else 1.0
    )
