"""The report's clocks across model families and optimisers (issue 29's cross-architecture
table): medians per (model, optimizer), from the grids' settings, with the law decisions."""

from __future__ import annotations

import math

import pandas as pd

from twoclocks.report.tables import by_architecture

CONFIG = {
    "base": {"model": "relu_embed", "optimizer": "adamw"},
    "grids": {
        "mlp_adamw": {"set": {}},
        "mlp_muon": {"set": {"optimizer": "muon"}},
        "tf": {"set": {"model": "transformer"}},
    },
}


def _runs():
    rows = []
    for cid, t_cls, t_rep, t_gen in [
        ("mlp_adamw/wd=1", 100.0, 400.0, 1000.0),
        ("mlp_adamw/wd=1", 200.0, 600.0, None),
        ("mlp_muon/wd=1", 50.0, 100.0, 150.0),
        ("tf/wd=1", 300.0, None, 900.0),
    ]:
        rows.append({"cell_id": cid, "seed": len(rows), "t_cls": t_cls, "t_rep": t_rep,
                     "t_gen": t_gen, "relapsed": False, "grokked": t_gen is not None})  # fmt: skip
    return pd.DataFrame(rows).astype({"t_rep": float, "t_gen": float})


def _clocks():
    return pd.DataFrame(
        {
            "cell_id": ["mlp_adamw/wd=1", "mlp_muon/wd=1", "tf/wd=1"],
            "grid": ["mlp_adamw", "mlp_muon", "tf"],
        }  # fmt: skip
    )


def test_one_row_per_model_and_optimizer_with_median_clocks_and_ratios():
    claims = [
        {
            "id": "cls_log_law",
            "details": {
                "laws": {
                    "mlp_adamw/wd=1": {"decision": "log-like"},
                    "tf/wd=1": {"decision": "INCONCLUSIVE"},
                }
            },
        }
    ]
    got = by_architecture(_runs(), _clocks(), CONFIG, claims).set_index(["model", "optimizer"])
    assert set(got.index) == {("relu_embed", "adamw"), ("relu_embed", "muon"),
                              ("transformer", "adamw")}  # fmt: skip
    mlp = got.loc[("relu_embed", "adamw")]
    assert mlp["grokked"] == "1/2" and mlp["t_cls"] == 150.0 and mlp["t_rep"] == 500.0
    assert mlp["rep_ratio"] == 3.5  # median of 400/100 and 600/200
    assert mlp["gen_ratio"] == 10.0  # the only run whose T_gen fired
    assert mlp["cls_log_law"] == "log-like 1" and mlp["rep_power_law"] == "-"
    tf = got.loc[("transformer", "adamw")]
    assert math.isnan(tf["t_rep"]) and tf["gen_ratio"] == 3.0
    assert tf["cls_log_law"] == "INCONCLUSIVE 1"


def test_a_grid_axis_names_the_optimizer_of_its_cells():
    clocks = _clocks().assign(optimizer=["adamw", "sgd", "adamw"])
    got = by_architecture(_runs(), clocks, CONFIG)
    assert ("relu_embed", "sgd") in set(zip(got["model"], got["optimizer"], strict=True))


def test_nothing_without_grids():
    assert by_architecture(_runs(), _clocks().drop(columns="grid"), CONFIG).empty
