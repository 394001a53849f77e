"""Figures: thinning, Fig. 2 ordering and spectra, skips, row limits, deterministic PNG/SVG."""

from __future__ import annotations

import json
import re

import altair as alt
import numpy as np
import pandas as pd
import pytest
import synthetic_report as sr

from twoclocks.report import figures as F


@pytest.fixture(scope="module")
def built():
    cells = sr.study()
    return cells, F.build_figures(cells, sr.clocks(cells), {})


def _datasets(spec: dict) -> list[list]:
    """All inline data value lists of a Vega-Lite spec (top-level datasets and nested data)."""
    out = list(spec.get("datasets", {}).values())

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("data"), dict) and "values" in node["data"]:
                out.append(node["data"]["values"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    return out


@pytest.mark.parametrize("n,m", [(5, 400), (401, 400), (10_000, 400), (3000, 37)])
def test_thin_indices_keep_ends_sorted_and_bounded(n, m):
    idx = F.thin_indices(n, m)
    assert idx[0] == 0 and idx[-1] == n - 1
    assert np.all(np.diff(idx) > 0) and idx.size <= max(m, min(n, m))
    if n <= m:
        assert idx.size == n


@pytest.mark.parametrize("p", [5, 13, 113])
def test_generator_order_is_a_permutation_of_units(p):
    order = F.generator_order(p)
    assert sorted(order.tolist()) == list(range(1, p))
    g = F.primitive_root(p)
    assert order[1] == g % p


def test_fourier_spectrum_finds_the_frequency():
    p, k = 13, 4
    a = np.arange(p)[:, None]
    rows = np.cos(2 * np.pi * k * a / p + np.linspace(0, 1, 7)[None, :])
    spec = F.fourier_spectrum(rows)
    assert spec.size == p // 2 + 1 and int(np.argmax(spec)) == k
    assert spec[k] / spec.sum() > 0.99
    assert np.isclose(spec.sum(), np.square(rows - rows.mean(axis=0)).sum())  # Parseval


def test_all_figures_build_under_row_limit(built):
    _cells, (charts, notes) = built
    # every figure but the frozen-gate one (drawn from the reduce stage's measures only)
    assert [n for n in notes if not n.startswith("reduction_drift:")] == []
    assert set(charts) >= {
        "fig1_loss",
        "fig3_loss_srank",
        "srank_generalisation",
        "fig2_embedding",
        "fig2_head",
        "fig2_spectra",
        "clock_cls",
        "clock_rep",
        "separation_ratio",
        "clocks_depth",
        "grad_bounds",
        "gates",
        "deep_singular_values",
        "deep_schatten",
    }
    for name, chart in charts.items():
        spec = chart.to_dict()  # raises past 5,000 rows
        rows = sum(len(v) for v in _datasets(spec))
        assert 0 < rows <= 5000, name


def test_thinning_keeps_the_last_step(built):
    cells, (charts, _notes) = built
    last = float(sr.STEPS[-1])
    values = [r for v in _datasets(charts["fig1_loss"].to_dict()) for r in v]
    assert max(r["step"] for r in values) == last
    assert min(r["step"] for r in values) == 0.0
    per_line = {}
    for r in values:
        per_line.setdefault((r["cell_id"], r["series"]), []).append(r["step"])
    assert all(len(v) <= F.MAX_POINTS for v in per_line.values())
    # the band is the seed min/max: the line lies inside it
    assert all(r["lo"] <= r["mean"] * (1 + 1e-12) <= r["hi"] * (1 + 1e-9) for r in values)


def test_missing_inputs_are_skipped_with_notes():
    cells = sr.study(deep=False)
    charts, notes = F.build_figures(cells, sr.clocks(cells), None)
    skipped = " ".join(notes)
    for name in ("clocks_depth", "deep_singular_values", "deep_schatten"):
        assert name not in charts and name in skipped
    assert "fig1_loss" in charts
    charts, notes = F.build_figures(cells, None, None)
    assert "clock_cls" not in charts and "fig2_embedding" in charts


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_save_chart_is_deterministic_and_offline(built, tmp_path):
    _cells, (charts, _notes) = built
    for name in ("fig1_loss", "fig2_embedding", "clock_rep", "separation_ratio", "gates"):
        a = F.save_chart(charts[name], tmp_path / "a" / name)
        b = F.save_chart(charts[name], tmp_path / "b" / name)
        assert [p.suffix for p in a] == [".html", ".png", ".svg"]
        for pa, pb in zip(a, b, strict=True):
            assert pa.read_bytes() == pb.read_bytes() and pa.stat().st_size > 1000
        assert a[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        html = a[0].read_text()
        assert "<script src" not in html and "cdn.jsdelivr" not in html
        assert "window.vegaEmbed=" in html


def test_additive_order_turns_the_key_frequency_into_one_cycle():
    p, k = 47, 9
    r = np.arange(p)
    rows = np.stack([np.cos(2 * np.pi * k * r / p), np.sin(2 * np.pi * k * r / p)], axis=1)
    order, g, found = F.additive_order(rows, p)
    assert found == k and (g * k) % p == 1
    assert sorted(order.tolist()) == list(range(p))
    np.testing.assert_allclose(rows[order, 0], np.cos(2 * np.pi * r / p), atol=1e-12)


def _rep_law(preferred: str, **params) -> dict:
    est = {k: {"estimate": v, "ci_low": v, "ci_high": v} for k, v in params.items()}
    return {"fit": "law", "clock": "rep_srank", "status": "ok", "preferred": preferred,
            "params": est}  # fmt: skip


@pytest.mark.parametrize("preferred", ["log", "power"])
def test_rep_clock_draws_the_chosen_law_whichever_it_is(preferred):
    cells = sr.study(deep=False)
    clocks = sr.clocks(cells)
    law = {
        "log": _rep_law("log", a=3000.0, b=40.0, delta_aic=3.0),
        "power": _rep_law("power", T0=3000.0, C=30.0, k=0.5, delta_aic=-3.0),
    }[preferred]
    first, *rest = sorted(cells)
    fits = {"cells": {first: {"fits": [law]}}}
    spec = F.fig_rep_clock(clocks, fits, cells).to_dict()
    lines = [r for v in _datasets(spec) for r in v if "fit" in r]
    assert {r["cell_id"] for r in lines} == {first}  # a line for the cell with an ok law
    assert all(r["law"].startswith(preferred) for r in lines)
    eta = np.array([r["level"] for r in lines])
    want = 3000.0 + (40.0 * np.log(1 / eta) if preferred == "log" else 30.0 * eta**-0.5)
    np.testing.assert_allclose([r["fit"] for r in lines], want, rtol=1e-9)
    # the cells without an ok fit are named, not silently left bare
    assert spec["title"]["subtitle"] == [f"no ok law fit (no line): {', '.join(rest)}"]


def test_log_axes_span_the_data_and_say_what_they_left_out():
    df = pd.DataFrame(
        {"mean": [0.0, 1e-3, 2e-3, 4e-3], "lo": [0.0, 0.0, 1e-3, 2e-3], "hi": [0, 2e-3, 3e-3, 5e-3]}
    )
    out, note = F.log_domain(df)
    assert len(out) == 3 and out["lo"].min() == 1e-3  # the smallest positive value, not 1e-30
    assert (
        note
        == "1 points with mean <= 0 not drawn (log axis); 1 band lower ends <= 0 drawn at 0.001"
    )
    assert F.log_domain(df.iloc[2:])[1] == ""  # nothing moved: no note


def test_gates_panel_domain_follows_its_data():
    cells = sr.study(deep=False)
    for ds in cells.values():  # a seed whose gates never flip: its min is exactly 0
        ds["gate_flip_fraction"][0] = 0.0
    raw = np.concatenate(
        [
            ds[v].values.ravel()
            for ds in cells.values()
            for v in ("gate_flip_fraction", "preact_min_abs")
        ]
    )
    smallest = raw[raw > 0].min()
    spec = F.fig_gates(cells).to_dict()
    lows = [r["lo"] for v in _datasets(spec) for r in v]
    # the axis ends at the data (a seed mean with one zero seed is >= smallest / 3), not 1e-30
    assert min(lows) >= smallest / len(sr.SEEDS)
    assert "band lower ends <= 0" in json.dumps(spec)  # and says what it raised


def test_separation_ratio_names_the_weight_decays_it_leaves_out():
    cells = sr.study(deep=False)
    clocks = sr.clocks(cells)
    gone = clocks["cell_id"].eq("relu/wd=0.8") & clocks["clock"].eq("gen_acc")
    clocks.loc[gone, "censored"] = True  # no run of wd 0.8 reaches the generalisation clock
    clocks.loc[gone, "step"] = np.nan
    spec = F.fig_separation_ratio(clocks, cells).to_dict()
    drawn = {r["weight_decay"] for v in _datasets(spec) for r in v if "ratio_of" in r}
    assert 0.8 in drawn  # T_rep/T_cls still has it
    assert spec["title"]["subtitle"] == ["R = T_gen / T_cls: no run at weight decay 0.8"]


def test_heatmaps_have_a_colour_scale_and_residue_row_labels():
    cells = sr.study(deep=False)
    spec = F.fig_generator_heatmap(cells, "E").to_dict()
    for panel in spec["hconcat"]:
        enc = panel["encoding"]
        assert enc["color"]["legend"]["title"][0] == "projection"
        assert enc["y"]["field"] == "residue" and enc["y"].get("axis", {}).get("labels", True)
        assert sorted(enc["y"]["sort"]) == list(range(sr.MODULUS))


def test_svg_gradient_ids_do_not_depend_on_earlier_renders():
    a = '<linearGradient id="gradient_7"/><rect fill="url(#gradient_7)"/><g id="gradient_9"/>'
    assert F.stable_svg(a) == (
        '<linearGradient id="gradient_0"/><rect fill="url(#gradient_0)"/><g id="gradient_1"/>'
    )


def test_separation_ratio_names_a_ratio_it_cannot_draw_at_all():
    cells = sr.study(deep=False)
    clocks = sr.clocks(cells)
    gen = clocks["clock"].eq("gen_acc")
    clocks.loc[gen, "censored"], clocks.loc[gen, "step"] = True, np.nan  # nothing generalises
    spec = F.fig_separation_ratio(clocks, cells).to_dict()
    assert spec["title"]["subtitle"] == ["T_gen / T_cls: no run with both clocks"]


# --- the figure registry -------------------------------------------------------------------------
STEMS = [  # the report's file stems, in its order; renaming one breaks links to older reports
    "fig1_loss",
    "fig3_loss_srank",
    "srank_generalisation",
    "fig2_embedding",
    "fig2_head",
    "fig2_spectra",
    "clock_cls",
    "clock_rep",
    "separation_ratio",
    "clocks_depth",
    "grad_bounds",
    "gates",
    "deep_singular_values",
    "deep_schatten",
    "deep_lazy",
    "reduction_drift",
]


def test_every_figure_is_registered_with_a_caption_that_states_no_verdict():
    assert list(F.FIGURES) == STEMS
    verdicts = re.compile(r"\b(PASS|FAIL|INCONCLUSIVE|confirm\w*|as predicted|falls inside)\b")
    for name, fig in F.FIGURES.items():
        assert fig.name == name and len(fig.caption) > 30, name
        assert not verdicts.search(fig.caption), (name, fig.caption)
    assert F.caption("fig1_loss") == F.FIGURES["fig1_loss"].caption


def test_a_figure_without_a_caption_cannot_register():
    with pytest.raises(ValueError, match="'nameless' needs a caption"):
        F.figure("nameless", "  ")(lambda study: None)
    assert "nameless" not in F.FIGURES
    with pytest.raises(ValueError, match="takes no"):
        F.figure("typo", "A caption long enough.", blok="E")(F.fig_generator_heatmap)


def test_unknown_figure_names_the_choices():
    with pytest.raises(KeyError, match=r"unknown figure 'fig9'.*fig1_loss, fig3_loss_srank"):
        F.figure_named("fig9")


def test_a_registered_figure_is_drawn_from_the_inputs_it_names():
    calls = []

    @F.figure("toy_figure", "Toy: the number of cells vs nothing.", scale=2)
    def toy(study, max_points, scale):
        calls.append((len(study), max_points, scale))
        return alt.Chart(pd.DataFrame({"x": [1]})).mark_point()

    try:
        charts, _notes = F.build_figures({}, None, None, max_points=17)
        assert "toy_figure" in charts and calls == [(0, 17, 2)]
    finally:
        F.FIGURES.pop("toy_figure")


def test_fig3_plots_the_matrix_the_srank_claim_judges():
    """Issue 26: srank_drop judges the gated map while Fig. 3 plotted UW."""
    cells = sr.study(deep=False)
    spec = F.fig_loss_srank(cells).to_dict()
    assert "matrix gated (the srank_drop claim's matrix)" in spec["title"]
    rows = [r for v in _datasets(spec) for r in v if r.get("series") == "srank(gated)"]
    ds = cells["relu/wd=0.6"]
    want = ds["srank_gated"].mean("seed").sel(step=0.0).item()
    first = [r for r in rows if r["cell_id"] == "relu/wd=0.6" and r["step"] == 0.0]
    assert first and first[0]["mean"] == pytest.approx(want)
    # a config that pre-registers another matrix moves the figure with the claim
    spec = F.fig_loss_srank(cells, claim_settings={"srank_claim_matrix": "UW"}).to_dict()
    assert "matrix UW (the srank_drop claim's matrix)" in spec["title"]
    # a store without the claim's matrix says so instead of silently plotting another one
    old = {k: v.drop_vars("srank_gated") for k, v in cells.items()}
    spec = F.fig_loss_srank(old).to_dict()
    assert "(claim's 'gated' not logged)" in spec["title"]


def test_separation_figure_plots_the_claims_ratio():
    """One separation ratio: the figure's per-cell values are the separation claim's, at the
    claims' eps (issue 26 found 2.8 and 9.1 for one cell)."""
    from twoclocks.analyze.claims import evaluate_claims

    cells = sr.study(deep=False)
    clocks = sr.clocks(cells)
    for settings in ({}, {"cls_eps": 1e-3}):
        claim = next(
            c for c in evaluate_claims(cells, clocks, {}, settings) if c["id"] == "separation"
        )
        per_cell = claim["details"]["per_cell"]
        spec = F.fig_separation_ratio(clocks, cells, claim_settings=settings).to_dict()
        rows = [r for v in _datasets(spec) for r in v if str(r.get("ratio_of", "")).startswith("R")]
        eps = settings.get("cls_eps", 1e-6)
        assert {r["ratio_of"] for r in rows} == {"R = T_gen / T_cls"}
        assert spec["layer"][1]["encoding"]["y"]["title"].startswith(f"T_slow / T_cls(eps={eps:g})")
        wd_of = {cid: float(cid.split("=")[1]) for cid in per_cell}
        got = {r["weight_decay"]: r["median"] for r in rows}
        assert got == pytest.approx({wd_of[c]: v for c, v in per_cell.items()})


def test_fig2_orders_rows_by_the_phase_of_each_key_frequency():
    """Issue 26: with 8 key frequencies one generator order shows noise; per key frequency the
    rows read in phase order k * a mod p trace one clean cycle, next to the judged spectrum."""
    p, rng = 23, np.random.default_rng(0)
    a = np.arange(p)[:, None]
    dirs = np.linalg.qr(rng.normal(size=(16, 4)))[0].T  # orthonormal feature directions
    rows = (
        3.0 * (np.cos(2 * np.pi * 5 * a / p) * dirs[0] + np.sin(2 * np.pi * 5 * a / p) * dirs[1])
        + 2.0 * (np.cos(2 * np.pi * 9 * a / p) * dirs[2] + np.sin(2 * np.pi * 9 * a / p) * dirs[3])
        + 0.01 * rng.normal(size=(p, 16))
    )
    energy, keys = F.key_frequency_phases(rows, "add", keep=2)
    assert [k["k"] for k in keys] == [5, 9]
    cycle = np.cos(2 * np.pi * np.arange(p) / p)
    for key in keys:
        traced = (rows - rows.mean(0))[key["order"]] @ key["cos"]
        assert abs(np.corrcoef(traced, cycle)[0, 1]) > 0.999
        # read in plain residue order the same projection is no single cycle
        assert abs(np.corrcoef((rows - rows.mean(0)) @ key["cos"], cycle)[0, 1]) < 0.5
    assert energy[[5, 9]].sum() / energy.sum() > 0.99


def test_fig2_embedding_shows_phase_ordered_keys_and_the_spectrum(built):
    _cells, (charts, _notes) = built
    spec = charts["fig2_embedding"].to_dict()
    heat, bars = spec["hconcat"]
    assert heat["encoding"]["y"]["field"] == "phase"
    assert "key, energy outside" in bars["title"]
    assert bars["encoding"]["x"]["title"] == "k (keys: logged fourier_gap)"
    rows = [r for v in _datasets(spec) for r in v if "column" in r]
    assert {r["checkpoint"].split()[0] for r in rows} == {"first", "last"}
