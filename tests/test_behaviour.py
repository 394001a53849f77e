"""Behaviour preservation: the engine writes the same bytes as when the fixture was recorded.

The fixture (tests/data/behaviour_checksums.json, written by tests/data/make_checksums.py before
the registry refactor) holds a sha256 of every variable of the tiny study's trajectory stores,
plus extra cells on paths config/test.yaml does not take (concat + two hidden layers + SGD in
float64, deep linear on tokens, a diverging member), and of each clock's rows. A refactor that
changes any value, dtype, shape, long_name or units fails here, naming the variable.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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
    got = maker.compute(fixture["inputs"], tmp_path)
    problems = maker.diff(fixture["checksums"], got)
    assert not problems, "behaviour changed:\n" + "\n".join(problems)


def test_checksums_see_a_one_ulp_change():
    """The digest is over raw bytes: one ulp in one element changes it."""
    import numpy as np

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
    allowed = {"test_loss", "gen_loss", "__var_attrs__"}
    assert maker._accepted("/relu/store/test_loss: changed", allowed)
    assert maker._accepted("/relu/clocks/relu/wd=0.5/gen_loss: changed", allowed)
    assert not maker._accepted("/relu/store/train_loss: changed", allowed)
    assert not maker._accepted("/relu/clocks/relu/wd=0.5/cls_loss: changed", allowed)
    assert not maker._accepted("/relu/clocks/test_loss/wd=0.5/cls_loss: changed", allowed)
    old, new = {"a": "1", "b": "2", "gone": "3"}, {"a": "9", "b": "8"}
    maker._take(old, new, {"a", "gone"})
    assert old == {"a": "9", "b": "2"}
