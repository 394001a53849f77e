"""The train job's memory model (`train.memory`): estimates from shapes, the declared mem_mb, the
refusal of a study that cannot fit, and the estimate against a measured peak."""

from __future__ import annotations

import re
import subprocess

import pytest
import torch
from conftest import TEST_CONFIG, TINY_RELU_CELL, snakemake_cmd

from twoclocks.config import ConfigError, load_config
from twoclocks.train import memory

# Issue 29's setting: concatenated 128-d embeddings, two hidden ReLU layers of width 512,
# (a + b) mod 97 on half of the ordered pairs, one seed.
ISSUE29 = dict(
    TINY_RELU_CELL,
    modulus=97,
    split="ordered",
    embed_dim=128,
    combine="concat",
    hidden_width=512,
    hidden_layers=2,
    seeds=[0],
)

HUGE = {
    "study": "huge",
    "seeds": [0, 1, 2],
    "device": "cpu",
    "base": {"modulus": 97, "train_fraction": 0.5, "embed_dim": 65536, "hidden_width": 10**6},
    "grids": {"relu": {"axes": {"weight_decay": [1.0]}}},
}


def test_estimate_counts_shapes_members_and_samples():
    est = memory.job_memory(ISSUE29)
    # ordered split of 97^2 pairs, concat embeddings: every pair distinct
    assert (est.n_train, est.n_test) == (4704, 97 * 97 - 4704)
    assert est.params_per_member == 97 * 128 + 512 * 256 + 512 * 512 + 2 * 512 + 97 * 512
    assert est.parts["baseline"] == memory.BASELINE_MB
    # the #29 budget: a single-seed job well under 1.5 GB, its declared memory under 4x the
    # estimate
    assert est.total_mb < 1000
    assert est.total_mb < memory.mem_mb_of(est) <= 4 * est.total_mb
    # stacked members and wider layers cost more; the baseline does not grow with them
    three = memory.job_memory(dict(ISSUE29, seeds=[0, 1, 2]))
    wide = memory.job_memory(dict(ISSUE29, hidden_width=1024))
    for other in (three, wide):
        assert other.parts["activations"] > 1.9 * est.parts["activations"]
        assert other.parts["baseline"] == est.parts["baseline"]
    assert memory.job_memory(dict(ISSUE29, dtype="float64")).total_mb > est.total_mb


def test_sum_embeddings_count_distinct_inputs():
    """Sum-combined embeddings train each unordered pair once (`distinct_samples`)."""
    est = memory.job_memory(dict(ISSUE29, combine="sum", split="unordered"))
    assert est.n_train < 4704 and est.n_train == pytest.approx(0.5 * 97 * 98 / 2, rel=0.02)


def test_declared_memory_grows_with_the_attempt_and_the_stack():
    cells = [dict(ISSUE29, cell_id=f"c{i}", weight_decay=w) for i, w in enumerate((0.3, 1.0))]
    one = memory.declared_mem_mb(cells[:1])
    assert memory.declared_mem_mb(cells[:1], attempt=2) == 2 * one
    assert memory.declared_mem_mb(cells) > one  # two cells stacked: two members
    assert one % 10 == 0


def test_deep_linear_estimate():
    """config/test.yaml's linear grid: teacher task, width 8, depth 2 and 3."""
    cells = [c for c in load_config(TEST_CONFIG).cells if c.params["model"] == "deep_linear"]
    est = {c.params["depth"]: memory.job_memory(c.params) for c in cells}
    assert est[2].params_per_member == 8 * 8 + 4 * 8
    assert est[3].params_per_member == 8 * 8 + 8 * 8 + 4 * 8
    assert est[2].n_train == 64 and est[2].n_test == 128
    assert est[3].parts["activations"] > est[2].parts["activations"]


def test_study_that_cannot_fit_is_refused_naming_cell_keys_estimate_and_fix():
    study = load_config(HUGE)
    with pytest.raises(ConfigError) as err:
        memory.check_study(study, "huge.yaml")
    msg = str(err.value)
    assert "huge.yaml" in msg and "relu/wd=1.0" in msg
    assert "hidden_width: 1000000" in msg and "embed_dim: 65536" in msg
    assert re.search(r"needs mem_mb [\d,]+", msg) and "3 member(s)" in msg
    assert "this machine's memory" in msg
    assert "seeds" in msg and "stack_axes" in msg and "max_job_mem_mb" in msg
    # a cluster run without a cap: the scheduler, not this machine, decides
    memory.check_study(study, "huge.yaml", local=False)


