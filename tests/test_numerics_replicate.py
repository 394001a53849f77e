"""The numerics replicate (issue 26 item 2, analysis.numerics_replicate): a verdict that flips
when the study is trained again under a second CPU code path is INCONCLUSIVE with that reason,
both evidences kept; a verdict that does not flip is left as it was. The slow test runs
config/test.yaml with the key on through Snakemake and checks the replicate really trained
under torch's portable kernels (ATEN_CPU_CAPABILITY=default), beside an untouched primary."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
import torch
import xarray as xr
from conftest import TEST_CONFIG, snakemake_cmd

from twoclocks.analyze import claims as C
from twoclocks.analyze.claims import robust
from twoclocks.config import ConfigError


def _rec(cid, verdict, evidence):
    return {"id": cid, "claim": f"{cid} holds", "verdict": verdict, "evidence": evidence,
            "details": {"n": 3}, "reason": evidence}  # fmt: skip


PRIMARY = [_rec("separation", C.PASS, "ratio 2.1 >= 2"), _rec("fourier", C.FAIL, "gap 0.7")]
REPLICA = [
    _rec("separation", C.INCONCLUSIVE, "gen_acc censored in 2 of 3 runs"),
    _rec("fourier", C.FAIL, "gap 0.69"),
]


def test_a_verdict_that_flips_is_inconclusive_with_the_reason_and_both_evidences():
    before = copy.deepcopy(PRIMARY)
    merged = {c["id"]: c for c in robust.merge_replicate(PRIMARY, REPLICA, "AVX512", "DEFAULT")}
    sep = merged["separation"]
    assert sep["verdict"] == C.INCONCLUSIVE
    assert sep["reason"] == (
        "flips under a second CPU code path: PASS here, INCONCLUSIVE there; "
        "the dynamics amplify float32 rounding"
    )
    assert "ratio 2.1 >= 2" in sep["evidence"] and "gen_acc censored" in sep["evidence"]
    assert sep["flip"]["here"] == {
        "verdict": C.PASS, "evidence": "ratio 2.1 >= 2", "cpu_capability": "AVX512"
    }  # fmt: skip
    assert sep["flip"]["there"]["verdict"] == C.INCONCLUSIVE
    assert sep["replicate"]["cpu_capability"] == "DEFAULT"
    assert PRIMARY == before  # the inputs are not modified


def test_a_verdict_that_does_not_flip_is_unchanged_and_records_the_replicate():
    merged = {c["id"]: c for c in robust.merge_replicate(PRIMARY, REPLICA, "AVX512", "DEFAULT")}
    fourier = merged["fourier"]
    assert {k: fourier[k] for k in PRIMARY[1]} == PRIMARY[1]
    assert "flip" not in fourier
    assert fourier["replicate"] == {
        "verdict": C.FAIL, "evidence": "gap 0.69", "cpu_capability": "DEFAULT"
    }  # fmt: skip
    summary = robust.replicate_summary(list(merged.values()), "AVX512", "DEFAULT")
    assert summary["flipped"] == ["separation"] and summary["perturbed"]


def test_a_claim_the_replicate_did_not_judge_keeps_its_verdict():
    extra = [*PRIMARY, _rec("relu_reduction", C.PASS, "divergence 0.02")]
    merged = {c["id"]: c for c in robust.merge_replicate(extra, REPLICA, "AVX512", "DEFAULT")}
    assert merged["relu_reduction"]["verdict"] == C.PASS
    assert merged["relu_reduction"]["replicate"]["verdict"] is None


TOY = """
from twoclocks.analyze.claims.spec import FAIL, PASS, ClaimSpec, Scope


def judge(ctx, s):
    ok = bool((ctx.fits or {}).get("toy_pass"))
    return ctx.record(PASS if ok else FAIL, f"toy_pass is {ok}")


