"""The clock laws: T_cls logarithmic in 1/eps (Thm 3.5, Prop. 3.6), T_rep polynomial in 1/eta
(Thm 4.8/4.9). Read from the laws stage's decisions (runs/<cell>/laws.json: log-like,
polynomial or INCONCLUSIVE by the effect size of the slope's drift, issue #22) and the study's
calibration (calibration.json); nothing is fitted here. A verdict whose calibration shows more
than 5% confident wrong answers for the families that matter is INCONCLUSIVE. fits.json's AIC
is shown and decides nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from twoclocks.analyze.claims.common import fmt
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context, Scope
from twoclocks.analyze.law_calibration import summary, verdict_allowed
from twoclocks.analyze.laws.decision import INCONCLUSIVE as UNDECIDED
from twoclocks.analyze.laws.decision import LOG_LIKE, POLYNOMIAL
from twoclocks.analyze.results import fit_param, law_decisions, law_records

ANY = Scope("every cell with a law decision of the clock (any model, any optimiser)")


def _finding(r: dict, expect: str, accept: Callable[[dict], bool] | None) -> str:
    """'for', 'against' or 'undecided' for one cell's decision and the law the claim expects."""
    d = r.get("decision")
    if d == UNDECIDED or d not in (LOG_LIKE, POLYNOMIAL):
        return "undecided"
    if d != expect:
        return "against"
    return "for" if accept is None or accept(r) else "against"


def _cell_text(cid: str, r: dict, aic: float) -> str:
    d = r.get("decision")
    text = (
        f"{cid}: {d} (D in [{fmt(r.get('drift_low'))}, {fmt(r.get('drift_high'))}], "
        f"k in [{fmt(r.get('k_low'))}, {fmt(r.get('k_high'))}]"
    )
    if math.isfinite(aic):
        text += f"; AIC power-log {fmt(aic)}, decides nothing"
    text += ")"
    if d == UNDECIDED:
        text += f": {r.get('reason', '')}" + (f"; {r['resolve']}" if r.get("resolve") else "")
    return text


def law_claim(
    ctx: Context,
    s: dict,
    clock: str,
    expect: str,
    cells: list[str] | None = None,
    accept: Callable[[dict], bool] | None = None,
    refine: Callable[[str, str], tuple[str, str]] | None = None,
) -> dict:
    """The judged record of a law claim on `clock` over `cells` (default: the claim's scope).

    PASS when the expected law (`expect`: LOG_LIKE or POLYNOMIAL, and `accept(record)` if given)
    is decided in more than half of the cells, FAIL when the other law is, else INCONCLUSIVE;
    a decided verdict turns INCONCLUSIVE when the study's calibration forbids it. Details carry
    each cell's decision and the calibration next to it. deep_linear's dln_rep_law calls this.
    refine(cell_id, finding) -> (finding, note): a second instrument's say per cell
    (cls_log_law: the margin's linearity, `combine_margin`).
    """
    ids = set(ctx.scope_ids if cells is None else cells)
    recs = {k: r for k, r in law_decisions(ctx.laws, clock).items() if k in ids}
    cal = (ctx.laws or {}).get("calibration")
    allowed, why = verdict_allowed(cal, sorted(recs), clock)
    calib = {"allowed": allowed, "reason": why, "families": summary(cal, sorted(recs), clock)}
    if not recs:
        ev = f"{clock}: no law decision (the laws stage's runs/<cell>/laws.json) for these cells"
        return ctx.record(INCONCLUSIVE, ev, laws={}, calibration=calib)
    margin = float(s["law_drift_margin"])
    used = {round(float(r["margin"]), 12) for r in recs.values() if r.get("margin") is not None}
    aic = {k: fit_param(r, "delta_aic") for k, r in law_records(ctx.fits, clock).items()}
    found = {k: _finding(r, expect, accept) for k, r in recs.items()}
    notes = {}
    if refine is not None:
        for k in found:
            found[k], notes[k] = refine(k, found[k])
    n = len(recs)
    n_for, n_against = (sum(v == w for v in found.values()) for w in ("for", "against"))
    verdict = PASS if n_for > n / 2 else FAIL if n_against > n / 2 else INCONCLUSIVE
    ev = (
        f"{clock}: {expect} (as the claim states) in {n_for}/{n} cells, against in {n_against}, "
        f"INCONCLUSIVE in {n - n_for - n_against} (margin on the slope drift D: {fmt(margin)}); "
        + "; ".join(
            _cell_text(k, r, aic.get(k, math.nan)) + (f" [{notes[k]}]" if notes.get(k) else "")
            for k, r in recs.items()
        )  # fmt: skip
    )
    if used - {round(margin, 12)}:
        verdict = INCONCLUSIVE
        ev = (f"the laws stage decided with margin(s) {sorted(used)}, the claims: section says "
              f"law_drift_margin = {margin}: rerun the laws stage. " + ev)  # fmt: skip
    elif verdict != INCONCLUSIVE and not allowed:
        ev = f"{verdict} by the decisions, but the calibration forbids a verdict ({why}). " + ev
        verdict = INCONCLUSIVE
    details = {
        k: {"decision": r.get("decision"), "finding": found[k], "drift_low": r.get("drift_low"),
            "drift_high": r.get("drift_high"), "k": r.get("k"), "k_low": r.get("k_low"),
            "k_high": r.get("k_high"), "reason": r.get("reason"), "resolve": r.get("resolve"),
            "tail": r.get("tail"), "dropped": r.get("dropped"), "delta_aic": aic.get(k),
            "second": notes.get(k)}
        for k, r in recs.items()
    }  # fmt: skip
    return ctx.record(verdict, ev, laws=details, calibration=calib)


