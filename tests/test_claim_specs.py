"""Claims as declared specs: the registry, what claims.json states per claim, and a new claim
added as one module (plus its schema entry) that shows up in claims.json."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest
import synthetic_report as sr

from twoclocks.analyze import claims as C
from twoclocks.config import load_schema
from twoclocks.replay.stage import measure_study

TOY = """
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Scope


def judge(ctx, s):
    n = len(ctx.scope_ids)
    if n < s["min_runs"]:
        return ctx.record(INCONCLUSIVE, f"{n} cells in scope")
    return ctx.record(PASS if n % 2 == 0 else FAIL, f"{n} cells in scope", n=n)


SPECS = (
    ClaimSpec(
        id="toy_even_cells",
        statement="A toy: the study has an even number of ReLU cells.",
        section="none (a test of the registry)",
        scope=Scope("ReLU cells", ("relu_embed",)),
        inputs=("cells",),
        thresholds=("min_runs",),
        rule=lambda s: f"PASS if the number of ReLU cells (>= {s['min_runs']}) is even",
        judge=judge,
        order=999,
    ),
)
"""


@pytest.fixture
def toy_module(tmp_path):
    path = tmp_path / "toy_claim.py"
    path.write_text(textwrap.dedent(TOY))
    spec = importlib.util.spec_from_file_location("toy_claim", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    C.unregister("toy_even_cells")


def test_a_new_claim_is_one_module_and_appears_in_claims_json(toy_module):
    C.register_module(toy_module)
    cells = sr.study(deep=False)
    claims = C.evaluate(cells, sr.clocks(cells), {}, {})
    toy = claims[-1]
    assert toy["id"] == "toy_even_cells" and toy["verdict"] == "FAIL"  # 3 ReLU cells
    record = json.loads(C.claims_to_json({"claims": claims}))["claims"][-1]
    assert record["rule"] == "PASS if the number of ReLU cells (>= 2) is even"
    assert record["scope"]["text"] == "ReLU cells" and len(record["scope"]["cells"]) == 3
    assert record["thresholds"] == {"min_runs": 2}
    assert record["reason"].startswith("FAIL by the rule")
    assert C.get("toy_even_cells") is toy_module.SPECS[0]
    C.unregister("toy_even_cells")
    assert "toy_even_cells" not in {c["id"] for c in C.evaluate(cells, sr.clocks(cells), {}, {})}


def test_a_threshold_without_a_schema_entry_is_refused(toy_module):
    import dataclasses

    bad = dataclasses.replace(toy_module.SPECS[0], thresholds=("toy_level",))
    with pytest.raises(ValueError, match="toy_level.*schema's claims: section"):
        C.register(bad)
    with pytest.raises(ValueError, match="unknown inputs"):
        C.register(dataclasses.replace(toy_module.SPECS[0], inputs=("stores",)))


def test_unknown_claim_id_lists_the_choices():
    with pytest.raises(KeyError, match="registered: .*'separation'"):
        C.get("seperation")


def test_every_schema_claims_key_is_a_threshold_of_some_claim_and_has_its_reason():
    props = load_schema()["properties"]["claims"]["properties"]
    used = {k for spec in C.specs() for k in spec.thresholds}
    assert used == set(props), sorted(set(props) ^ used)
    assert all(p.get("description") for p in props.values())


def test_claims_json_states_scope_rule_statement_and_reason():
    cells = sr.study()
    measures = measure_study(cells, fourier_keep=6)
    claims = C.evaluate(cells, sr.clocks(cells), {}, {}, measures=measures)
    by_id = {c["id"]: c for c in claims}
    for c in claims:
        assert c["rule"] and c["claim"] and c["section"] and c["reason"]
        assert c["verdict"] in c["outcomes"]
    gates = by_id["gates_stable"]
    assert gates["kind"] == "precondition" and gates["verdict"] == C.MET
    assert gates["outcomes"] == [C.MET, C.NOT_MET, C.INCONCLUSIVE, C.OUT_OF_SCOPE]
    sep = by_id["separation"]
    assert sep["scope"]["models"] == ("relu_embed",) or sep["scope"]["models"] == ["relu_embed"]
    assert all(cid.startswith("relu/") for cid in sep["scope"]["cells"])
    assert sep["scope"][C.OUT_OF_SCOPE] and all(
        not cid.startswith("relu/") for cid in sep["scope"][C.OUT_OF_SCOPE]
    )
    law = by_id["cls_log_law"]  # no fits: the reason is why it cannot be decided
    assert law["verdict"] == C.INCONCLUSIVE and law["reason"] == law["evidence"]


def test_a_judge_that_returns_a_verdict_outside_its_vocabulary_fails(toy_module):
    import dataclasses

    def judge(ctx, s):
        return ctx.record(C.PASS, "a precondition cannot PASS")

    spec = dataclasses.replace(toy_module.SPECS[0], kind="precondition", judge=judge)
    C.register(spec)
    with pytest.raises(ValueError, match="not one of"):
        C.evaluate(None, None, None, None)


def test_a_claim_no_cell_falls_under_is_out_of_scope_and_not_judged():
    """A study of deep linear cells only: the ReLU claims are OUT OF SCOPE (never INCONCLUSIVE),
    say why, and their judges do not run; the deep-linear claims are judged as before."""
    cells = {cid: ds for cid, ds in sr.study().items() if not cid.startswith("relu/")}
    called = []
    spec = C.get("separation")
    import dataclasses

    def judge(ctx, s):
        called.append(ctx.spec.id)
        return spec.judge(ctx, s)

    C.unregister("separation")
    C.register(dataclasses.replace(spec, judge=judge))
    try:
        by_id = {c["id"]: c for c in C.evaluate(cells, sr.clocks(cells), {}, {})}
    finally:
        C.unregister("separation")
        C.register(spec)
    sep = by_id["separation"]
    assert sep["verdict"] == C.OUT_OF_SCOPE and called == []
    assert "no cell of this study is in the claim's scope" in sep["evidence"]
    assert "deep_linear" in sep["evidence"] and sep["reason"] == sep["evidence"]
    assert sep["scope"]["cells"] == [] and sep["scope"][C.OUT_OF_SCOPE]
    assert by_id["deep_linear"]["verdict"] != C.OUT_OF_SCOPE
