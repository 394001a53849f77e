"""Study ETA (`twoclocks.eta`): the plan, where its rate comes from, what is already done, and
the line Snakemake prints before the first job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twoclocks import eta
from twoclocks.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    return load_config(REPO / "config" / "test.yaml")


@pytest.fixture(scope="module")
def paper():
    return load_config(REPO / "config" / "paper.yaml")


def _bench(path: Path, cpu: str, per_member_step_s: float, date: str, device: str = "cpu"):
    setup = {"modulus": 113, "train_fraction": 0.3, "split": "unordered", "embed_dim": 128}
    rec = {
        "date": date,
        "machine": {"cpu_model": cpu, "device": device},
        "engine": {"per_member_step_s": per_member_step_s},
        "setup": setup | {"hidden_width": 128},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


def test_plan_counts_every_member_step(study):
    got = eta.study_eta(study, bench_paths=[])
    want = sum(len(c.params["seeds"]) * c.params["steps"] for c in study.cells)
    assert got.member_steps == want
    assert {g.group_id for g in got.groups} == set(study.groups)
    assert got.source.startswith("the default") and got.total_s == got.remaining_s > 0


def test_work_scales_with_the_model_and_floors_small_ones(paper):
    plan = {g.group_id: g for g in eta.study_eta(paper, per_member_step_s=1e-3).groups}
    base = plan["relu"].work_ratio
    # ordered split: 1 - 0.3/2 of the pairs distinct, against the bench's unordered half
    assert base == pytest.approx(0.85 / 0.5)
    assert plan["relu_width/width=512"].work_ratio == pytest.approx(4 * base)
    assert plan["linear/depth=2"].work_ratio == eta.MIN_WORK_RATIO
    assert plan["relu"].seconds(1e-3) == pytest.approx(15 * 15000 * base * 1e-3)


def test_rate_from_the_newest_bench_of_this_machine(study, tmp_path):
    here = eta._cpu_model()
    paths = [
        _bench(tmp_path / "a" / "bench.json", here, 4e-3, "2026-01-01T00:00:00+00:00"),
        _bench(tmp_path / "b" / "bench.json", here, 3e-3, "2026-02-01T00:00:00+00:00"),
        _bench(tmp_path / "c" / "bench.json", "another CPU", 1e-6, "2026-03-01T00:00:00+00:00"),
        _bench(tmp_path / "d" / "bench.json", here, 1e-6, "2026-04-01T00:00:00+00:00", "cuda"),
    ]
    (tmp_path / "e").mkdir()
    paths.append(tmp_path / "e" / "bench.json")  # missing: skipped
    got = eta.study_eta(study, bench_paths=paths)
    assert got.per_member_step_s == 3e-3 and str(paths[1]) in got.source
    assert eta.study_eta(study, bench_paths=paths[2:]).per_member_step_s == (
        eta.DEFAULT_PER_MEMBER_STEP_S
    )


def test_done_and_partly_trained_groups_count(study, tmp_path):
    groups = list(study.groups)
    (tmp_path / "stacked" / groups[0] / "train").mkdir(parents=True)
    state = tmp_path / "state" / groups[1] / "work" / "engine"
    state.mkdir(parents=True)
    np.savez(state / "state.npz", step=np.asarray(40, np.int64))
    got = eta.study_eta(study, results_dir=tmp_path, per_member_step_s=1e-3)
    done = {g.group_id: g.done_steps for g in got.groups}
    assert done[groups[0]] == study.groups[groups[0]][0].params["steps"]
    assert done[groups[1]] == 40 and done[groups[2]] == 0
    assert got.remaining_s < got.total_s
    assert "2 of 3 train groups to run, 1 done" in got.line()


def test_parallel_jobs_longest_first():
    groups = [eta.GroupPlan(str(i), 1, s, 0, 1.0) for i, s in enumerate([40, 30, 20, 10])]
    one = eta.Eta("x", groups, 1.0, "t", jobs=1)
    two = eta.Eta("x", groups, 1.0, "t", jobs=2)
    many = eta.Eta("x", groups, 1.0, "t", jobs=10)
    assert (one.wall_s, two.wall_s, many.wall_s) == (100.0, 50.0, 40.0)


def test_cli_prints_the_plan(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "twoclocks.eta", str(REPO / "config" / "test.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert out.startswith("study test: training ETA ") and "relu: 4 members x 120 steps" in out


@pytest.mark.slow
def test_dry_run_states_the_eta_first(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-n",
            "--cores",
            "4",
            "--configfile",
            str(REPO / "config" / "paper.yaml"),
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    first = (proc.stderr or proc.stdout).splitlines()[0]
    assert first.startswith("study paper: training ETA ") and "2 job(s) at once" in first


def test_saved_plan_gives_the_time_left_from_the_study_dir(study, tmp_path):
    assert eta.eta_of_run(tmp_path) is None  # no plan: no estimate
    plan = eta.study_eta(study, results_dir=tmp_path, per_member_step_s=1e-3, jobs=2)
    eta.write_plan(plan, tmp_path)
    before = eta.eta_of_run(tmp_path)
    assert before == plan
    first = next(iter(study.groups))
    (tmp_path / "stacked" / first / "train").mkdir(parents=True)
    after = eta.eta_of_run(tmp_path)
    assert after.remaining_s < before.remaining_s and after.total_s == before.total_s
    assert eta.eta_of_run(tmp_path, jobs=1).jobs == 1


def test_transformer_work_counts_its_matmuls():
    """beyond.yaml's transformer (d 128, MLP 512, p 97, half the ordered pairs): K and V at the
    three positions, the last layer's Q, O and MLP at the last, the head; a second layer runs
    all of them at the three positions. Before this count it was priced as the bench cell."""
    cell = {"task": "modular", "model": "transformer", "modulus": 97, "train_fraction": 0.5}
    cell.update(d_model=128, d_mlp=512, n_layers=1)
    n, d, f = 0.5 * 97 * 97, 128, 512
    one = eta.matmul_work(cell)
    assert one == pytest.approx(n * (8 * d * d + 2 * d * f + d * 97))
    two = eta.matmul_work(dict(cell, n_layers=2))
    assert two - one == pytest.approx(n * 3 * (4 * d * d + 2 * d * f))
