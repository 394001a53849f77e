"""Clock declarations (analyze.clock_specs): one list from which every clock list derives."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from test_clocks import synthetic_trajectory
from test_clocks_known_truth import SETTINGS, write_store

from twoclocks.analyze import clock_specs as cs
from twoclocks.analyze.clocks import (
    CLOCKS,
    DEFAULT_SETTINGS,
    LAW_CLOCKS,
    REP_CLOCKS,
    extract_clocks,
    resolve_settings,
    structural_gaps,
)
from twoclocks.analyze.fits import PER_CELL_FITS, fit_clocks
from twoclocks.analyze.study_dir import CLOCK_INPUTS
from twoclocks.config import load_schema
from twoclocks.train.store import open_trajectory

ANALYZE = Path(__file__).resolve().parents[1] / "src" / "twoclocks" / "analyze"
FAST = {**SETTINGS, "bootstrap_samples": 100}
TOY = cs.ClockSpec(
    "rep_toy", "gap", ("toy_gap",), "eta", 0.2, frozenset({"law", "tail", "ratio"}), zero="known"
)


def test_schema_reference_levels_are_the_declared_clocks():
    """The schema's `analysis.reference_levels` lists exactly the declared clocks (a schema
    default, where one is given, is the declared one)."""
    props = load_schema()["properties"]["analysis"]["properties"]["reference_levels"]
    assert list(props["properties"]) == list(cs.clock_names()) == list(CLOCKS)
    for name, sub in props["properties"].items():
        if "default" in sub:
            assert sub["default"] == cs.clock_spec(name).reference_level, name
    assert DEFAULT_SETTINGS["reference_levels"] == cs.default_reference_levels()


def test_clock_lists_derive_from_the_declarations():
    assert CLOCKS[0] == "cls" and cs.clock_names(kind="classifier") == ("cls",)
    assert REP_CLOCKS == cs.clock_names(kind="gap") == tuple(c for c in CLOCKS if "rep_" in c)
    assert LAW_CLOCKS == ("cls", *REP_CLOCKS)
    assert cs.clock_names(fit="kl") == ("rep_energy",)
    assert cs.clock_names(fit="ratio") == (*REP_CLOCKS, "gen_acc", "gen_loss", "gate")
    # every fit a clock may declare runs: per cell, in the tail record (kl) or across cells
    assert set(PER_CELL_FITS) | {"kl", "scaling"} == set(cs.FIT_KINDS)
    # the study-directory runner's notes: every clock a store may lack (energy: per model)
    assert set(CLOCK_INPUTS) == set(CLOCKS) - {"cls", "rep_energy"}
    assert CLOCK_INPUTS["rep_fourier"] == (("fourier_gap",), "`fourier_gap`")
    # zeros known by construction (docs/science.md 7): a projection's energy, nothing fitted
    known = {c for c in REP_CLOCKS if cs.clock_spec(c).zero == "known"}
    assert known == {"rep_fourier", "rep_spurious"}
    assert cs.clock_spec("rep_srank").lower_bound == 1.0
    assert "T_cls(eps_star) never fired" in cs.clock_spec("rep_sep").censoring


def _imports(module: str) -> set[str]:
    tree = ast.parse((ANALYZE / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twoclocks.analyze"):
            names.add(node.module.rsplit(".", 1)[1])
    return names


def test_clocks_and_fits_do_not_import_each_other_and_nothing_cycles():
    assert "fits" not in _imports("clocks") and "clocks" not in _imports("fits")
    stage = ["clock_specs", "quantities", "settings", "fit_common", "tails", "kl", "clocks", "fits"]
    graph = {m: _imports(m) & set(stage) for m in stage}
    order = []  # topological order: a cycle leaves modules unplaced
    while len(order) < len(stage):
        ready = [m for m in stage if m not in order and graph[m] <= set(order)]
        assert ready, f"import cycle among {sorted(set(stage) - set(order))}"
        order += ready


def test_bad_declarations_and_reference_levels_are_refused():
    with pytest.raises(ValueError, match="kind 'clock' not in"):
        cs.ClockSpec("x", "clock", ("v",), "eta", 0.1, frozenset())
    with pytest.raises(ValueError, match="a gap declares its zero"):
        cs.ClockSpec("x", "gap", ("v",), "eta", 0.1, frozenset({"law"}))
    with pytest.raises(ValueError, match="gaps only"):
        cs.ClockSpec("x", "threshold", ("v",), "acc_threshold", 0.1, frozenset({"tail"}))
    with pytest.raises(ValueError, match="unknown fits"):
        cs.ClockSpec("x", "threshold", ("v",), "acc_threshold", 0.1, frozenset({"lawz"}))
    with pytest.raises(ValueError, match="already declared"):
        cs.register(cs.clock_spec("rep_sep"))
    with pytest.raises(ValueError, match="unknown clock 'rep_nope'; declared clocks: cls"):
        cs.clock_spec("rep_nope")
    with pytest.raises(ValueError, match=r"undeclared clocks \['rep_nope'\]"):
        resolve_settings({"reference_levels": {"rep_nope": 0.1}})


def test_a_new_gap_clock_is_one_declaration(tmp_path, monkeypatch):
    """A toy gap clock on a store variable, declared here only: extracted (normalised at T_cls,
    asymptote fitted), in the clocks table, and law-, tail- and ratio-fitted exactly as the
    built-in clock reading the same data is."""
    write_store(tmp_path / "t.zarr", "pow/p=1", rng_seed=3)
    ds = open_trajectory(tmp_path / "t.zarr").load()
    toy_ds = ds.rename({"fourier_gap": "toy_gap"})
    monkeypatch.setitem(cs.CLOCK_SPECS, TOY.name, TOY)
    assert "rep_toy" in cs.clock_names(kind="gap") and "rep_toy" in structural_gaps(toy_ds)
    s = resolve_settings(FAST)
    assert s["reference_levels"]["rep_toy"] == 0.2
    assert resolve_settings({"rep_ref_eta": 0.05})["reference_levels"]["rep_toy"] == 0.05
    toy = extract_clocks(toy_ds, FAST, {})
    builtin = extract_clocks(ds, FAST, {})
    assert set(toy["clock"]) == {"cls", "rep_toy"}
    rows, ref = toy[toy["clock"] == "rep_toy"], builtin[builtin["clock"] == "rep_fourier"]
    assert len(rows) == len(ref) > 0 and not rows["censored"].all()
    for col in ("level", "step", "tau", "g_inf", "raw_level", "unresolved", "pre_fit"):
        np.testing.assert_array_equal(rows[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    fired = rows[~rows["censored"] & ~rows["pre_fit"]]
    assert (fired["step"] >= fired["t_cls_ref"]).all()
    _, summary = fit_clocks(toy, FAST)
    recs = {(r["fit"], r["clock"]): r for r in summary["cells"]["pow/p=1"]["fits"]}
    assert {("law", "rep_toy"), ("tail", "rep_toy"), ("ratio", "rep_toy")} <= set(recs)
    assert not any(c == "rep_toy" and f == "scaling" for f, c in recs)  # not declared
    law = recs[("law", "rep_toy")]
    assert law["status"] == "ok" and law["preferred"] == "power"
    assert law["params"]["k"]["estimate"] == pytest.approx(1.0, rel=0.05)  # 1/p, p = 1
    _, ref_summary = fit_clocks(builtin, FAST)
    ref_law = next(r for r in ref_summary["cells"]["pow/p=1"]["fits"]
                   if r["fit"] == "law" and r["clock"] == "rep_fourier")  # fmt: skip
    assert law["params"] == ref_law["params"]
    assert recs[("ratio", "rep_toy")]["level"] == 0.2  # the declared reference level


def test_a_new_threshold_clock_is_one_declaration(monkeypatch):
    """A toy threshold clock crossed from below (like test accuracy) on a store variable."""
    steps = np.arange(0, 3001, 50)
    loss = 2.0 * np.exp(-0.004 * steps)[None]
    score = 1.0 - np.exp(-0.002 * steps)[None]  # crosses 0.9 at log(10) / 0.002 steps
    ds = synthetic_trajectory(loss, steps, extra={"toy_score": score})
    spec = cs.ClockSpec("toy_up", "threshold", ("toy_score",), "acc_threshold", 0.9,
                        frozenset({"ratio"}), above=True, log_interp=False)  # fmt: skip
    monkeypatch.setitem(cs.CLOCK_SPECS, spec.name, spec)
    table = extract_clocks(ds, {"eps": [1e-1, 1e-2], "acc_threshold": 0.9}, {})
    row = table[table["clock"] == "toy_up"]
    assert len(row) == 1 and row["level"].item() == 0.9 and not row["censored"].item()
    assert row["step"].item() == pytest.approx(np.log(10) / 0.002, rel=0.01)
    assert row["quantity_min"].item() == pytest.approx(score.max())  # the largest value reached
