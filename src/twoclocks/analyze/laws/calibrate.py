"""Calibration: the estimators run on known truths at a study's own horizon (issue #22.7).

Per family: the share of correct decisions, of INCONCLUSIVE and of confident wrong ones (a
decision that is neither the truth nor INCONCLUSIVE), and the coverage of the nominal 95% drift
interval (over the draws that report a finite one) of the pseudo-true drift: the same estimator
on the members' noise-free curves, at the true asymptote and the levels the decision used.
A family is identifiable at a horizon when at least MIN_CORRECT of its draws are decided right;
a law verdict is allowed only where no family that matters has more than MAX_WRONG confident
wrong answers.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from twoclocks.analyze.clocks import stable_crossing
from twoclocks.analyze.laws.asymptote import rel_noise_at_levels, rep_law, rep_times
from twoclocks.analyze.laws.classifier import cls_law
from twoclocks.analyze.laws.decision import INCONCLUSIVE, decide_law
from twoclocks.analyze.laws.simulate import Family, Horizon, clean, draw, families, t_ref_of

# issue #22 targets (pre-registered): at most 5% confident wrong in every family that matters,
# >= 90% coverage of nominal 95% intervals, >= 80% correct where a family is identifiable
MAX_WRONG, MIN_COVERAGE, MIN_CORRECT = 0.05, 0.90, 0.80


@dataclass
class FamilyResult:
    """Shares over the draws of one family at one horizon."""

    family: str
    clock: str
    truth: str
    draws: int
    correct: float
    inconclusive: float
    wrong: float
    coverage: float
    n_interval: int
    decisions: dict = field(default_factory=dict)
    note: str = ""

    @property
    def identifiable(self) -> bool:
        return self.correct >= MIN_CORRECT

    def as_dict(self) -> dict:
        return {**self.__dict__, "identifiable": self.identifiable}


def _one_draw(
    fam: Family, hz: Horizon, rng: np.random.Generator
) -> tuple[str, float, float, float]:
    """(decision, drift_low, drift_high, pseudo-true drift) for one simulated study."""
    steps = np.asarray(hz.log_steps, float)
    noisy, scale = draw(fam, hz, rng)
    truth_vals = clean(fam, hz, scale)
    if fam.clock == "cls":
        law = cls_law(steps, noisy, np.asarray(hz.eps), hz.window_logs, hz.dtype)
        lv = np.asarray(law.levels, float)
        t_true = stable_crossing(truth_vals, steps, steps, lv, hz.window_logs)[0]
        rel = hz.noise
    else:
        t_ref = t_ref_of(fam, hz, scale)
        kz = 0.0 if fam.known_zero else None
        law = rep_law(steps, noisy, t_ref, np.asarray(hz.eta), hz.window_logs, 0.0, kz).law
        lv = np.asarray(law.levels, float)
        g_inf = np.full(len(scale), fam.asymptote)
        t_true = rep_times(steps, truth_vals, t_ref, g_inf, lv, hz.window_logs)
        noise = np.full(len(scale), hz.noise)
        rel = rel_noise_at_levels(truth_vals, t_ref, steps, g_inf, lv, noise)
    d_true = decide_law(lv, t_true, rel_noise=rel).drift if len(lv) else math.nan
    return law.decision, law.drift_low, law.drift_high, d_true


def run_family(fam: Family, hz: Horizon, n_draws: int, seed: int = 0) -> FamilyResult:
    """Run the family's estimator on n_draws simulated studies (seeded: same result each time)."""
    rng = np.random.default_rng([seed, zlib.crc32(fam.name.encode())])  # stable across runs
    rows = [_one_draw(fam, hz, rng) for _ in range(n_draws)]
    dec = Counter(r[0] for r in rows)
    finite = [
        r for r in rows if math.isfinite(r[1]) and math.isfinite(r[2]) and math.isfinite(r[3])
    ]
    cov = np.mean([lo <= d <= hi for _, lo, hi, d in finite]) if finite else math.nan
    wrong = sum(v for k, v in dec.items() if k not in (fam.truth, INCONCLUSIVE))
    return FamilyResult(
        family=fam.name,
        clock=fam.clock,
        truth=fam.truth,
        draws=n_draws,
        correct=dec[fam.truth] / n_draws,
        inconclusive=dec[INCONCLUSIVE] / n_draws,
        wrong=wrong / n_draws,
        coverage=float(cov),
        n_interval=len(finite),
        decisions=dict(dec),
        note=fam.note,
    )


def _job(args) -> FamilyResult:
    name, hz, n_draws, seed = args
    return run_family(families()[name], hz, n_draws, seed)


def calibrate(
    hz: Horizon, names=None, n_draws: int = 20, seed: int = 0, workers: int = 1
) -> dict[str, FamilyResult]:
    """Every family (or `names`) at horizon hz; workers > 1 runs families in processes."""
    fams = families()
    names = list(names) if names is not None else list(fams)
    unknown = sorted(set(names) - set(fams))
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {sorted(fams)}")
    jobs = [(n, hz, n_draws, seed) for n in names]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            res = list(ex.map(_job, jobs))
    else:
        res = [_job(j) for j in jobs]
    return {r.family: r for r in res}


def verdict_allowed(results: dict[str, FamilyResult], matters=None) -> tuple[bool, str]:
    """A law verdict is allowed only if no family that matters has > MAX_WRONG confident wrong
    answers at this horizon; the reason names the families that forbid it."""
    names = list(matters) if matters is not None else list(results)
    missing = sorted(set(names) - set(results))
    if missing:
        return False, f"no calibration for {missing}"
    bad = [n for n in names if results[n].wrong > MAX_WRONG]
    if bad:
        return False, "confident wrong > {:.0%} for {}".format(
            MAX_WRONG, ", ".join(f"{n} ({results[n].wrong:.0%})" for n in bad)
        )
    return True, f"confident wrong <= {MAX_WRONG:.0%} in {len(names)} families"


def main(argv=None) -> None:
    """`python -m twoclocks.analyze.laws CONFIG [--grid G] [--noise S] [--draws N]`:
    the calibration of a study's horizon, as JSON on stdout."""
    import argparse
    import json

    import yaml

    from twoclocks.analyze.laws.simulate import horizon_from_config

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--grid", default=None)
    ap.add_argument("--noise", type=float, default=0.005)
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--families", default=None, help="comma-separated names (default: all)")
    a = ap.parse_args(argv)
    with open(a.config) as fh:
        hz = horizon_from_config(yaml.safe_load(fh), a.grid, a.noise)
    names = a.families.split(",") if a.families else None
    res = calibrate(hz, names, a.draws, a.seed, a.workers)
    out = {
        "horizon": {"name": hz.name, "steps": hz.steps, "n_logs": len(hz.log_steps),
                    "noise": hz.noise, "n_seeds": hz.n_seeds, "draws": a.draws},
        "families": {k: v.as_dict() for k, v in res.items()},
    }  # fmt: skip
    print(json.dumps(out, indent=1))