SPECS = (
    ClaimSpec(
        id="toy_numerics",
        statement="A toy whose verdict is read from fits.json.",
        section="none (a test of the replicate)",
        scope=Scope("every cell"),
        inputs=("fits",),
        thresholds=(),
        rule=lambda s: "PASS if fits.json says toy_pass",
        judge=judge,
        order=998,
    ),
)
"""


@pytest.fixture
def toy_claim(tmp_path):
    import importlib.util
    import textwrap

    path = tmp_path / "toy_numerics.py"
    path.write_text(textwrap.dedent(TOY))
    spec = importlib.util.spec_from_file_location("toy_numerics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    C.register_module(module)
    yield
    C.unregister("toy_numerics")


def test_claims_stage_judges_the_replicate_and_writes_both_verdicts(tmp_path, toy_claim):
    out = tmp_path / "claims.json"
    replicate = {"study": None, "clocks": None, "fits": {"toy_pass": False}, "measures": None}
    C.claims_stage(out, None, None, {"toy_pass": True}, replicate=replicate)
    written = json.loads(out.read_text())
    by_id = {c["id"]: c for c in written["claims"]}
    toy = by_id["toy_numerics"]
    assert toy["verdict"] == C.INCONCLUSIVE and toy["reason"].startswith("flips under")
    assert "PASS here, FAIL there" in toy["reason"] and toy["replicate"]["verdict"] == C.FAIL
    assert written["numerics_replicate"]["flipped"] == ["toy_numerics"]
    assert all("replicate" in c for c in written["claims"])
    same = {**replicate, "fits": {"toy_pass": True}}
    C.claims_stage(out, None, None, {"toy_pass": True}, replicate=same)
    again = {c["id"]: c for c in json.loads(out.read_text())["claims"]}
    assert again["toy_numerics"]["verdict"] == C.PASS


def test_the_key_is_refused_on_cuda_and_a_job_not_under_the_portable_path_stops():
    robust.check_replicate_config({"device": "cpu", "analysis": {"numerics_replicate": True}})
    robust.check_replicate_config({"device": "cuda", "analysis": {}})  # off: nothing to check
    with pytest.raises(ConfigError, match="tests nothing on CUDA.*device: cpu"):
        robust.check_replicate_config({"device": "cuda", "analysis": {"numerics_replicate": True}})
    robust.check_second_code_path("DEFAULT", "cpu")
    with pytest.raises(RuntimeError, match="ignored ATEN_CPU_CAPABILITY=default"):
        robust.check_second_code_path("AVX2", "cpu")
    with pytest.raises(ConfigError, match="perturbs CPU kernels only"):
        robust.check_second_code_path("DEFAULT", "cuda")


def _capability(store) -> str:
    with xr.open_zarr(store, consolidated=False) as ds:
        return json.loads(ds.attrs["provenance"])["numerics"]["cpu_capability"]


@pytest.mark.slow  # the tiny study trained twice through Snakemake: minutes on a busy box
def test_test_study_with_the_replicate_end_to_end(tmp_path):
    config = tmp_path / "replicate.yaml"
    text = TEST_CONFIG.read_text()
    assert "  bootstrap_samples: 50\n" in text
    key_on = "  bootstrap_samples: 50\n  numerics_replicate: true\n"
    config.write_text(text.replace("  bootstrap_samples: 50\n", key_on))
    subprocess.run(snakemake_cmd(tmp_path, "--cores", "2", config=config), check=True)
    results = tmp_path / "results" / "test"
    manifests = results.glob("runs/**/manifest.json")
    cells = sorted(p.parent.relative_to(results / "runs") for p in manifests)
    assert len(cells) == 4
    native = torch.backends.cpu.get_cpu_capability()
    for cell in cells:
        assert _capability(results / "runs" / cell / "trajectory.zarr") == native
        assert _capability(results / "replicate" / "runs" / cell / "trajectory.zarr") == "DEFAULT"
        assert (results / "replicate" / "runs" / cell / "clocks.parquet").is_file()
    claims = json.loads((results / "claims.json").read_text())
    record = claims["numerics_replicate"]
    assert record["cpu_capability"] == {"primary": native, "replicate": "DEFAULT"}
    for c in claims["claims"]:
        there = c["replicate"]["verdict"]
        if "laws" in C.get(c["id"]).inputs:  # the replicate has no laws stage: not judged there
            assert there is None and c["id"] not in record["flipped"]
            continue
        assert there is not None
        if c["id"] in record["flipped"]:
            assert c["verdict"] == C.INCONCLUSIVE and c["flip"]["there"]["verdict"] == there
        else:
            assert c["verdict"] == there


def test_the_replicate_adds_files_beside_the_primary_only_when_asked():
    off = robust.replicate_files({"analysis": {}}, "results/t", ["relu/wd=1.0"])
    assert all(v == [] for v in off.values())
    on = robust.replicate_files({"analysis": {"numerics_replicate": True}}, "results/t", ["a"])
    assert on["stores"] == ["results/t/replicate/runs/a/trajectory.zarr"]
    assert on["fits"] == ["results/t/replicate/fits.json"]
    every = [p for paths in on.values() for p in paths]
    assert every and all(p.startswith("results/t/replicate/") for p in every)
    assert set(on["targets"]) >= {"results/t/replicate/runs/a/manifest.json", *on["fits"]}
