"""What a claim is: a declared spec (statement, scope, inputs, rule, thresholds, outcomes) and
the registry that finds it by id.

A claim module declares ``SPECS = (ClaimSpec(...), ...)``; the package registers every module's
specs on import (`register_module`). Thresholds are keys of the config's `claims:` section:
their defaults and the reason for each value live in the schema (workflow/schemas), read here,
so a new claim is its module plus its schema entry. The judge reads tables only (`Context`):
the cell table, clocks, fits.json, the replay stage's measures and the logged trajectories.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pandas as pd

from twoclocks.config import load_schema

# --- outcome vocabulary ------------------------------------------------------------------------
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
MET, NOT_MET = "MET", "NOT MET"
OUT_OF_SCOPE = "OUT OF SCOPE"
MEASURED = "MEASURED"
OUTCOMES = {
    "claim": (PASS, FAIL, INCONCLUSIVE),  # a statement of the paper, tested
    "precondition": (MET, NOT_MET, INCONCLUSIVE),  # an assumption the paper needs, not a claim
    "descriptive": (MEASURED, INCONCLUSIVE),  # a measurement the paper states no value for
}
# the data a judge may read (names of tables; `trajectories` = logged variables, never the
# weight snapshots or the model: what needs those is the replay stage's `measures`)
INPUTS = ("cells", "clocks", "fits", "laws", "measures", "trajectories")
RECORD_KEYS = ("id", "claim", "verdict", "evidence", "details")  # what a judge returns


def schema_claims() -> dict[str, dict]:
    """The schema's `claims:` properties: key -> {default, description, ...}."""
    return load_schema()["properties"]["claims"]["properties"]


DEFAULTS: dict[str, Any] = {k: copy.deepcopy(v["default"]) for k, v in schema_claims().items()}


def resolve_claim_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS overlaid with `settings` (the config's `claims:` section); unknown keys raise."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown claims settings {unknown}; allowed: {sorted(DEFAULTS)} "
            "(analysis settings belong in the config's analysis: section)"
        )
    return {**DEFAULTS, **settings}


@dataclass(frozen=True)
class Scope:
    """Which cells a statement covers: model families, optimisers and an optional predicate on
    the cell table (a boolean Series); None = any. Cells outside are OUT OF SCOPE."""

    text: str
    models: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    where: Callable[[pd.DataFrame], pd.Series] | None = None

    def cell_ids(self, cells: pd.DataFrame) -> list[str]:
        """Ids of the cells of `cells` (the cell table) in scope, in table order."""
        if cells is None or cells.empty or "cell_id" not in cells:
            return []
        keep = pd.Series(True, index=cells.index)
        if self.models is not None:
            keep &= cells.get("model", pd.Series("", index=cells.index)).isin(self.models)
        if self.optimizers is not None:
            opt = cells["optimizer"] if "optimizer" in cells else pd.Series("adamw", cells.index)
            keep &= opt.fillna("adamw").isin(self.optimizers)
        if self.where is not None:
            keep &= self.where(cells).reindex(cells.index).fillna(False).astype(bool)
        return [str(c) for c in cells.loc[keep, "cell_id"]]

    def describe(self) -> dict:
        return {"text": self.text, "models": self.models, "optimizers": self.optimizers}

    @property
    def restricts(self) -> bool:
        """Whether the scope leaves any cell out (a scope of every cell never does)."""
        return any(v is not None for v in (self.models, self.optimizers, self.where))

    def outside_evidence(self, cells: pd.DataFrame) -> str:
        """Why a study is OUT OF SCOPE: the scope, and what the study's cells are instead."""
        seen = []
        for col in ("model", "optimizer"):
            if col in cells and cells[col].notna().any():
                vals = sorted({str(v) for v in cells[col].dropna()})
                seen.append(f"{col} {', '.join(vals)}")
        what = f" ({'; '.join(seen)})" if seen else ""
        return (f"no cell of this study is in the claim's scope ({self.text}): all "
                f"{len(cells)} cells are outside it{what}")  # fmt: skip


