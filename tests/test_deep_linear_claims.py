"""The deep-linear lazy-regime claims (issue 13) on hand-built clocks tables and fits records:
each rule's PASS, FAIL and INCONCLUSIVE, with the thresholds of the `claims:` section."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from twoclocks.analyze import claims as C

T_CLS = 100.0


def _rows(cell_id: str, wd: float, scheme: str, ratio: float | None, g_ref: float = 2.0):
    """Three seeds of rep_spurious at eta 0.1 (and 0.5); ratio None = the clock never fired."""
    out = []
    for seed in range(3):
        for level in (0.5, 0.1):
            fired = ratio is not None
            out.append(
                {
                    "study": "s",
                    "grid": cell_id.split("/")[0],
                    "cell_id": cell_id,
                    "cell_hash": "0" * 12,
                    "depth": 3,
                    "weight_decay": wd,
                    "init_scheme": scheme,
                    "seed": seed,
                    "clock": "rep_spurious",
                    "level": level,
                    "step": (ratio * T_CLS * (1 + 0.1 * seed) * level / 0.1) if fired else np.nan,
                    "censored": not fired,
                    "pre_fit": False,
                    "unresolved": False,
                    "below_floor": False,
                    "diverged": False,
                    "t_cls_ref": T_CLS,
                    "g_ref": g_ref,
                }
            )
    return out


def _clocks(lazy_ratio=50.0, wd0_ratio=None, rich_ratio=None) -> pd.DataFrame:
    rows = []
    for wd in (0.01, 0.03, 0.1):
        rows += _rows(f"lazy/wd={wd}", wd, "orthogonal", lazy_ratio)
    rows += _rows("wd0/wd=0.0", 0.0, "orthogonal", wd0_ratio)
    rows += _rows("rich/wd=0.1", 0.1, "uniform", rich_ratio, g_ref=0.01)
    return pd.DataFrame(rows)


def _by_id(clocks, fits=None, study=None, settings=None):
    return {c["id"]: c for c in C.evaluate_claims(study, clocks, fits, settings or {})}


def test_deep_linear_passes_on_a_slow_spurious_clock_and_fails_on_a_fast_one():
    got = _by_id(_clocks(lazy_ratio=50.0))["deep_linear"]
    assert got["verdict"] == "PASS", got["evidence"]
    assert set(got["details"]["per_cell"]) == {"lazy/wd=0.01", "lazy/wd=0.03", "lazy/wd=0.1"}
    assert np.isclose(got["details"]["per_cell"]["lazy/wd=0.1"], 55.0)  # median of 50, 55, 60
    fast = _by_id(_clocks(lazy_ratio=2.0))["deep_linear"]
    assert fast["verdict"] == "FAIL"
    # the threshold comes from the claims: section
    strict = _by_id(_clocks(lazy_ratio=50.0), settings={"dln_min_ratio": 100.0})["deep_linear"]
    assert strict["verdict"] == "FAIL"


def test_deep_linear_counts_cells_that_never_fired_as_no_clock():
    clocks = _clocks(lazy_ratio=None)
    got = _by_id(clocks)["deep_linear"]
    assert got["verdict"] == "INCONCLUSIVE" and "0 lazy runs" in got["evidence"]


def test_deep_linear_without_lazy_cells_is_inconclusive():
    clocks = _clocks()
    clocks = clocks[~clocks["cell_id"].str.startswith("lazy")]
    got = _by_id(clocks)["deep_linear"]
    assert got["verdict"] == "INCONCLUSIVE" and "no deep linear" in got["evidence"]


def test_controls_pass_when_no_control_cell_has_a_slow_clock():
    ok = _by_id(_clocks(wd0_ratio=None, rich_ratio=1.5))["dln_controls"]
    assert ok["verdict"] == "PASS", ok["evidence"]
    assert ok["details"]["per_cell"]["wd0/wd=0.0"] == 0.0
    bad = _by_id(_clocks(wd0_ratio=None, rich_ratio=40.0))["dln_controls"]
    assert bad["verdict"] == "FAIL" and "1/2 control cells" in bad["evidence"]


def _scaling(group: dict, est: float, lo: float, hi: float, status: str = "ok") -> dict:
    return {
        "fit": "scaling",
        "clock": "rep_spurious",
        "axis": "weight_decay",
        "level": 0.1,
        "group": json.dumps(group),
        "status": status,
        "reason": "",
        "params": {"exponent": {"estimate": est, "ci_low": lo, "ci_high": hi}},
    }


def test_rate_scaling_passes_only_when_every_interval_holds_minus_one():
    g1 = {"optimizer": "sgd", "init_scheme": "orthogonal", "depth": 3}
    g2 = {"optimizer": "adamw", "init_scheme": "orthogonal", "depth": 3}
    rich = {"optimizer": "adamw", "init_scheme": "uniform", "depth": 3}
    fits = {"scaling": [_scaling(g1, -1.02, -1.1, -0.95), _scaling(rich, -0.2, -0.3, -0.1)]}
    got = _by_id(_clocks(), fits)["dln_rate_scaling"]
    assert got["verdict"] == "PASS", got["evidence"]  # the rich sweep is not judged
    fits["scaling"].append(_scaling(g2, -0.6, -0.62, -0.58))
    got = _by_id(_clocks(), fits)["dln_rate_scaling"]
    assert got["verdict"] == "FAIL" and "1/2 lazy sweeps" in got["evidence"]
    none = _by_id(_clocks(), {"scaling": [_scaling(g1, np.nan, np.nan, np.nan, "insufficient")]})
    assert none["dln_rate_scaling"]["verdict"] == "INCONCLUSIVE"


def _law(preferred: str) -> dict:
    return {"fit": "law", "clock": "rep_spurious", "status": "ok", "preferred": preferred,
            "params": {"b": {"estimate": 1e3}, "k": {"estimate": 0.1}}}  # fmt: skip


def test_rep_law_reports_the_selected_law():
    cells = {f"lazy/wd={wd}": {"fits": [_law(law)]}
             for wd, law in ((0.01, "log"), (0.03, "log"), (0.1, "power"))}  # fmt: skip
    got = _by_id(_clocks(), {"cells": cells})["dln_rep_law"]
    assert got["verdict"] == "PASS" and "logarithmic in 2/3" in got["evidence"]
    cells["lazy/wd=0.03"] = {"fits": [_law("power")]}
    assert _by_id(_clocks(), {"cells": cells})["dln_rep_law"]["verdict"] == "FAIL"


def _sv_store(cell_id: str, rates: np.ndarray) -> xr.Dataset:
    steps = np.arange(0, 1001, 50)
    s0 = np.array([5.0, 3.0, 1.0, 0.5])
    sv = s0[None, None, :] * np.exp(-steps[None, :, None] * rates[None, None, :])
    sv = np.repeat(sv, 2, axis=0)
    cell = {"cell_id": cell_id, "model": "deep_linear", "depth": 3, "weight_decay": 0.1,
            "init_scheme": "orthogonal"}  # fmt: skip
    return xr.Dataset(
        {"singular_values": (("seed", "step", "sv"), sv)},
        coords={"seed": [0, 1], "step": steps},
        attrs={"cell": json.dumps(cell)},
    )


def test_small_singular_values_shrink_faster_from_the_late_rates():
    clocks = _clocks()
    ordered = np.array([1e-4, 5e-4, 2e-3, 4e-3])  # smallest singular value fastest
    study = {c: _sv_store(c, ordered) for c in ("lazy/wd=0.01", "lazy/wd=0.03")}
    got = _by_id(clocks, study=study)["small_sv_shrink_faster"]
    assert got["verdict"] == "PASS", got["evidence"]
    assert all(np.isclose(v, 1.0) for v in got["details"]["rho"].values())
    study = {c: _sv_store(c, ordered[::-1]) for c in ("lazy/wd=0.01", "lazy/wd=0.03")}
    got = _by_id(clocks, study=study)["small_sv_shrink_faster"]
    assert got["verdict"] == "FAIL"
    assert _by_id(clocks)["small_sv_shrink_faster"]["verdict"] == "INCONCLUSIVE"


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_deep_lazy_figure_puts_lazy_next_to_rich_and_saves_identically(tmp_path):
    from twoclocks.report import figures as F

    steps = np.arange(0, 2001, 100)
    stores = {}
    for cid, scheme in (("lazy/wd=0.1", "orthogonal"), ("rich/wd=0.1", "uniform")):
        t = steps[None, :] * np.ones((2, 1))
        cell = {"cell_id": cid, "model": "deep_linear", "depth": 3, "weight_decay": 0.1,
                "optimizer": "sgd", "init_scheme": scheme}  # fmt: skip
        dims = ("seed", "step")
        stores[cid] = xr.Dataset(
            {
                "train_loss": (dims, np.exp(-t / 100.0)),
                "spurious_energy": (dims, 2.0 * np.exp(-t / 500.0)),
                "srank": (("seed", "step", "matrix"), np.ones((2, len(steps), 1)) * 1.5),
                "test_acc": (dims, 0.4 + 0.1 * t / 2000.0),
            },
            coords={"seed": [0, 1], "step": steps, "matrix": ["A"]},
            attrs={"cell": json.dumps(cell)},
        )
    chart = F.fig_deep_lazy(stores)
    spec = chart.to_dict()
    assert len(spec["vconcat"]) == 4 and all(len(r["hconcat"]) == 2 for r in spec["vconcat"])
    a = F.save_chart(chart, tmp_path / "a" / "deep_lazy")
    b = F.save_chart(F.fig_deep_lazy(stores), tmp_path / "b" / "deep_lazy")
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    del stores["lazy/wd=0.1"]["spurious_energy"], stores["rich/wd=0.1"]["spurious_energy"]
    with pytest.raises(F.FigureSkipped):
        F.fig_deep_lazy(stores)
