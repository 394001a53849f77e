"""The report stage reads only its declared inputs and honours `report.max_points_per_line`."""

from __future__ import annotations

import json

import pandas as pd
import synthetic_report as sr

from twoclocks.config import load_config
from twoclocks.report import build as B
from twoclocks.report.build import build_report, runtime_summary

CONFIG = {"study": "synthetic", "seeds": [0], "grids": {"relu": {"axes": {"weight_decay": [1.0]}}}}


def _inputs(tmp_path, cells):
    """Stores, manifests, clocks and fits on disk, outside any results/<study>/ layout."""
    stores, manifests = {}, {}
    for i, (cid, ds) in enumerate(cells.items()):
        stores[cid] = tmp_path / "s" / f"{i}.zarr"
        ds.to_zarr(stores[cid], mode="w", consolidated=False, zarr_format=3)
        manifests[cid] = tmp_path / "m" / f"{i}.json"
        manifests[cid].parent.mkdir(exist_ok=True)
        manifests[cid].write_text(json.dumps({"wall_seconds": 1.5 + i, "device": "cpu"}))
    clocks = tmp_path / "in" / "clocks.parquet"
    clocks.parent.mkdir()
    sr.clocks(cells).to_parquet(clocks, index=False)
    fits = tmp_path / "in" / "fits.json"
    fits.write_text("{}")
    return stores, manifests, clocks, fits


def test_report_from_declared_inputs_thins_to_the_configured_points(tmp_path, monkeypatch):
    saved = {}  # PNG/SVG rendering is test_figures' business; keep the charts instead
    monkeypatch.setattr(B, "save_chart", lambda chart, path: saved.setdefault(path.name, chart))
    cells = sr.study(deep=False)
    stores, manifests, clocks, fits = _inputs(tmp_path, cells)
    config = load_config({**CONFIG, "report": {"max_points_per_line": 37}}).config
    out = tmp_path / "out"
    out.mkdir()  # Snakemake creates the outputs' parent directories
    index = build_report(
        config=config,
        stores=stores,
        manifests=manifests,
        clocks_path=clocks,
        fits_path=fits,
        claims_path=out / "claims.json",
        index_path=out / "report" / "index.html",
        figures_dir=out / "report" / "figures",
    )
    assert index.exists() and "fig1_loss" in saved
    assert 'id="fig-fig1_loss"' in index.read_text()
    claims = json.loads((out / "claims.json").read_text())
    assert claims["config"]["report"]["max_points_per_line"] == 37
    spec = saved["fig1_loss"].to_dict()
    rows = [r for v in spec["datasets"].values() for r in v]
    per_line = pd.DataFrame(rows).groupby(["cell_id", "series"]).size()
    # 396 logged steps; thinning keeps at most 37 distinct ones per line (unique log+linear)
    assert len(per_line) == 2 * len(cells) and 30 <= per_line.min() <= per_line.max() <= 37


def test_runtime_summary_sums_the_given_manifests(tmp_path):
    _s, manifests, _c, _f = _inputs(tmp_path, sr.study(deep=False))
    summary = runtime_summary(manifests)
    assert list(summary["cells"]) == list(manifests)
    assert summary["train_wall_seconds_total"] == sum(1.5 + i for i in range(len(manifests)))
