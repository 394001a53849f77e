"""Figures: thinning, Fig. 2 ordering and spectra, skips, row limits, deterministic PNG/SVG."""

from __future__ import annotations

import numpy as np
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
    assert notes == []
    assert set(charts) >= {
        "fig1_loss",
        "fig3_loss_srank",
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


def test_save_chart_is_deterministic_and_offline(built, tmp_path):
    _cells, (charts, _notes) = built
    for name in ("fig1_loss", "fig2_embedding"):
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
