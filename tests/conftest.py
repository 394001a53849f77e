"""Shared test set-up: tiny cells train fastest on one intra-op thread of a busy 2-core box;
no test depends on a random draw (hypothesis is derandomized, global RNGs are seeded per test).

Test tiers: `python -m pytest` runs everything (the README's command, CI); `python -m pytest -m
"not slow"` is the fast inner-loop tier (no full DAG, bench subprocess, kill-and-resume or SLURM).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

# Derandomized: the same examples on every run and machine, so a pass or a failure reproduces;
# no example database, so a stored failure of one run cannot change the next.
settings.register_profile("twoclocks", derandomize=True, database=None, print_blob=True)
settings.load_profile("twoclocks")

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "test.yaml"


def snakemake_cmd(workdir: Path, *args: str, config: Path | None = TEST_CONFIG) -> list[str]:
    """``python -m snakemake`` on the repo's Snakefile for a study (default: the tiny one;
    ``config=None``: the Snakefile's own default), run in ``workdir`` (nothing copied there)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    if config is not None:
        cmd += ["--configfile", str(config)]
    return [*cmd, "--directory", str(workdir), *args]


TINY_RELU_CELL = dict(
    study="t",
    grid="relu",
    cell_id="relu/wd=1.0",
    task="modular",
    op="add",
    modulus=13,
    train_fraction=0.5,
    split="unordered",
    split_seed=0,
    model="relu_embed",
    embed_dim=12,
    combine="sum",
    hidden_width=24,
    hidden_layers=1,
    bias=True,
    init_scale=1.0,
    optimizer="adamw",
    lr=1e-2,
    betas=[0.9, 0.98],
    adam_eps=1e-8,
    momentum=0.0,
    weight_decay=1.0,
    steps=120,
    seeds=[0, 1, 2],
    device="cpu",
    dtype="float32",
    log_dense_steps=10,
    log_every_steps=10,
    snapshot_count=4,
    checkpoint_every_steps=40,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread is several times faster on a busy 2-core CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seeded_global_rngs():
    """Code that draws from torch's or numpy's global generator sees the same numbers every run."""
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (seeds the legacy global generator on purpose)
