"""``python -m twoclocks.bench`` at a tiny size: the record is complete and sane (no timing
asserts: the numbers depend on the machine and its load)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from twoclocks import bench

TINY = [
    "--modulus", "13", "--embed-dim", "8", "--hidden-width", "16", "--train-fraction", "0.5",
    "--members", "2", "--steps", "20", "--late-steps", "20", "--mfu-steps", "2",
    "--log-dense-steps", "3", "--log-every-steps", "5", "--snapshot-count", "3",
    "--device", "cpu", "--threads", "1", "--dry-run-cells", "20", "--repeats", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "twoclocks.bench", *TINY, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == printed
    return printed


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow  # the bench subprocess
def test_headline_fields(record):
    for key in (
        "speedup_per_member",
        "mfu",
        "mfu_end_to_end",
        "stacking_per_member_ratio",
        "late_vs_early_speed",
        "gemm_peak_flops",
        "step_flops_rate",
        "dry_run_s",
    ):
        assert _positive(record[key]), (key, record[key])
    assert 0.0 <= record["metrics_write_share"] <= 1.0
    assert 0.0 <= record["reference"]["metrics_write_share"] <= 1.0
    assert record["dry_run_cells"] == 20
    assert record["dry_run_1000_cells_s"] is None  # only reported for a 1,000-cell grid


@pytest.mark.slow  # the bench subprocess
def test_predicted_and_measured_peak_memory_of_the_bench_job(record):
    mem = record["memory"]
    assert mem["members"] == 2 and mem["measured_mb"] > 100
    assert 0.75 <= mem["predicted_over_measured"] <= 1.25, mem
    assert mem["declared_mem_mb"] >= mem["measured_mb"]


@pytest.mark.slow  # one training subprocess per row
def test_memory_table_cli(tmp_path):
    out = tmp_path / "table.json"
    args = ["--memory-table", "--widths", "16", "--layers", "1", "2", "--steps", "3"]
    proc = subprocess.run(
        [sys.executable, "-m", "twoclocks.bench", *args, "--threads", "1", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["hidden_width"], r["hidden_layers"]) for r in rows] == [(16, 1), (16, 2)]
    for r in rows:
        assert 0.75 <= r["predicted_over_measured"] <= 1.25, r
        assert 0.0 <= r["metrics_share"] <= 1.0 and r["per_member_step_s"] > 0
    assert "pred/meas" in proc.stderr  # the printed table


def test_format_table_has_a_row_per_configuration():
    from twoclocks.bench_memory import format_table

    row = {
        "hidden_layers": 2,
        "hidden_width": 512,
        "members": 1,
        "predicted_mb": 586.4,
        "measured_mb": 605.3,
        "predicted_over_measured": 0.969,
        "declared_mem_mb": 880,
        "per_member_step_s": 1.478,
        "metrics_share": 0.087,
        "log_rows": 9,
    }
    lines = format_table([row, row]).splitlines()
    assert len(lines) == 3 and "measured MB" in lines[0]
    assert lines[1].split() == [
        "2",
        "512",
        "1",
        "586",
        "605",
        "0.97",
        "880",
        "1478.00",
        "0.087",
        "9",
    ]


@pytest.mark.slow  # the bench subprocess
def test_flop_count_matches_the_model(record):
    s = record["setup"]
    n, d, h, c = s["n_train"], s["embed_dim"], s["hidden_width"], s["modulus"]
    assert record["flops_per_member_step"] == 6 * n * (d * h + h * c)
    assert record["step_flops_rate"] == pytest.approx(
        record["flops_per_member_step"] * s["members"] / record["engine"]["bare_step_s"]
    )
    assert record["mfu"] == pytest.approx(record["step_flops_rate"] / record["gemm_peak_flops"])
    # The engine runs the first layer over the vocabulary and the head over distinct samples.
    nd, p = s["n_train_distinct"], s["modulus"]
    assert s["split"] == "unordered" and n / 2 <= nd < n  # (a, b) and (b, a) merge
    assert record["executed_flops_per_member_step"] == 6 * (p * d * h + nd * h * c)
    assert record["mfu_executed"] == pytest.approx(
        record["mfu"] * record["executed_flops_per_member_step"] / record["flops_per_member_step"]
    )


@pytest.mark.slow  # the bench subprocess
def test_timings_are_consistent(record):
    eng, ref, s = record["engine"], record["reference"], record["setup"]
    for part in (eng, ref):
        assert _positive(part["wall_s"]) and _positive(part["per_member_step_s"])
    assert eng["per_member_step_s"] == pytest.approx(eng["wall_s"] / (s["steps"] * s["members"]))
    assert record["speedup_per_member"] == pytest.approx(
        ref["per_member_step_s"] / eng["per_member_step_s"]
    )
    parts = eng["metrics_s"] + eng["writes_s"]
    assert eng["metrics_s"] > 0 and eng["writes_s"] > 0 and parts <= eng["wall_s"]
    assert record["metrics_write_share"] == pytest.approx(parts / eng["wall_s"])
    # The fastest of the interleaved repeats is reported.
    assert record["repeats"] == 2
    for side, key in (("engine", "engine"), ("reference", "reference")):
        assert len(record["walls_s"][key]) == 2
        assert record[side]["wall_s"] == min(record["walls_s"][key])
    assert record["late"]["early_steps_per_s"] > 0 and record["late"]["late_steps_per_s"] > 0
    # 3 dense + every 5th up to 20: 0, 1, 2, 3, 5, 10, 15, 20.
    assert s["log_points"] == 8


@pytest.mark.slow  # the bench subprocess
def test_machine_and_provenance(record):
    m = record["machine"]
    assert m["device"] == "cpu" and m["torch_threads"] == 1 and m["gpu_name"] is None
    assert m["cpu_count"] >= 1 and len(m["load_avg_start"]) == 3
    assert record["torch_version"] and record["date"]
    assert "--dry-run-cells 20" in record["command"]


@pytest.mark.slow  # the bench subprocess
def test_targets_section(record):
    targets = record["targets"]
    assert set(targets) == set(bench.TARGETS)
    for name, t in targets.items():
        assert t["status"] in {"PASS", "FAIL", "N/A"}
        if t["value"] is None:
            assert t["status"] == "N/A"
        else:
            op, thr = bench.TARGETS[name]
            ok = t["value"] >= thr if op == ">=" else t["value"] <= thr
            assert t["pass"] is ok and t["status"] == ("PASS" if ok else "FAIL")


@pytest.mark.parametrize("cells", [20, 1000, 7, 1])
def test_dry_run_grid_has_the_requested_cells(cells):
    from twoclocks.config import load_config

    study = load_config(bench.dry_run_config(cells))
    assert len(study.cells) == cells
    assert len({c.id for c in study.cells}) == cells


def test_bench_cell_is_the_paper_model():
    args = bench.parse_args([])
    p = bench.bench_cell(args)
    assert (p["modulus"], p["embed_dim"], p["hidden_width"], p["train_fraction"]) == (
        113,
        128,
        128,
        0.3,
    )
    assert p["combine"] == "sum" and p["seeds"] == [0, 1, 2] and p["betas"] == [0.9, 0.98]
    # The dense window scales with the run so the logged share matches a 15k-step run.
    assert p["log_dense_steps"] == round(bench.PAPER_DENSE_STEPS * args.steps / bench.PAPER_STEPS)
    assert p["log_every_steps"] == bench.PAPER_EVERY_STEPS
    assert p["snapshot_count"] == max(2, round(bench.PAPER_SNAPSHOTS * args.steps / 15000))


def test_reference_metric_set_is_the_engines():
    """The reference logs the engine's declared metrics; a metric added to the catalog without
    a reference implementation stops the bench with its name."""
    from twoclocks.train import metric_catalog as cat
    from twoclocks.train.models import model_spec

    spec = model_spec(
        {"model": "relu_embed", "embed_dim": 4, "hidden_width": 5},
        {"task": "modular", "num_classes": 7, "vocab_size": 7},
    )
    row = dict.fromkeys(cat.names_for(spec), 0.0)
    bench._check_metric_set(row, spec)
    del row["z_norm"]
    with pytest.raises(RuntimeError, match=r"missing \['z_norm'\]"):
        bench._check_metric_set(row, spec)


@pytest.mark.slow  # one training subprocess
def test_price_study_times_each_train_group():
    from twoclocks.bench_memory import price_study

    study = {
        "study": "price",
        "seeds": [0, 1],
        "stack_axes": ["weight_decay"],
        "base": {"modulus": 7, "embed_dim": 4, "hidden_width": 8, "steps": 100, "fourier_keep": 2},
        "grids": {"relu": {"axes": {"weight_decay": [0.3, 1.0]}}},
    }
    out = price_study(study, steps=8, dense=2)
    assert list(out) == ["relu"]  # the weight decays stack into one train group
    got = out["relu"]
    assert got["members"] == 2  # the study's first seed, its two weight decays
    assert 0 < got["cpu_per_member_step_s"] and 0 < got["wall_per_member_step_s"]
    assert got["wall_per_row_s"] > 0
