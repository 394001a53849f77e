"""config/beyond_quick.yaml (opt-in): config/beyond.yaml except what its header's rule names
(modulus, betas, weight decays, seeds, steps, train_threads), and small enough for 2 cores."""

from __future__ import annotations

from pathlib import Path

import yaml

from twoclocks import config
from twoclocks.train import memory

REPO = Path(__file__).resolve().parents[1]
RULE = {"modulus", "betas", "weight_decay", "seeds", "steps", "train_threads", "study"}
RULE |= {"group_id", "cell_id", "cell_hash", "dataset_id", "seed"}  # derived from the above


def test_quick_study_is_beyond_but_for_its_rule():
    quick = config.load_config(REPO / "config" / "beyond_quick.yaml")
    full = config.load_config(REPO / "config" / "beyond.yaml")
    assert len(quick.cells) == 8 and len(quick.groups) == 4
    for cells in quick.groups.values():
        p = memory.group_memory([c.params for c in cells])
        assert p.members == 4 and p.n_train == 47 * 47 // 2
        assert memory.mem_mb_of(p) < 2000  # two jobs at once fit a small machine
    for c in quick.cells:
        assert c.params["modulus"] == 47 and c.params["steps"] == 5000
        twin = next(
            f.params
            for f in full.cells
            if (f.params["model"], f.params["optimizer"])
            == (c.params["model"], c.params["optimizer"])
        )
        differ = {k for k in set(c.params) | set(twin) if c.params.get(k) != twin.get(k)}
        assert differ <= RULE, differ - RULE
    raw = yaml.safe_load((REPO / "config" / "beyond_quick.yaml").read_text())
    assert raw["train_threads"] == 1 and raw["base"]["betas"] == [0.9, 0.98]
