"""Law estimators that may say INCONCLUSIVE (issue #22): effect-size law decisions, tail models
with the generic exponential mixture, unidentified asymptotes, floors, the KL exponent where it
means something, and a calibration engine that simulates known truths at a study's horizon.

One estimator per module; none reads a study result. Definitions: docs/laws.md.
"""

from twoclocks.analyze.laws.decision import (
    DRIFT_MARGIN,
    INCONCLUSIVE,
    LOG_LIKE,
    POLYNOMIAL,
    LawDecision,
    decide_law,
)
from twoclocks.analyze.laws.floors import FLOOR_FACTOR, drop_floor_levels

__all__ = [
    "DRIFT_MARGIN",
    "FLOOR_FACTOR",
    "INCONCLUSIVE",
    "LOG_LIKE",
    "POLYNOMIAL",
    "LawDecision",
    "decide_law",
    "drop_floor_levels",
]
