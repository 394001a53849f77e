"""Analysis settings: the defaults of the config's `analysis` section and their resolution.

Read by the clocks and fits stages (and the frozen-gate stage); the schema's `analysis`
section documents the same keys (tests compare). The default reference levels are the
declared clocks' (`clock_specs`).
"""

from __future__ import annotations

from twoclocks.analyze.clock_specs import clock_names, default_reference_levels

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
    # App. F.4's window: a clock fires at the first log from which `stability_window_logs`
    # consecutive logs are past the level (not "until the end"; later exits are `relapse`)
    "stability_window_logs": 5,
    # a fired CE clock (cls, gen_loss) relapses when its CE later exceeds relapse_factor x level:
    # one decade, above the scatter of a converged CE around a level (Adam noise, float32
    # rounding near the floor) yet far below the 1e-7 -> 1e-3 spikes of issue 26; set before
    # looking at any study's results
    "relapse_factor": 10.0,
    # a fired accuracy clock (gen_acc) relapses when test accuracy later falls below
    # level - relapse_margin: 0.05 is ~54 of the 1,081 test pairs of the default task, far more
    # than a few pairs flipping near the decision boundary; set before looking at results
    "relapse_margin": 0.05,
    "acc_threshold": 0.99,
    "test_loss_level": [1e-1, 1e-2],
    "gate_flip_threshold": 1e-3,
    # matrix of the stable-rank gap; None = the gated map (`srank_gated`) where the store logs
    # it (relu_embed), else the store's end-to-end map (`end_to_end_matrix` attr: "A" deep linear)
    "srank_matrix": None,
    "bootstrap_samples": 1000,
    "bootstrap_seed": 0,
    # fewest distinct uncensored post-fit levels for a law fit (the power law has 3 parameters)
    "min_levels": 4,
    "ci_level": 0.95,
    # response of every fit: "step" or "tau"
    "fit_time": "step",
    # reference levels for the separation ratio T_rep / T_cls and the cross-cell scaling fits:
    # each declared clock's `reference_level`
    "reference_levels": default_reference_levels(),
    # shorthands (config schema): override reference_levels["cls"] / every rep_* level
    "cls_ref_eps": None,
    "rep_ref_eta": None,
    "scaling_axes": ["weight_decay", "depth", "train_fraction"],
    # the frozen-gate reduction stage (replay.frozen_gates, issue 14): off by default (about two
    # extra trainings per ReLU cell); it runs to T_gen + reduction_margin * (T_gen - T_cls)
    "reduction": False,
    "reduction_margin": 0.25,
    # simulated studies per known-truth family and horizon in the calibrate stage
    # (analyze.law_calibration); a law verdict needs >= 59 (the Clopper-Pearson veto,
    # analyze.laws.calibrate): 4 keeps tiny studies cheap and their law verdicts INCONCLUSIVE
    "calibration_draws": 4,
    # train every group again under torch's portable CPU kernels and make a verdict that
    # differs INCONCLUSIVE (claims/robust.py, issue 26): off by default (one extra training)
    "numerics_replicate": False,
}

# settings from before these options: rejected with a pointer to what replaced them
_REMOVED = {
    "t_kl_rule": "the free-offset power law is fitted against the log law (fits.fit_law)",
    "t_kl_onset_eta": "the free-offset power law is fitted against the log law (fits.fit_law)",
    "srank_floor": "gaps are measured against a fitted asymptote",
    "srank_reference": "gaps are normalised at T_cls(eps_star)",
    "late_gap_range": "the tail shape is fitted per member (tails.fit_tail)",
    "min_points": "renamed min_levels",
}


def resolve_settings(settings: dict | None) -> dict:
    """DEFAULT_SETTINGS overlaid with the config's `analysis` section (unknown keys rejected).

    Reference levels default to every declared clock's (including clocks registered after
    import); a reference level for an undeclared clock is rejected.
    """
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
    refs = dict(settings.get("reference_levels", {}))
    declared = default_reference_levels()
    if undeclared := sorted(set(refs) - set(declared)):
        raise ValueError(
            f"analysis.reference_levels names undeclared clocks {undeclared}; declared clocks: "
            f"{', '.join(declared)} (analyze/clock_specs.py)"
        )
    out["reference_levels"] = {**declared, **refs}
    if out["cls_ref_eps"] is not None:
        out["reference_levels"]["cls"] = float(out["cls_ref_eps"])
    if out["rep_ref_eta"] is not None:
        rep = clock_names(kind="gap")
        out["reference_levels"].update(dict.fromkeys(rep, float(out["rep_ref_eta"])))
    if int(out["stability_window_logs"]) < 1:
        raise ValueError("stability_window_logs must be >= 1")
    if not 0 < float(out["eps_star"]):
        raise ValueError(f"eps_star must be > 0, got {out['eps_star']!r}")
    return out
