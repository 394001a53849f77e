"""The HTML report: one offline page, tables and claims, and a headless-Chromium render check."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import synthetic_report as sr
from browser import assert_page_renders, needs_chromium

from twoclocks.analyze.claims import evaluate_claims
from twoclocks.report import figures as F
from twoclocks.report import html as H


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cells = sr.study()
    clocks = sr.clocks(cells)
    charts, notes = F.build_figures(cells, clocks, {})
    # keep the page small for the browser test: a representative subset of figures
    keep = ["fig1_loss", "fig3_loss_srank", "fig2_embedding", "clock_cls", "gates", "deep_schatten"]
    figures = {k: charts[k] for k in keep}
    claims = evaluate_claims(cells, clocks, {}, {})
    out = tmp_path_factory.mktemp("report")
    path = H.write_report(
        out,
        config={"study": "synthetic", "grids": {"relu": {"weight_decay": [0.6, 1.0]}}},
        provenance={"git_commit": "abc123", "torch": "2.13.0"},
        runtime={"wall_s": 1.5},
        clocks=clocks,
        fits={"cls": {"relu/wd=0.6": {"slope": 70.0, "aic_log": 1.0}}},
        claims=claims,
        figures=figures,
        notes=["clocks_depth: skipped (test)"],
    )
    return path, figures, claims


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.scripts = [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.scripts += tag == "script"
        for key in ("src", "href"):
            if a.get(key):
                self.refs.append((tag, a[key]))


def test_page_is_self_contained(report):
    path, figures, claims = report
    text = path.read_text()
    parser = _Refs()
    parser.feed(text)
    assert not [r for r in parser.refs if re.match(r"\s*(https?:)?//", r[1])], parser.refs
    assert not [r for r in parser.refs if r[0] in {"script", "link"}]
    assert text.count("window.vegaEmbed=") == 1  # the bundle is inlined once
    assert text.count('data-figure="vis') == len(figures)
    for c in claims:
        assert f'class="{c["verdict"]}"' in text and c["id"] in text
    for needle in ("abc123", "wall_s", "relu/wd=0.6", "rep_srank", "clocks_depth: skipped"):
        assert needle in text


def test_tables():
    clocks = sr.clocks(sr.study(deep=False))
    summary = H.clock_summary(clocks)
    row = summary[(summary["clock"] == "cls") & (summary["level"] == 1e-6)].iloc[0]
    assert row["fired"] == "3/3" and row["min_step"] <= row["median_step"] <= row["max_step"]
    fits = H.fits_table({"cls": {"a": {"slope": 1.0, "ci": [0, 2]}, "b": {"slope": 2.0}}, "n": 3})
    assert list(fits["fit"]) == ["(top)", "cls / a", "cls / b"]
    assert fits.loc[1, "slope"] == 1.0
    rec = {
        "fit": "cls_log",
        "clock": "cls",
        "status": "ok",
        "stats": {"r2": 0.9},
        "params": {"slope": {"estimate": 2.0, "ci_low": 1.0, "ci_high": 3.0}},
    }
    table = H.fits_table({"cells": {"c1": {"fits": [rec]}}, "scaling": []})
    assert table.loc[0, "cell_id"] == "c1" and table.loc[0, "params"] == "slope=2 [1, 3]"


@needs_chromium
def test_chromium_renders_the_page(report, tmp_path):
    path, figures, _claims = report
    assert_page_renders(path, len(figures), tmp_path)
