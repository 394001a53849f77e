"""The HTML report: one offline page, tables and claims, and a headless-Chromium render check."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest
import synthetic_report as sr

from twoclocks.analyze.claims import evaluate_claims
from twoclocks.report import figures as F
from twoclocks.report import html as H

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


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


def _png_pixels_vary(png: bytes) -> bool:
    """True if the PNG's scanlines are not a single flat colour (no imaging library needed)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        n = int.from_bytes(png[pos : pos + 4], "big")
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += png[pos + 8 : pos + 8 + n]
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8)
    return np.unique(raw).size > 64 and float(raw.std()) > 5.0


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="chromium not installed"
)
def test_chromium_renders_the_page(report, tmp_path):
    path, figures, _claims = report
    url = path.resolve().as_uri()
    shutil.copy(path, tmp_path / "index.html")
    dom = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'p1'}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    n = len(figures)
    assert f"[rendered {n}/{n}]" in dom.stdout, dom.stderr[-2000:]
    assert 'data-render="ok"' in dom.stdout and 'data-console-errors="0"' in dom.stdout
    assert dom.stdout.count("<svg") >= n  # vega drew every chart
    assert "Uncaught" not in dom.stderr
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'p2'}",
            "--virtual-time-budget=30000",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert _png_pixels_vary(shot.read_bytes())
