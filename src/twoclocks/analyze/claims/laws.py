"""The clock laws: T_cls logarithmic in 1/eps (Thm 3.5, Prop. 3.6), T_rep polynomial in 1/eta
(Thm 4.8/4.9). Read from fits.json (`fits.fit_law` records); nothing is fitted here."""

from __future__ import annotations

from twoclocks.analyze.claims.common import fmt, interval, not_ok
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context, Scope
from twoclocks.analyze.results import fit_param, law_records, nanmedian

ANY = Scope("every cell with a law fit of the clock (any model, any optimiser)")


def judge_cls_law(ctx: Context, s: dict) -> dict:
    recs = law_records(ctx.fits, "cls")
    ok = {k: r for k, r in recs.items() if r.get("status") == "ok"}
    if not ok:
        return ctx.record(INCONCLUSIVE, not_ok(recs, "cls"))
    logs = [k for k, r in ok.items() if r.get("preferred") == "log"]
    verdict = PASS if len(logs) > len(ok) / 2 else FAIL
    slopes = [fit_param(r, "b") for r in ok.values()]
    ev = (
        f"log law chosen by AIC in {len(logs)}/{len(ok)} cells with an ok fit "
        f"({len(recs) - len(ok)} insufficient); median delta-AIC power-log = "
        f"{fmt(nanmedian([fit_param(r, 'delta_aic') for r in ok.values()]))}; median slope "
        f"b = dT/dlog(1/eps) = {fmt(nanmedian(slopes))} steps (1/nu); per cell b: "
        + ", ".join(f"{k}: {interval(r, 'b')}" for k, r in ok.items())
    )
    details = {k: {"law": r.get("preferred"), "b": fit_param(r, "b"),
                   "delta_aic": fit_param(r, "delta_aic")} for k, r in recs.items()}  # fmt: skip
    return ctx.record(verdict, ev, fits=details)


def judge_rep_law(ctx: Context, s: dict) -> dict:
    clock = s["rep_clock"]
    recs = law_records(ctx.fits, clock)
    ok = {k: r for k, r in recs.items() if r.get("status") == "ok"}
    if not ok:
        return ctx.record(INCONCLUSIVE, not_ok(recs, clock))
    lo, hi = (float(v) for v in s["rep_exponent_range"])
    kinds = {}
    for k, r in ok.items():
        if r.get("preferred") == "log":
            kinds[k] = "logarithmic"
        elif lo < fit_param(r, "k", "ci_low") and fit_param(r, "k", "ci_high") < hi:
            kinds[k] = "power, k in range"
        else:
            kinds[k] = "power, k out of range"
    n_in = sum(v == "power, k in range" for v in kinds.values())
    n_log = sum(v == "logarithmic" for v in kinds.values())
    verdict = PASS if n_in > len(ok) / 2 else FAIL
    per_cell = ", ".join(
        f"{k}: {kinds[k]} (" + (f"b = {interval(r, 'b')}" if kinds[k] == "logarithmic"
                                else f"k = {interval(r, 'k')}") + ")"
        for k, r in ok.items()
    )  # fmt: skip
    ev = (
        f"{clock}: power law with k (whole interval) in ({lo}, {hi}) in {n_in}/{len(ok)} cells "
        f"with an ok fit, logarithmic (exponential tail, theta = 1/2) in {n_log}, "
        f"{len(recs) - len(ok)} insufficient; {per_cell}"
    )
    details = {k: {"law": r.get("preferred"), "status": r.get("status"),
                   "k": fit_param(r, "k"), "b": fit_param(r, "b"),
                   "finding": kinds.get(k, r.get("reason"))}
               for k, r in recs.items()}  # fmt: skip
    return ctx.record(verdict, ev, fits=details)


def _rep_rule(s) -> str:
    lo, hi = s["rep_exponent_range"]
    return (
        f"PASS if, for {s['rep_clock']}, the power law with k's whole interval "
        f"in ({lo:g}, {hi:g}) is chosen in more than half of the cells with an ok law fit"
    )


SPECS = (
    ClaimSpec(
        id="cls_log_law",
        statement="The classifier clock is logarithmic in 1/eps (log law preferred over a power "
        "law).",
        section="Thm 3.5, Prop. 3.6 (T_cls(eps) = O(log 1/eps), eq. 2.1)",
        scope=ANY,
        inputs=("fits",),
        thresholds=(),
        rule=lambda s: (
            "PASS if AIC prefers the log law T = a + b log(1/eps) in more than half "
            "of the cells with an ok law fit"
        ),
        judge=judge_cls_law,
        order=40,
    ),
    ClaimSpec(
        id="rep_power_law",
        statement="The representation clock is polynomial in 1/eta with exponent 2 theta - 1 in "
        "(0, 1).",
        section="Thm 4.8/4.9 (T_rep(eta) - T_KL = Theta(eta^-(2 theta - 1)), eq. 2.2)",
        scope=ANY,
        inputs=("fits",),
        thresholds=("rep_clock", "rep_exponent_range"),
        rule=_rep_rule,
        judge=judge_rep_law,
        order=50,
    ),
)
