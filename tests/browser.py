"""Headless Chromium checks shared by the report tests: render a page, read its markers."""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

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

# Skips only where CI is not meant to have Chromium; in CI a missing browser fails the test.
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="chromium not installed"
)


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=30000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )


def png_pixels_vary(png: bytes) -> bool:
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


# The report's height budget: at 1280 px wide with every <details> collapsed (as it opens), the
# page stays at or under this many CSS pixels (measured: 4,243 px for config/test.yaml, 4 cells
# and 12 figures; the previous layout was 13,323 px). +100 px: one more claim row (dln_depth_rate,
# issue 23; the synthetic study's page measured 6,017 px with it). +900 px: six more claims with
# their rule and evidence in full (margin_linear, gap_at_gen, plateau_wd_scaling, srank_timing,
# srank_generalisation, issue 24; the law claims' per-cell reasons, issue 22): the synthetic
# study's page measured 6,907 px, config/test.yaml's 6,147 px. +300 px (session 7): one more
# claim (dln_rep_gates_gen, issue 23) and the calibration's Clopper-Pearson bounds (issue 22):
# the synthetic study's page measured 7,196 px. +600 px (session 8): one more figure
# (srank_generalisation, issue 24 item 4): measured 7,791 px.
MAX_PAGE_HEIGHT_PX = 7900
PAGE_WIDTH_PX = 1280


def assert_page_renders(
    index: Path, n_charts: int, tmp: Path, max_height_px: int = MAX_PAGE_HEIGHT_PX
) -> int:
    """Chromium loads the page at PAGE_WIDTH_PX wide: every chart renders, no console errors,
    the screenshot is not blank and the page is at most `max_height_px` tall; returns the height.
    """
    url = index.resolve().as_uri()
    size = f"--window-size={PAGE_WIDTH_PX},900"
    dom = chromium(url, tmp / "p1", "--dump-dom", size)
    assert f"[rendered {n_charts}/{n_charts}]" in dom.stdout, dom.stderr[-2000:]
    assert 'data-render="ok"' in dom.stdout and 'data-console-errors="0"' in dom.stdout
    assert dom.stdout.count("<svg") >= n_charts  # vega drew every chart
    assert "Uncaught" not in dom.stderr
    height = re.search(r'data-height-px="(\d+)"', dom.stdout)
    assert height, "the page did not report its height"
    height_px = int(height.group(1))
    assert 0 < height_px <= max_height_px, f"page is {height_px} px tall (> {max_height_px})"
    shot = tmp / "shot.png"
    chromium(url, tmp / "p2", f"--screenshot={shot}", f"--window-size={PAGE_WIDTH_PX},3000")
    assert png_pixels_vary(shot.read_bytes())
    return height_px
