"""Behaviour preservation: the engine writes what it wrote when the fixture was recorded.

The fixture (tests/data/behaviour_checksums.json and behaviour_values.npz, written by
tests/data/make_checksums.py) covers every variable of the tiny study's trajectory stores, plus
extra cells on paths config/test.yaml does not take (concat + two hidden layers + SGD in
float64, deep linear on tokens, a diverging member), and each clock's rows.

- On a CPU whose numerics identity (`twoclocks.numerics.cpu_identity`: CPU capability,
  architecture, torch version, BLAS) has a record: bitwise (sha256 of raw bytes). A refactor that
  changes any value, dtype, shape, long_name or units fails here, naming the variable.
- On any other CPU: every integer, string, flag (censored, below_floor, diverged), NaN/inf
  pattern and attribute digest exactly, and every float within
  |got - recorded| <= TOLERANCE_ULPS * eps * (|recorded| + scale), eps of the group's training
  dtype, scale the largest |recorded| of that array (for min-|x| statistics at least their
  inputs' size, SCALE_FLOOR).

How far values move between CPU code paths (measured 2026-12-06 on a 2-core AMD EPYC with
AVX512, torch 2.13.0+cpu, MKL; the record is AVX512; reruns under ATEN_CPU_CAPABILITY=avx2 and
=default): every variable differs in its last bits (e.g. 120 of 124 train_loss entries of the
relu group), none of the flags, integers, accuracies or gate-flip fractions does. In the units
above, metrics move by at most 5.8 (train_margin_min; srank 2.8, losses 0.4, clock steps 0.4),
the last weight snapshots by at most 82 (relu U under AVX2: 2.8e-6 at a scale of 0.7; 31 under
DEFAULT) and preact_min_abs by 12 (1.4e-6 absolute, 4,058 before its floor of 1.0: it is ~1e-3,
its error that of O(1) pre-activations). The float64 cell moves by ~1e-15. TOLERANCE_ULPS = 512
is 6x the largest measured spread (relative 6e-5 of a variable's scale in float32): a CPU with
another vector width or BLAS reorders the same sums, so the same order of drift is expected
over the 120 steps, while a change of a definition moves values by 1e-3 or more.
CI reruns this test under ATEN_CPU_CAPABILITY=default (.ci/run), the tolerance path.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"


def _maker():
    spec = importlib.util.spec_from_file_location("make_checksums", DATA / "make_checksums.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_trajectories_and_clocks_match_recorded_checksums(tmp_path):
    maker = _maker()
    fixture = json.loads(maker.FIXTURE.read_text())
    got, values = maker.run(fixture["inputs"], tmp_path)
    mode, problems = maker.check(fixture, got, values)
    key = maker.this_identity()[0]
    if problems and mode == "bitwise":  # say whether only the last bits moved
        eps = maker._group_eps(fixture["inputs"])
        beyond = maker.compare_values(maker.load_values(), values, eps)
        verdict = "no:\n" + "\n".join(beyond) if beyond else "yes, only the last bits moved"
        problems.append(f"within the float32 tolerances: {verdict}")
    assert not problems, f"behaviour changed ({key}, compared {mode}):\n" + "\n".join(problems)


def test_the_fixture_records_values_for_every_checksummed_variable():
    """The values cover what the checksums cover: each store variable and coordinate (snapshots
    as norm + last), and each clock's columns; so the tolerance path misses nothing."""
    maker = _maker()
    fixture = json.loads(maker.FIXTURE.read_text())
    values = maker.load_values()
    assert fixture["records"], "no numerics identity recorded"
    for record in fixture["records"].values():
        assert set(record["identity"]) >= {"cpu_capability", "machine", "torch", "blas"}
        for gid, tree in record["checksums"].items():
            for name in tree["store"]:
                parts = [name] if not name.startswith("snap_") else [name + "#norm", name + "#last"]
                for part in parts:
                    assert f"{gid}|store|{part}" in values, (gid, part)
            for cid, clocks in tree["clocks"].items():
                for clock in clocks:
                    for col in maker.CLOCK_HASH_COLUMNS:
                        assert f"{gid}|clocks|{cid}|{clock}|{col}" in values, (gid, cid, clock)
    assert set(fixture["inputs"]["groups"]) == {k.split("|", 1)[0] for k in values}


