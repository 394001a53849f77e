"""Calibration engine and known-truth tests at the studies' real horizons (issue #22.7, 22.8):
analyze/laws/simulate.py and calibrate.py.

Fast tests: the cadence and grids come from the configs the way the engine builds them; the
verdict gate; the classifier-clock families on a few draws. Slow: every family at the horizons
of config/config.yaml (relu grid) and config/paper.yaml, 20 draws per representation family and
100 per classifier family, fixed seeds, against the issue's targets. IDENTIFIABLE lists, per
horizon, the families the calibration found decidable (>= 80% correct) at 0.5% noise per log;
every other family must be INCONCLUSIVE rather than wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from twoclocks.analyze.laws.calibrate import (
    MAX_WRONG,
    MIN_CORRECT,
    MIN_COVERAGE,
    FamilyResult,
    calibrate,
    verdict_allowed,
)
from twoclocks.analyze.laws.decision import LOG_LIKE
from twoclocks.analyze.laws.simulate import families, horizon_from_config, log_grid

ROOT = Path(__file__).resolve().parents[1]
CLS_FAMILIES = {"cls_exp", "cls_transient", "cls_floor", "cls_near_log", "cls_power"}
# what the calibration found decidable (>= 80% correct, 0.5% noise, seed 0; docs/laws.md)
IDENTIFIABLE = {
    ("config.yaml", "relu"): {"exp_slow", "exp_known_zero", "power_p2_known_zero", *CLS_FAMILIES},
    # paper.yaml logs on the geometric cadence (log_rows_per_decade 100, issue 25): there
    # exp_slow and transient fell to 65% and 60% correct (0% wrong; 95% and 85% on the linear
    # cadence), so they are no longer counted as identifiable at this horizon
    ("paper.yaml", None): {"exp", "exp_known_zero", "power_p2_known_zero", *CLS_FAMILIES},
}


def _horizon(name: str, grid: str | None, noise: float = 0.005):
    cfg = yaml.safe_load((ROOT / "config" / name).read_text())
    return horizon_from_config(cfg, grid, noise)


def test_log_grid_is_the_engines():
    from twoclocks.train.engine import log_steps

    for steps, dense, every in [(5000, 100, 20), (15000, 100, 50), (3000, 100, 20), (7, 3, 2)]:
        assert np.array_equal(log_grid(steps, dense, every), log_steps(steps, dense, every))
    # the geometric cadence (logging.log_rows_per_decade) too
    assert np.array_equal(log_grid(15000, 100, 50, 100), log_steps(15000, 100, 50, 100))
    assert len(log_grid(15000, 100, 50, 100)) < len(log_grid(15000, 100, 50))


def test_horizons_come_from_the_configs():
    paper = _horizon("paper.yaml", None)
    assert paper.steps == 15000 and paper.log_steps[-1] == 15000
    paper_cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["logging"]
    assert np.array_equal(
        paper.log_steps,
        log_grid(15000, 100, paper_cfg["log_every_steps"], paper_cfg["log_rows_per_decade"]),
    )
    assert paper.eta[-1] == 0.005 and paper.n_seeds == 3 and paper.dtype == "float32"
    quick = _horizon("config.yaml", "relu")
    assert quick.steps == 5000 and np.diff(quick.log_steps)[-1] == 20
    linear = _horizon("config.yaml", "linear")
    linear_set = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["grids"]["linear"]
    assert linear.steps == linear_set["set"]["steps"] != quick.steps  # the grid's own horizon


def test_verdict_gate_forbids_a_verdict_where_a_family_that_matters_is_confidently_wrong():
    def fr(name, wrong, draws=60):
        return FamilyResult(name, "rep", LOG_LIKE, draws, 0.5, 0.5 - wrong, wrong, 1.0, draws)

    res = {"a": fr("a", 0.0), "b": fr("b", 0.10), "c": fr("c", 0.0, 20), "d": fr("d", 0.05)}
    ok, why = verdict_allowed(res, ["a"])
    assert ok and "largest 95% Clopper-Pearson bound 4.9%" in why
    ok, why = verdict_allowed(res)
    assert not ok and "b (6/60 wrong" in why
    ok, why = verdict_allowed(res, ["c"])  # 0/20: the rate is only shown below 14%
    assert not ok and "needs >= 59 draws" in why
    assert not verdict_allowed(res, ["d"])[0]  # 3/60 = 5% observed, but the bound is 13%
    assert not verdict_allowed(res, ["e"])[0]


def test_classifier_families_at_the_quick_horizon():
    res = calibrate(_horizon("config.yaml", "relu"), ["cls_exp", "cls_floor", "cls_power"], 3)
    for r in res.values():
        assert r.wrong == 0.0, r
        assert r.correct == 1.0, r
        assert r.coverage >= 2 / 3


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown families"):
        calibrate(_horizon("paper.yaml", None), ["nope"], 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,grid,noise",
    [("config.yaml", "relu", 0.005), ("paper.yaml", None, 0.005), ("paper.yaml", None, 0.02)],
)
def test_known_truths_at_real_horizons(config, grid, noise):
    hz = _horizon(config, grid, noise)
    fams = families()
    # classifier families are cheap (no tail fits): 100 draws measure coverage to ~2%
    res = calibrate(hz, [n for n, f in fams.items() if f.clock == "rep"], 20)
    res.update(calibrate(hz, [n for n, f in fams.items() if f.clock == "cls"], 100))
    assert set(res) == set(fams)
    for name, r in res.items():
        assert r.wrong <= MAX_WRONG, (name, r.decisions)
        if r.n_interval >= 10:
            assert r.coverage >= MIN_COVERAGE, (name, r.coverage)
        if noise == 0.005 and name in IDENTIFIABLE[(config, grid)]:
            assert r.correct >= MIN_CORRECT, (name, r.decisions)


# The long horizons at the noise the studies measured (their calibration.json, median over
# cells): config/gd.yaml's 30,000 steps (gap noise 3.5e-7 per log) and paper.yaml's 25,000-step
# deep-linear grid (4e-5). At such noise the intervals are narrow and a misshapen tail model's
# asymptote lies many SEs from the truth: near_log's drift interval covered 0.22 and 0.50 of
# draws before the plausible range carried the nested models' step (asymptote.nested_step).
LONG = {
    ("gd.yaml", None, 3.5e-7): {"exp", "exp_slow", "near_log", "transient", "power_p2"},
    ("paper.yaml", "dln_knob_gd", 4e-5): {"exp", "transient", "power_p2", "mix2_known_zero"},
}


@pytest.mark.slow
@pytest.mark.parametrize("config,grid,noise", list(LONG))
def test_known_truths_at_long_horizons_and_measured_noise(config, grid, noise):
    hz = _horizon(config, grid, noise)
    assert hz.steps >= 25_000
    rep = [n for n, f in families().items() if f.clock == "rep"]
    res = calibrate(hz, rep, 20, workers=2)
    for name, r in res.items():
        assert r.wrong <= MAX_WRONG, (name, r.decisions)
        if r.n_interval >= 10:
            assert r.coverage >= MIN_COVERAGE, (name, r.coverage, r.n_interval)
        if name in LONG[(config, grid, noise)]:
            assert r.correct >= MIN_CORRECT, (name, r.decisions)


def test_known_zero_mixtures_are_never_confidently_wrong_at_the_quick_horizon():
    """Two and three rates with the zero known (spurious energy, off-key Fourier energy): the
    clock is asymptotically logarithmic, its slope still drifting over these levels; the
    estimator may say log-like or INCONCLUSIVE, never polynomial. They veto known-zero clocks."""
    from twoclocks.analyze.law_calibration import REP_KNOWN

    names = ["mix2_known_zero", "mix3_known_zero"]
    assert set(names) <= set(REP_KNOWN)
    fams = families()
    for n in names:
        assert fams[n].known_zero and fams[n].asymptote == 0.0 and fams[n].truth == LOG_LIKE
    res = calibrate(_horizon("config.yaml", "relu"), names, 6)
    for r in res.values():
        assert r.wrong == 0.0, (r.family, r.decisions)
        assert r.draws == 6 and r.wrong_upper > MAX_WRONG  # 6 draws cannot show <= 5%


def test_clopper_pearson_bound_and_the_draws_it_needs():
    from twoclocks.analyze.laws.calibrate import MIN_DRAWS, wrong_upper

    assert MIN_DRAWS == 59
    assert wrong_upper(0, 59) <= MAX_WRONG < wrong_upper(0, 58)
    assert abs(wrong_upper(0, 20) - (1 - 0.05 ** (1 / 20))) < 1e-12
    assert wrong_upper(1, 93) <= MAX_WRONG < wrong_upper(1, 92)
    assert wrong_upper(4, 4) == 1.0