def test_max_job_mem_mb_caps_every_job():
    ok = load_config(TEST_CONFIG)
    memory.check_study(ok, "test.yaml")  # the tiny study fits
    base = {"modulus": 13, "embed_dim": 16, "hidden_width": 32, "fourier_keep": 3}
    cfg = {**HUGE, "max_job_mem_mb": 400, "base": base}
    with pytest.raises(ConfigError, match=r"above max_job_mem_mb \(400 MB\)"):
        memory.check_study(load_config(cfg), "capped.yaml", local=False)
    memory.check_study(load_config(dict(cfg, max_job_mem_mb=4000)), "roomy.yaml")


@pytest.mark.slow  # two snakemake dry runs
def test_dry_run_names_the_cell_and_estimate_and_declares_mem_mb(tmp_path):
    import yaml

    bad = tmp_path / "huge.yaml"
    bad.write_text(yaml.safe_dump(HUGE))
    out = subprocess.run(
        snakemake_cmd(tmp_path, "-n", config=bad), capture_output=True, text=True, timeout=300
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "relu/wd=1.0" in text and re.search(r"needs mem_mb [\d,]+: estimate ~[\d,]+ MB", text)
    assert not (tmp_path / "results").exists()
    ok = subprocess.run(
        snakemake_cmd(tmp_path, "-n", "-p"), capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    study = load_config(TEST_CONFIG)
    want = {memory.declared_mem_mb([c.params for c in cells]) for cells in study.groups.values()}
    got = {int(v) for v in re.findall(r"mem_mb=(\d+)", ok.stdout + ok.stderr)}
    assert want <= got


@pytest.mark.slow  # trains in a subprocess
def test_estimate_within_25_percent_of_the_measured_peak():
    from twoclocks.bench_memory import measure_job

    cell = dict(ISSUE29, hidden_width=256, hidden_layers=1, steps=4, log_dense_steps=4)
    cell.update(snapshot_count=2, checkpoint_every_steps=1000)
    big = torch.ones(100 * 2**20)  # 400 MB in this process: not the child's peak
    got = measure_job(cell)["peak_rss_mb"]
    del big
    est = memory.job_memory(cell).total_mb
    assert 0.75 <= est / got <= 1.25, (est, got)
    assert memory.mem_mb_of(memory.job_memory(cell)) >= got


def _transformer(**kw) -> memory.JobMemory:
    from twoclocks.bench_memory import transformer_cell

    return memory.job_memory(transformer_cell(**kw))


def test_transformer_estimate_grows_with_its_shapes_samples_and_members():
    """The transformer's estimate (beyond.yaml's d_model 128, 4 heads, MLP 512): every part
    grows with layers, members, d_mlp and the train set; the baseline does not."""
    one = _transformer(modulus=97, n_layers=1)
    assert (one.n_train, one.n_test) == (4704, 97 * 97 - 4704)
    assert one.params_per_member == 98 * 128 + 3 * 128 + 4 * 128**2 + 2 * 512 * 128 + 640 + 97 * 128
    bigger = {
        "layers": _transformer(modulus=97, n_layers=2),
        "members": _transformer(modulus=97, n_layers=1, members=3),
        "d_mlp": _transformer(modulus=97, n_layers=1, d_mlp=1024),
        "d_model": _transformer(modulus=97, n_layers=1, d_model=256),
    }
    for name, est in bigger.items():
        assert est.parts["activations"] > one.parts["activations"], name
        assert est.parts["baseline"] == one.parts["baseline"], name
    assert bigger["members"].parts["activations"] == pytest.approx(3 * one.parts["activations"])
    small = _transformer(modulus=47, n_layers=1)
    assert small.n_train == 47 * 47 // 2 and small.total_mb < one.total_mb
    # the last layer runs queries, output map and MLP at one position: cheaper than a full one
    spec_floats = one.parts["activations"] / one.n_train
    full_layer = bigger["layers"].parts["activations"] / one.n_train - spec_floats
    assert full_layer > spec_floats / 2
    # the #29 bound holds: declared memory covers the estimate, at most 4x it
    for est in (one, *bigger.values(), small):
        assert est.total_mb < memory.mem_mb_of(est) <= 4 * est.total_mb


@pytest.mark.slow  # trains two transformer jobs in subprocesses (~15 s idle)
@pytest.mark.parametrize("modulus,layers,members", [(97, 1, 2), (47, 2, 3)])
def test_transformer_estimate_within_25_percent_of_the_measured_peak(modulus, layers, members):
    from twoclocks.bench_memory import measure_job, transformer_cell

    cell = transformer_cell(modulus=modulus, n_layers=layers, members=members, steps=3)
    got = measure_job(cell)["peak_rss_mb"]
    est = memory.job_memory(cell)
    assert 0.75 <= est.total_mb / got <= 1.25, (est.describe(), got)
    assert memory.mem_mb_of(est) >= got