def test_tolerances_pass_float32_noise_and_catch_real_changes():
    maker = _maker()
    eps = {"g": float(np.finfo(np.float32).eps)}
    rng = np.random.default_rng(0)
    loss = np.abs(rng.normal(size=40)).astype(np.float32)
    rec = {
        "g|store|train_loss": loss,
        "g|store|diverged_step": np.array([-1, 3]),
        "g|store|block": np.array(["E", "W1"]),
        "g|clocks|c|cls|censored": np.array([False, True]),
        "g|store|preact_min_abs": np.array([1e-3, 2e-3], np.float32),
    }
    scale = float(loss.max())
    noisy = dict(rec)
    noisy["g|store|train_loss"] = loss + np.float32(100 * eps["g"] * scale)  # 100 ulps
    noisy["g|store|preact_min_abs"] = rec["g|store|preact_min_abs"] + np.float32(1.4e-6)
    assert maker.compare_values(rec, noisy, eps) == []
    dev = maker.deviations(rec, noisy, eps)["g|store|train_loss"]
    assert 50 < dev < 101
    for key, change in {
        "g|store|train_loss": loss * np.float32(1.001),  # a definition that moves it by 0.1%
        "g|store|diverged_step": np.array([-1, 4]),
        "g|store|block": np.array(["E", "W2"]),
        "g|clocks|c|cls|censored": np.array([False, False]),
        "g|store|preact_min_abs": np.array([1e-3, 2.1e-3], np.float32),
    }.items():
        problems = maker.compare_values(rec, {**rec, key: change}, eps)
        assert [p.split(":")[0] for p in problems] == [key], problems
    nan = loss.copy()
    nan[3] = np.nan
    assert (
        "NaN/inf pattern" in maker.compare_values(rec, {**rec, "g|store|train_loss": nan}, eps)[0]
    )
    assert maker.compare_values(rec, {k: v for k, v in rec.items() if "block" not in k}, eps) == [
        "g|store|block: missing"
    ]


def test_values_round_trip_through_the_packed_file(tmp_path):
    maker = _maker()
    values = {
        "a|store|x": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a|store|s": np.array(["E", "W1"]),
        "b|clocks|c/d=1|cls|censored": np.array([True, False]),
        "b|store|n": np.array([-1, 7], dtype=np.int64),
    }
    path = tmp_path / "v.npz"
    maker.save_values(values, path)
    back = maker.load_values(path)
    assert back.keys() == values.keys()
    for k, v in values.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype.kind == v.dtype.kind and back[k].shape == v.shape


def test_identity_key_names_what_decides_the_bits(monkeypatch):
    from twoclocks import numerics

    monkeypatch.delenv("MKL_CBWR", raising=False)
    identity = numerics.cpu_identity()
    key = numerics.identity_key(identity)
    assert key.split("-")[:2] == [identity["machine"], identity["cpu_capability"]]
    assert f"torch{identity['torch']}" in key and identity["blas"] in key
    assert "ATEN_CPU_CAPABILITY" not in identity.get("env", {})  # shown as cpu_capability
    if identity["blas"] == "mkl":
        monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
        changed = numerics.cpu_identity()
        assert changed["env"] == {"MKL_CBWR": "COMPATIBLE"}
        assert numerics.identity_key(changed) != key


def test_checksums_see_a_one_ulp_change():
    """The digest is over raw bytes: one ulp in one element changes it."""
    maker = _maker()
    a = np.linspace(0.0, 1.0, 7)
    b = a.copy()
    b[3] = np.nextafter(b[3], 2.0)
    assert maker._digest(a) != maker._digest(b)
    assert maker._digest(a) == maker._digest(a.copy())
    assert maker._digest(a) != maker._digest(a.astype(np.float32))


def test_accept_takes_only_the_named_variables_and_clocks():
    """``--accept`` sorts each difference by its store variable or clock name (ids hold "/")."""
    maker = _maker()
    allowed = {"test_loss", "gen_loss", "snap_U", "__var_attrs__"}
    assert maker._accepted("/relu/store/test_loss: changed", allowed)
    assert maker._accepted("/relu/clocks/relu/wd=0.5/gen_loss: changed", allowed)
    assert not maker._accepted("/relu/store/train_loss: changed", allowed)
    assert not maker._accepted("/relu/clocks/relu/wd=0.5/cls_loss: changed", allowed)
    assert not maker._accepted("/relu/clocks/test_loss/wd=0.5/cls_loss: changed", allowed)
    # the same for value keys (tolerance comparisons)
    assert maker._accepted("relu|store|test_loss: off by 900 ulps", allowed)
    assert maker._accepted("relu|store|snap_U#last: off by 900 ulps", allowed)
    assert maker._accepted("relu|clocks|relu/wd=0.5|gen_loss|step: off by 900 ulps", allowed)
    assert not maker._accepted("relu|clocks|relu/wd=0.5|cls|step: off by 900 ulps", allowed)
    assert not maker._accepted("test_loss|store|train_loss: exact values differ", allowed)
    old, new = {"a": "1", "b": "2", "gone": "3"}, {"a": "9", "b": "8"}
    maker._take(old, new, {"a", "gone"})
    assert old == {"a": "9", "b": "2"}
