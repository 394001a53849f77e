"""Law estimators that may say INCONCLUSIVE (issue #22): effect-size law decisions, tail models
with the generic exponential mixture, unidentified asymptotes, floors, the KL exponent where it
means something, and a calibration engine that simulates known truths at a study's horizon.

One estimator per module; none reads a study result. Definitions: docs/laws.md.
"""

from twoclocks.analyze.laws.asymptote import RepLaw, rep_law
from twoclocks.analyze.laws.calibrate import (
    FamilyResult,
    calibrate,
    calibrate_many,
    verdict_allowed,
)
from twoclocks.analyze.laws.classifier import cls_law, measure_noise
from twoclocks.analyze.laws.decision import (
    DRIFT_MARGIN,
    INCONCLUSIVE,
    LOG_LIKE,
    POLYNOMIAL,
    LawDecision,
    decide_law,
)
from twoclocks.analyze.laws.floors import FLOOR_FACTOR, drop_floor_levels
from twoclocks.analyze.laws.kl import KLResult, kl_exponent
from twoclocks.analyze.laws.simulate import Horizon, families, horizon_from_config
from twoclocks.analyze.laws.tails import TailFit, decide_tails, fit_tail

__all__ = [
    "DRIFT_MARGIN",
    "FLOOR_FACTOR",
    "INCONCLUSIVE",
    "LOG_LIKE",
    "POLYNOMIAL",
    "FamilyResult",
    "Horizon",
    "KLResult",
    "LawDecision",
    "RepLaw",
    "TailFit",
    "calibrate",
    "calibrate_many",
    "cls_law",
    "decide_law",
    "decide_tails",
    "drop_floor_levels",
    "families",
    "fit_tail",
    "horizon_from_config",
    "kl_exponent",
    "measure_noise",
    "rep_law",
    "verdict_allowed",
]