def combine_margin(levels: str, margin: str) -> str:
    """cls_log_law's rule per cell (#24.2, stated before any study was judged): the eps levels
    above the floor (#22's decision: 'for' = log-like, 'against' = polynomial, 'undecided')
    decide, unless Assumption 3.4's margin check contradicts them: log-like levels with a curved
    margin, or polynomial levels with a linear margin, are 'undecided' (the instruments
    disagree). Undecided levels stay undecided whatever the margin says (a linear margin bounds
    T_cls by a log law, Thm 3.5, but does not measure it at these levels). margin: 'linear',
    'curved', 'undecided' or 'absent' (no train_margin_min, or too few usable windows)."""
    if levels == "for":
        return "undecided" if margin == "curved" else "for"
    if levels == "against":
        return "undecided" if margin == "linear" else "against"
    return "undecided"


def judge_cls_law(ctx: Context, s: dict) -> dict:
    from twoclocks.analyze.claims.margin import linearity, margin_runs

    margins = {cid: linearity(runs, s) for cid, (runs, _lr) in margin_runs(ctx, s)[0].items()}

    def refine(cid: str, found: str) -> tuple[str, str]:
        drift, lin = margins.get(cid, ((math.nan,) * 3, "absent"))
        note = f"margin {lin}" + (f" (drift {fmt(drift[0])} [{fmt(drift[1])}, "
                                  f"{fmt(drift[2])}])" if lin != "absent" else "")  # fmt: skip
        return combine_margin(found, lin), note

    return law_claim(ctx, s, "cls", LOG_LIKE, refine=refine)


def judge_rep_law(ctx: Context, s: dict) -> dict:
    lo, hi = (float(v) for v in s["rep_exponent_range"])

    def in_range(r: dict) -> bool:  # the exponent's whole interval inside (Thm 4.8/4.9)
        k_lo, k_hi = r.get("k_low"), r.get("k_high")
        return k_lo is not None and k_hi is not None and lo < k_lo and k_hi < hi

    return law_claim(ctx, s, s["rep_clock"], POLYNOMIAL, accept=in_range)


def _cls_rule(s) -> str:
    return (
        "per cell, the laws stage's decision on the eps levels above the floor (log-like: the "
        f"slope drift D's 95% interval inside +-{s['law_drift_margin']:.3g}; polynomial: above) "
        "combined with margin_linear's linearity of the minimum train margin (Assumption 3.4, "
        f"drift bound {s['margin_slope_drift_max']:g}): for = log-like levels and a margin not "
        "curved; against = polynomial levels and a margin not linear; otherwise undecided (the "
        "two disagree, or the levels are inconclusive). PASS if for in more than half of the "
        "cells, FAIL if against in more than half, else INCONCLUSIVE; INCONCLUSIVE too when the "
        "calibration does not show <= 5% confident wrong answers (95% Clopper-Pearson bound) "
        "for every classifier family"
    )


def _rep_rule(s) -> str:
    lo, hi = s["rep_exponent_range"]
    return (
        f"PASS if, for {s['rep_clock']}, the laws stage decides polynomial (D's interval above "
        f"{s['law_drift_margin']:.3g}, a power tail) with k's whole interval in ({lo:g}, {hi:g}) "
        "in more than half of the cells, FAIL if log-like or k out of range in more than half, "
        "else INCONCLUSIVE; INCONCLUSIVE too when the calibration does not show <= 5% confident "
        "wrong answers (95% Clopper-Pearson bound) for every family of the clock's tail"
    )


SPECS = (
    ClaimSpec(
        id="cls_log_law",
        statement="The classifier clock is logarithmic in 1/eps (its local slope dT/dlog(1/eps) "
        "is constant within the margin).",
        section="Thm 3.5, Prop. 3.6 (T_cls(eps) = O(log 1/eps), eq. 2.1)",
        scope=ANY,
        inputs=("laws", "fits", "trajectories"),
        thresholds=(
            "law_drift_margin",
            "margin_slope_drift_max",
            "cls_eps",
            "margin_min_logs",
            "min_runs",
        ),  # fmt: skip
        rule=_cls_rule,
        judge=judge_cls_law,
        order=40,
    ),
    ClaimSpec(
        id="rep_power_law",
        statement="The representation clock is polynomial in 1/eta with exponent 2 theta - 1 in "
        "(0, 1).",
        section="Thm 4.8/4.9 (T_rep(eta) - T_KL = Theta(eta^-(2 theta - 1)), eq. 2.2)",
        scope=ANY,
        inputs=("laws", "fits"),
        thresholds=("rep_clock", "rep_exponent_range", "law_drift_margin"),
        rule=_rep_rule,
        judge=judge_rep_law,
        order=50,
    ),
)
