"""Machine-checked verdicts on the paper's claims (arXiv 2606.05863), read from the study's tables.

Each claim is a declared `ClaimSpec` (spec.py) in its own module: the paper's statement and
where it stands, its scope (models, optimisers, cells), the tables it reads, its rule, its
thresholds (keys of the config's `claims:` section, defaults and reasons in the schema) and its
outcomes: PASS / FAIL / INCONCLUSIVE for claims, MET / NOT MET (/ INCONCLUSIVE) for
preconditions, OUT OF SCOPE for the cells a statement does not cover (and as the verdict of a
claim none of the study's cells falls under: it is not judged). A new claim is one module
here with ``SPECS`` plus its schema entries; the package registers every module on import.

Law claims read fits.json and never fit; snapshot and model measurements come from the replay
stage's measures table. Censored clocks (never fired) are counted and reported, never dropped.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Mapping
from typing import Any

import pandas as pd
import xarray as xr

from twoclocks.analyze.claims.spec import (
    DEFAULTS,
    FAIL,
    INCONCLUSIVE,
    MET,
    NOT_MET,
    OUT_OF_SCOPE,
    OUTCOMES,
    PASS,
    RECORD_KEYS,
    ClaimSpec,
    Context,
    Scope,
    claim_rules,
    get,
    register,
    register_module,
    resolve_claim_settings,
    specs,
    unregister,
)
from twoclocks.analyze.results import CLOCK_TABLE_COLUMNS, cell_datasets, cell_table
from twoclocks.provenance import json_safe
from twoclocks.replay.table import empty_measures, frame, reduction_rows

_NOT_CLAIMS = {"spec", "common", "robust"}  # modules of the package that declare no claim


def _register_package() -> None:
    """Import every claim module of this package and register its SPECS (module order is
    irrelevant: the report order is each spec's `order`)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name not in _NOT_CLAIMS:
            register_module(importlib.import_module(f"{__name__}.{info.name}"))


_register_package()


def evaluate(
    study: Any,
    clocks: pd.DataFrame | None,
    fits: dict | None,
    settings: dict | None = None,
    reductions: Mapping[str, xr.Dataset] | None = None,
    measures: pd.DataFrame | None = None,
    laws: Mapping[str, Any] | None = None,
) -> list[dict]:
    """Judge every registered claim; full records for claims.json and the report.

    `laws`: the laws and calibrate stages' tables (`results.read_laws`), read by the law claims.

    `measures`: the replay stage's table (runs/<cell>/measures.parquet, concatenated);
    `reductions` (cell_id -> the reduce stage's store) are folded into it when given. With
    reduction rows (analysis.reduction on) the `relu_reduction` claim is added.

    Each record: the judged `id`, `claim` (the statement), `verdict`, `evidence`, `details`,
    and from the spec `kind`, `section`, `scope` (its text and the cells in and out of it),
    `inputs`, `rule` (thresholds filled in), `thresholds` (the values used), `outcomes` and
    `reason` (why this verdict: the evidence for INCONCLUSIVE, else the rule that decided).
    """
    s = resolve_claim_settings(settings)
    clocks = clocks if clocks is not None else pd.DataFrame(columns=sorted(CLOCK_TABLE_COLUMNS))
    measures = measures if measures is not None else empty_measures()
    if reductions is not None:  # the reduce stage's stores, not yet folded into the measures
        rows = [r for cid, red in sorted(reductions.items()) for r in reduction_rows(cid, red)]
        measures = pd.concat([measures, frame(rows)], ignore_index=True)
    reduction = reductions is not None or measures["measure"].str.startswith("reduction_").any()
    datasets = cell_datasets(study)
    cells = cell_table(study, clocks)
    if "model" not in cells:
        cells["model"] = "relu_embed"
    out = []
    for spec in specs():
        ctx = Context(spec, cells, clocks, fits, measures, datasets, bool(reduction), laws)
        if spec.applies is not None and not spec.applies(ctx):
            continue
        if spec.scope.restricts and not ctx.scope_ids and len(cells):
            rec = ctx.record(OUT_OF_SCOPE, spec.scope.outside_evidence(cells))
        else:
            rec = spec.judge(ctx, s)
        out.append({**rec, **_described(spec, ctx, s, rec)})
    return out


def _described(spec: ClaimSpec, ctx: Context, s: dict, rec: dict) -> dict:
    """What claims.json states about a judged claim besides its verdict and evidence."""
    inside = ctx.scope_ids
    outside = [str(c) for c in ctx.cells.get("cell_id", []) if str(c) not in set(inside)]
    rule = spec.rule(s)
    decided = rec["verdict"] not in (INCONCLUSIVE, OUT_OF_SCOPE)
    return {
        "kind": spec.kind,
        "section": spec.section,
        "scope": {**spec.scope.describe(), "cells": inside, OUT_OF_SCOPE: outside},
        "inputs": list(spec.inputs),
        "rule": rule,
        "thresholds": {k: s[k] for k in spec.thresholds},
        "outcomes": list(spec.outcomes),
        "reason": (f"{rec['verdict']} by the rule: {rule}" if decided else rec["evidence"]),
    }


def evaluate_claims(
    study_ds_or_trajectories: Any,
    clocks: pd.DataFrame | None,
    fits: dict | None,
    settings: dict | None = None,
    reductions: Mapping[str, xr.Dataset] | None = None,
    measures: pd.DataFrame | None = None,
) -> list[dict]:
    """The judged part of every claim: {id, claim, verdict, evidence, details} (see `evaluate`
    for the full records that claims.json carries).

    `study_ds_or_trajectories`: anything `results.cell_datasets` accepts. `fits`: fits.json
    content (the only source of law fits). `settings`: the config's `claims:` section (defaults
    fill missing keys; unknown keys raise). `reductions`: cell_id -> the frozen-gate stage's
    output (`analysis.reduction` on); given, the `relu_reduction` claim is added. `measures`:
    the replay stage's table (gate drift, displacements, Fourier spectra per snapshot).
    """
    full = evaluate(study_ds_or_trajectories, clocks, fits, settings, reductions, measures)
    return [{k: r[k] for k in RECORD_KEYS} for r in full]


def claims_stage(
    claims_path,
    study: Any,
    clocks: pd.DataFrame | None,
    fits: dict | None,
    settings: dict | None = None,
    *,
    measures: pd.DataFrame | None = None,
    reductions: Mapping[str, xr.Dataset] | None = None,
    record: Mapping[str, Any] | None = None,
    laws: Mapping[str, Any] | None = None,
    replicate: Mapping[str, Any] | None = None,
) -> list[dict]:
    """The claims stage (the report rule and `python -m twoclocks.analyze` both call it): judge
    every claim on the study's tables and write claims.json as ``{**record, "claims": [...]}``;
    returns the full records.

    `replicate` (analysis.numerics_replicate): the same study trained under a second CPU code
    path, as {study, clocks, fits, measures}; its claims are judged too and merged by
    `robust.merge_replicate` (a verdict that differs becomes INCONCLUSIVE)."""
    from pathlib import Path

    from twoclocks.analyze.claims import robust

    claims = evaluate(study, clocks, fits, settings, reductions, measures, laws)
    record = dict(record or {})
    if replicate is not None:
        r = replicate
        there_claims = evaluate(r["study"], r["clocks"], r["fits"], settings, None, r["measures"])
        # the replicate has no laws stage: its law claims are not judged there (kept as here)
        there_claims = [c for c in there_claims if "laws" not in get(c["id"]).inputs]
        here = robust.capability_of(cell_datasets(study))
        there = robust.capability_of(cell_datasets(r["study"]))
        claims = robust.merge_replicate(claims, there_claims, here, there)
        record["numerics_replicate"] = robust.replicate_summary(claims, here, there)
    Path(claims_path).write_text(claims_to_json({**record, "claims": claims}))
    return claims


def claims_to_json(claims: list[dict] | dict) -> str:
    """Deterministic JSON for claims.json (NaN/inf written as null); a list or a record."""
    return json.dumps(json_safe(claims), indent=2, sort_keys=False, allow_nan=False) + "\n"


# re-exported for older notebooks and tests; library code reads through analyze.results
from twoclocks.analyze.claims.deep_linear import DLN_CLOCK, spurious_ratios  # noqa: E402
from twoclocks.analyze.claims.reduction import reduction_runs  # noqa: E402
from twoclocks.analyze.results import (  # noqa: E402
    CLS_EPS,
    FOURIER_KEEP,
    GEN_ACC_LEVEL,
    REP_CLOCK,
    SEPARATION_MIN_RATIO,
    SRANK_VARIABLES,
    _json,
    clock_times,
    gen_clock,
    law_fits,
    law_records,
    pick_level,
    relu_runs,
    separation_ratios,
    srank_candidates,
    srank_matrix,
    strictest_level,
    usable,
)

_relu_runs = relu_runs  # the old private name (tests/test_clocks.py)

__all__ = [
    "CLS_EPS", "DEFAULTS", "DLN_CLOCK", "FAIL", "FOURIER_KEEP", "GEN_ACC_LEVEL", "INCONCLUSIVE",
    "MET", "NOT_MET", "OUTCOMES", "OUT_OF_SCOPE", "PASS", "REP_CLOCK", "SEPARATION_MIN_RATIO",
    "SRANK_VARIABLES", "ClaimSpec", "Context", "Scope", "_json", "cell_datasets", "cell_table",
    "claim_rules", "claims_stage", "claims_to_json", "clock_times", "evaluate", "evaluate_claims",
    "gen_clock", "get", "law_fits", "law_records", "pick_level",
    "reduction_runs", "register", "relu_runs", "register_module",
    "resolve_claim_settings", "separation_ratios", "specs", "spurious_ratios",
    "srank_candidates", "srank_matrix", "strictest_level", "unregister", "usable",
]  # fmt: skip
