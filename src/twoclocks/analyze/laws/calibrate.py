"""Calibration: the estimators run on known truths at a study's own horizon (issue #22.7).

Per family: the share of correct decisions, of INCONCLUSIVE and of confident wrong ones (a
decision that is neither the truth nor INCONCLUSIVE), and the coverage of the nominal 95% drift
interval (over the draws that report a finite one) of the pseudo-true drift: the same estimator
on the members' noise-free curves, at the true asymptote and the levels the decision used.
A family is identifiable at a horizon when at least MIN_CORRECT of its draws are decided right.

The veto rule (pre-registered, set before any study's verdicts were read): with k confident
wrong answers in n draws of a family, its rate is bounded above by the one-sided 95% Clopper-
Pearson bound U(k, n) (the p with P(Binomial(n, p) <= k) = 0.05; 1 - 0.05^(1/n) when k = 0). A
law verdict is allowed only where U(k, n) <= MAX_WRONG for every family that matters: the
calibration must *show* a confident-wrong rate of at most 5%, which needs n >= MIN_DRAWS = 59
draws (0 wrong); fewer draws, or one wrong in fewer than 93, leave the verdict INCONCLUSIVE.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta

from twoclocks.analyze.clocks import stable_crossing
from twoclocks.analyze.laws.asymptote import rel_noise_at_levels, rep_law, rep_times
from twoclocks.analyze.laws.classifier import cls_law
from twoclocks.analyze.laws.decision import INCONCLUSIVE, decide_law
from twoclocks.analyze.laws.simulate import Family, Horizon, clean, draw, families, t_ref_of

# issue #22 targets (pre-registered): at most 5% confident wrong in every family that matters,
# >= 90% coverage of nominal 95% intervals, >= 80% correct where a family is identifiable
MAX_WRONG, MIN_COVERAGE, MIN_CORRECT = 0.05, 0.90, 0.80
BOUND_LEVEL = 0.95  # one-sided level of the Clopper-Pearson upper bound on the wrong rate


def wrong_upper(k: int, n: int, level: float = BOUND_LEVEL) -> float:
    """One-sided Clopper-Pearson upper bound on a binomial rate from k events in n draws."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    return float(beta.ppf(level, k + 1, n - k))


MIN_DRAWS = next(n for n in range(1, 1000) if wrong_upper(0, n) <= MAX_WRONG)  # 59


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

    @property
    def n_wrong(self) -> int:
        return int(round(self.wrong * self.draws))

    @property
    def wrong_upper(self) -> float:
        """One-sided 95% Clopper-Pearson upper bound on the confident-wrong rate."""
        return wrong_upper(self.n_wrong, self.draws)

    def as_dict(self) -> dict:
        return {**self.__dict__, "identifiable": self.identifiable, "n_wrong": self.n_wrong,
                "wrong_upper": self.wrong_upper}  # fmt: skip


DERIVED = ("identifiable", "n_wrong", "wrong_upper")  # as_dict keys that are not fields


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
    return calibrate_many([(hz, names)], n_draws, seed, workers)[0]


def calibrate_many(
    tasks: list[tuple[Horizon, list[str] | None]], n_draws: int, seed: int = 0, workers: int = 1
) -> list[dict[str, FamilyResult]]:
    """`calibrate` for several (horizon, families) tasks through one process pool.

    Every (horizon, family) job keeps its own seeded draws, so results equal per-task calls;
    one pool for all of them, longest horizons first, keeps both workers busy to the end
    (one pool per horizon idled a worker while the last, slowest family ran)."""
    fams = families()
    jobs = []
    for i, (hz, names) in enumerate(tasks):
        names = list(names) if names is not None else list(fams)
        unknown = sorted(set(names) - set(fams))
        if unknown:
            raise ValueError(f"unknown families {unknown}; known: {sorted(fams)}")
        jobs += [(i, (n, hz, n_draws, seed)) for n in names]
    # expected cost ~ log rows x (rep families fit tails; cls ones a crossing): biggest first
    order = sorted(
        jobs, key=lambda j: -len(j[1][1].log_steps) * (1 if j[1][0][:4] == "cls_" else 4)
    )
    if workers > 1 and len(order) > 1:
        with ProcessPoolExecutor(min(workers, len(order))) as ex:
            res = list(ex.map(_job, [j for _, j in order]))
    else:
        res = [_job(j) for _, j in order]
    out: list[dict[str, FamilyResult]] = [{} for _ in tasks]
    by_job = {(i, j[0]): r for (i, j), r in zip(order, res, strict=True)}
    for i, j in jobs:  # task order, then family order, as the caller listed them
        out[i][j[0]] = by_job[(i, j[0])]
    return out


def verdict_allowed(results: dict[str, FamilyResult], matters=None) -> tuple[bool, str]:
    """A law verdict is allowed only if every family that matters has a one-sided 95% Clopper-
    Pearson upper bound on its confident-wrong rate <= MAX_WRONG at this horizon (module
    docstring); the reason names the families that forbid it, with k/n and the bound."""
    names = list(matters) if matters is not None else list(results)
    missing = sorted(set(names) - set(results))
    if missing:
        return False, f"no calibration for {missing}"
    bad = [n for n in names if results[n].wrong_upper > MAX_WRONG]
    if bad:
        few = [n for n in bad if results[n].n_wrong == 0]
        why = "confident-wrong rate not shown <= {:.0%} (95% Clopper-Pearson bound) for {}".format(
            MAX_WRONG, ", ".join(
                f"{n} ({results[n].n_wrong}/{results[n].draws} wrong, bound "
                f"{results[n].wrong_upper:.0%})" for n in bad))  # fmt: skip
        if few:
            why += f"; 0 wrong needs >= {MIN_DRAWS} draws (analysis.calibration_draws)"
        return False, why
    worst = max(results[n].wrong_upper for n in names) if names else 0.0
    return True, (f"confident-wrong rate <= {MAX_WRONG:.0%} shown in {len(names)} families "
                  f"(largest 95% Clopper-Pearson bound {worst:.1%})")  # fmt: skip


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
