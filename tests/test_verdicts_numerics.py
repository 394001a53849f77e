"""Verdicts do not depend on the CPU code path: the tiny study judged under two numerics.

config/test.yaml is trained and judged (clocks, fits, claims, as the pipeline's stages do) in
two subprocesses, one with torch's native CPU kernels and one capped to its portable ones
(`ATEN_CPU_CAPABILITY=default`); their trajectories differ in the last bits
(tests/test_behaviour.py measures by how much), their verdicts and every clock's censoring
flags must not.

Measured 2026-12-06 (2-core AMD EPYC, AVX512 vs ATEN_CPU_CAPABILITY=default, torch 2.13.0+cpu,
MKL; `study_verdicts` in two processes):
- config/test.yaml: the 13 verdicts (grad_hierarchy PASS, fourier FAIL, the rest
  INCONCLUSIVE) and all 248 clock rows' flags equal; 8 clock steps differ, by <= 1.2e-7
  (relative). This test pins that.
- config/config.yaml (the default study, ~8-10 min per run here, too long for the suite):
  3 of 13 verdicts differ. separation PASS -> INCONCLUSIVE (gen_acc FAIL: on the portable path
  seeds 0 and 1 of relu/wd=0.45 never reach test accuracy 0.99 in 5,000 steps, censored),
  srank_drop FAIL (gated 10.9 -> 8.73, 23%) -> PASS (10.9 -> 3.98, 65%), rep_power_law
  INCONCLUSIVE -> FAIL (3 logarithmic fits); clock rows 715 vs 713, censoring flags of
  relu/wd=0.45 differ. The default's dynamics (lr 1e-2, train CE spikes near the float32
  floor) amplify last-bit differences into other runs: issue #26 items 2-3 (verdicts that flip
  under float32 perturbation must say INCONCLUSIVE; a default without spikes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def study_verdicts(config_path: str, out: str) -> dict:
    """Train every group of the study at `config_path` under `out`, extract clocks, fit and
    judge; the verdicts, the clocks' flags and the numerics fingerprint, as JSON data."""
    import pandas as pd
    import torch

    from twoclocks import provenance
    from twoclocks.analyze.claims import evaluate_claims
    from twoclocks.analyze.clocks import extract_clocks
    from twoclocks.analyze.fits import fit_clocks
    from twoclocks.config import load_config
    from twoclocks.data.io import build_dataset, data_params
    from twoclocks.train.group import train_group
    from twoclocks.train.store import open_trajectory

    study = load_config(config_path)
    torch.set_num_threads(study.config["train_threads"])
    analysis = dict(study.config.get("analysis") or {})
    trajectories, tables = {}, []
    for gid, cells in study.groups.items():
        data = build_dataset(data_params(cells[0].params))
        paths = train_group(
            [c.params for c in cells], data, Path(out) / gid, axes={c.id: c.axes for c in cells}
        )
        for cell in cells:
            trajectories[cell.id] = open_trajectory(paths[cell.id])
            tables.append(extract_clocks(trajectories[cell.id], analysis, dict(cell.axes)))
    clocks = pd.concat(tables, ignore_index=True)
    _fits_table, fits = fit_clocks(clocks, analysis)
    claims = evaluate_claims(trajectories, clocks, fits, study.config.get("claims"))
    flags = clocks.sort_values(["cell_id", "clock", "seed", "level"], kind="stable")
    return {
        "numerics": provenance.collect()["numerics"],
        "verdicts": {c["id"]: c["verdict"] for c in claims},
        "evidence": {c["id"]: c.get("evidence") for c in claims},
        "flags": flags[["cell_id", "clock", "seed", "level", "censored", "below_floor"]]
        .astype(str)
        .to_numpy()
        .tolist(),
        "steps": flags["step"].astype(float).tolist(),
    }


def _judge(tmp_path: Path, env_extra: dict) -> dict:
    out = tmp_path / (env_extra.get("ATEN_CPU_CAPABILITY") or "native")
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from test_verdicts_numerics import study_verdicts; "
        f"print(json.dumps(study_verdicts({str(REPO / 'config' / 'test.yaml')!r}, "
        f"{str(out)!r})))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env.update(env_extra)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two trainings and analyses of the tiny study: ~1 min
def test_tiny_study_verdicts_are_the_same_under_two_cpu_code_paths(tmp_path):
    native = _judge(tmp_path, {})
    portable = _judge(tmp_path, {"ATEN_CPU_CAPABILITY": "default"})
    assert portable["numerics"]["cpu_capability"] == "DEFAULT"
    if native["numerics"]["cpu_capability"] == "DEFAULT":
        pytest.skip("this CPU has no vector code path to compare with the portable one")
    # the two runs did take different code paths: some clock lands elsewhere in its last bits
    assert native["steps"] != portable["steps"] or native["evidence"] != portable["evidence"]
    assert portable["verdicts"] == native["verdicts"], {
        k: (native["verdicts"][k], portable["verdicts"].get(k))
        for k in native["verdicts"]
        if native["verdicts"][k] != portable["verdicts"].get(k)
    }
    assert portable["flags"] == native["flags"]
    assert set(native["verdicts"].values()) - {"INCONCLUSIVE"}, "no claim judged at all"
