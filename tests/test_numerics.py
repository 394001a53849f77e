"""The numerics fingerprint (CPU capability; GPU model, CUDA, cuDNN) in cache key, provenance
and resume state."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_RELU_CELL

from twoclocks import numerics, provenance
from twoclocks.data.modular import make_modular
from twoclocks.train import cache
from twoclocks.train.group import train_group


def test_fingerprint_names_the_cpu_capability_torch_runs_with():
    fp = numerics.fingerprint("cpu")
    assert fp["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "cuda_device" not in fp
    assert provenance.collect("cpu", "float32")["numerics"] == fp
    # every other record (clocks, fits, claims, the report) names this machine's CPU numerics
    assert provenance.collect()["numerics"] == numerics.cpu_identity()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fingerprint_on_a_gpu_names_model_and_versions():
    fp = numerics.fingerprint("cuda")
    assert fp["cuda_device"] == torch.cuda.get_device_name(0)
    assert fp["cuda"] == torch.version.cuda and fp["cudnn"] == torch.backends.cudnn.version()


def _key_in_subprocess(env_extra: dict) -> dict:
    code = (
        "import json, torch; from conftest import TINY_RELU_CELL as c\n"
        "from twoclocks.train import cache; from twoclocks import numerics\n"
        "print(json.dumps([cache.cache_key(c, threads=1), numerics.fingerprint('cpu')]))\n"
    )
    env = {**os.environ, **env_extra}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_cache_key_changes_with_the_cpu_capability():
    """ATEN_CPU_CAPABILITY=default stands in for a node type without AVX2/AVX512."""
    native_key, native = _key_in_subprocess({})
    capped_key, capped = _key_in_subprocess({"ATEN_CPU_CAPABILITY": "default"})
    assert capped["cpu_capability"] == "DEFAULT"
    assert native_key == cache.cache_key(TINY_RELU_CELL, threads=1)  # stable across processes
    if native["cpu_capability"] == "DEFAULT":
        pytest.skip("this CPU has no vector capability to cap")
    assert capped_key != native_key


def test_resume_under_other_numerics_stops_unless_allowed(tmp_path, monkeypatch):
    state = tmp_path / "work" / "engine"
    now = numerics.guard_resume(state)  # fresh: records this machine's numerics
    marker = tmp_path / "work" / "engine.numerics.json"
    assert json.loads(marker.read_text()) == now
    state.mkdir(parents=True)
    (state / "state.npz").write_bytes(b"saved at step 40")
    assert numerics.guard_resume(state) == now  # same machine: resume
    marker.write_text(json.dumps({**now, "cpu_capability": "DEFAULT"}))
    with pytest.raises(numerics.NumericsChanged) as info:
        numerics.guard_resume(state)
    msg = str(info.value)
    assert "'cpu_capability': 'DEFAULT'" in msg and f"delete {state.parent}" in msg
    assert numerics.ALLOW_ENV in msg and "constraint" in msg
    monkeypatch.setenv(numerics.ALLOW_ENV, "1")
    assert numerics.guard_resume(state) == now
    assert json.loads(marker.read_text()) == now


def test_train_group_refuses_a_resume_state_from_another_node_type(tmp_path):
    data = make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)
    cell = dict(TINY_RELU_CELL, steps=20, seeds=[0])
    work = tmp_path / "state"
    (work / "engine").mkdir(parents=True)
    (work / "engine" / "state.npz").write_bytes(b"x")
    other = {**numerics.fingerprint("cpu"), "cpu_capability": "SOMEWHERE_ELSE"}
    (work / "engine.numerics.json").write_text(json.dumps(other))
    with pytest.raises(numerics.NumericsChanged, match="SOMEWHERE_ELSE"):
        train_group([cell], data, tmp_path / "out", state_dir=work)
    assert not (tmp_path / "out").exists()
