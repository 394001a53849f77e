"""One home for publishing directories and hashing params: atomic renames, stable hashes."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from twoclocks.config import cell_hash
from twoclocks.provenance import digest, json_safe
from twoclocks.publish import copy_dir, partial_path, write_dir


def test_write_dir_replaces_leftovers_and_the_old_output(tmp_path):
    path = tmp_path / "out" / "x.zarr"
    partial_path(path).mkdir(parents=True)
    (partial_path(path) / "stale").write_text("from a killed job")
    seen = []

    def write(partial):
        seen.append(sorted(p.name for p in partial.parent.iterdir()))
        partial.mkdir()
        (partial / "data").write_text("new")

    write_dir(path, write)
    assert seen == [[]]  # the leftover partial was removed before writing
    assert (path / "data").read_text() == "new" and not partial_path(path).exists()
    write_dir(path, lambda p: (p.mkdir(), (p / "other").write_text("2")))
    assert sorted(q.name for q in path.iterdir()) == ["other"]


def test_a_failed_write_leaves_the_published_output_alone(tmp_path):
    path = tmp_path / "x"
    write_dir(path, lambda p: (p.mkdir(), (p / "ok").write_text("1")))

    def crash(partial):
        partial.mkdir()
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_dir(path, crash)
    assert (path / "ok").read_text() == "1"


def test_copy_dir_keeps_the_first_published_entry(tmp_path):
    for name, text in (("a", "first"), ("b", "second")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(text)
        (tmp_path / name / ".snakemake_timestamp").write_text("")
    copy_dir(tmp_path / "a", tmp_path / "entry", keep_existing=True)
    copy_dir(tmp_path / "b", tmp_path / "entry", keep_existing=True)
    assert (tmp_path / "entry" / "f").read_text() == "first"
    assert not (tmp_path / "entry" / ".snakemake_timestamp").exists()
    copy_dir(tmp_path / "b", tmp_path / "entry")
    assert (tmp_path / "entry" / "f").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "entry"]  # no temp dirs


def test_cell_hash_is_sha256_of_the_canonical_json_without_names():
    params = {"lr": 0.001, "betas": [0.9, 0.98], "study": "s", "cell_id": "g/x", "steps": 3}
    core = {"betas": [0.9, 0.98], "lr": 0.001, "steps": 3}
    want = hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]
    assert cell_hash(params) == digest(core) == want
    assert len(digest(core, chars=None)) == 64 and digest(core, chars=None).startswith(want)


def test_json_safe_gives_strict_json():
    value = {1: [np.float32(1.5), math.nan, (np.int64(2), -math.inf)], "b": np.bool_(True)}
    safe = json_safe(value)
    assert safe == {"1": [1.5, None, [2, None]], "b": True}
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe
    assert json_safe(np.array([0.5, np.nan])) == [0.5, None]