@dataclass(frozen=True)
class ClaimSpec:
    """One checkable statement of the paper (or one of its preconditions).

    ``judge(ctx, settings)`` returns ``ctx.record(verdict, evidence, **details)``; ``rule``
    gives the rule text with the thresholds filled in; ``applies(ctx)`` False leaves the claim
    out of the study's list (an opt-in stage that did not run).
    """

    id: str
    statement: str
    section: str
    scope: Scope
    inputs: tuple[str, ...]
    thresholds: tuple[str, ...]
    rule: Callable[[Mapping[str, Any]], str]
    judge: Callable[[Context, dict], dict]
    order: int
    kind: str = "claim"
    applies: Callable[[Context], bool] | None = None

    @property
    def outcomes(self) -> tuple[str, ...]:
        """The kind's vocabulary, plus OUT OF SCOPE: a study with no cell the statement covers."""
        return (*OUTCOMES[self.kind], OUT_OF_SCOPE)

    def check(self) -> None:
        """Raise ValueError naming what is wrong with the declaration (before any study)."""
        where = f"claim {self.id!r}"
        if self.kind not in OUTCOMES:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {sorted(OUTCOMES)}")
        bad = sorted(set(self.inputs) - set(INPUTS))
        if bad:
            raise ValueError(f"{where}: unknown inputs {bad}; tables a claim reads: {INPUTS}")
        missing = sorted(set(self.thresholds) - set(DEFAULTS))
        if missing:
            raise ValueError(
                f"{where}: thresholds {missing} have no entry in the schema's claims: section "
                "(workflow/schemas/config.schema.yaml): add each with its default and the reason"
            )


@dataclass
class Context:
    """The tables one claim is judged on, and the cells of its scope."""

    spec: ClaimSpec
    cells: pd.DataFrame
    clocks: pd.DataFrame
    fits: Mapping[str, Any] | None
    measures: pd.DataFrame | None
    datasets: list = field(default_factory=list)  # (cell_id, params, Dataset), sorted
    reduction: bool = False  # the frozen-gate reduction ran (analysis.reduction)
    laws: Mapping[str, Any] | None = None  # results.read_laws: per-cell decisions, calibration

    @property
    def scope_ids(self) -> list[str]:
        return self.spec.scope.cell_ids(self.cells)

    def runs(self):
        """(cell_id, trajectory) of every cell in scope, sorted by cell id."""
        ids = set(self.scope_ids)
        for cid, _params, ds in self.datasets:
            if cid in ids:
                yield cid, ds

    def record(self, verdict: str, evidence: str, **details: Any) -> dict:
        if verdict not in self.spec.outcomes:
            raise ValueError(
                f"claim {self.spec.id!r}: verdict {verdict!r} is not one of {self.spec.outcomes}"
            )
        return {
            "id": self.spec.id,
            "claim": self.spec.statement,
            "verdict": verdict,
            "evidence": evidence,
            "details": details,
        }


# --- the registry ------------------------------------------------------------------------------
_REGISTRY: dict[str, ClaimSpec] = {}


def register(spec: ClaimSpec) -> ClaimSpec:
    """Add a claim (checked first); an id that is taken raises."""
    spec.check()
    if spec.id in _REGISTRY and _REGISTRY[spec.id] is not spec:
        raise ValueError(f"claim id {spec.id!r} is registered twice")
    _REGISTRY[spec.id] = spec
    return spec


def register_module(module: ModuleType) -> list[ClaimSpec]:
    """Register every spec of a claim module (its ``SPECS``)."""
    specs = getattr(module, "SPECS", None)
    if not specs:
        raise ValueError(f"claim module {module.__name__} declares no SPECS")
    return [register(s) for s in specs]


def unregister(claim_id: str) -> None:
    """Remove a claim (tests that register a toy claim clean up with this)."""
    _REGISTRY.pop(claim_id, None)


def specs() -> list[ClaimSpec]:
    """Every registered claim, in report order."""
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.id))


def get(claim_id: str) -> ClaimSpec:
    """The spec of `claim_id`; an unknown id lists the choices."""
    if claim_id not in _REGISTRY:
        raise KeyError(f"unknown claim {claim_id!r}; registered: {[s.id for s in specs()]}")
    return _REGISTRY[claim_id]


def claim_rules(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Claim id -> its rule with the thresholds of the config's `claims:` section filled in."""
    s = resolve_claim_settings(settings)
    return {spec.id: spec.rule(s) for spec in specs()}
