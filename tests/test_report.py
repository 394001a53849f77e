"""The HTML report: one offline page, tables and claims, and a headless-Chromium render check."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
import synthetic_report as sr
from browser import assert_page_renders, chromium, needs_chromium

from twoclocks.analyze.claims import evaluate_claims
from twoclocks.report import figures as F
from twoclocks.report import html as H
from twoclocks.report import tables


def _law(cell: str, status: str, **params) -> dict:
    est = {k: {"estimate": v, "ci_low": v * 0.9, "ci_high": v * 1.1} for k, v in params.items()}
    rec = {"fit": "law", "clock": "cls", "status": status, "params": est, "stats": {"r2": 0.99}}
    if status == "ok":
        return {**rec, "preferred": "log"}
    return {**rec, "preferred": "", "reason": "0 uncensored post-fit levels < min_levels=4"}


# fits.json in the design.md layout: one ok law fit, insufficient ones and scaling fits
FITS = {
    "cells": {
        "relu/wd=0.6": {"fits": [_law("relu/wd=0.6", "ok", a=10.0, b=70.0, delta_aic=4.0)]},
        "relu/wd=0.8": {"fits": [_law("relu/wd=0.8", "insufficient")]},
        "relu/wd=1.0": {"fits": [_law("relu/wd=1.0", "insufficient")]},
    },
    "scaling": [
        {
            "fit": "scaling",
            "clock": "cls",
            "axis": "weight_decay",
            "group": f'{{"depth": {d}}}',
            "status": "insufficient",
            "reason": "0 positive weight_decay values with uncensored clocks < 3",
        }
        for d in (2, 3, 4, 5, 6)
    ],
}
PROVENANCE = {"git_commit": "abc123", "packages": {"torch": "2.13.0", "numpy": "2.4.6"}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cells = sr.study()
    clocks = sr.clocks(cells)
    figures, notes = F.build_figures(cells, clocks, FITS)  # every figure the study supports
    claims = evaluate_claims(cells, clocks, FITS, {})
    out = tmp_path_factory.mktemp("report")
    path = H.write_report(
        out,
        config={"study": "synthetic", "seeds": [0, 1, 2], "grids": {"relu": {}}},
        provenance=PROVENANCE,
        runtime={
            "train_wall_seconds_total": 4.5,
            "cells": {c: {"wall_seconds": 1.5, "device": "cpu"} for c in cells},
            "benchmarks": [{"rule": "train", "job": "relu", "wall_s": 2.0, "max_rss_mb": 300.0}],
        },
        clocks=clocks,
        fits=FITS,
        claims=claims,
        figures=figures,
        notes=[*notes, "clocks_depth: skipped (test)"],
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
        css = c["verdict"].replace(" ", "-")  # one class: NOT-MET, OUT-OF-SCOPE
        assert f'class="{css}"' in text and c["id"] in text
    for needle in ("abc123", "wall_s", "relu/wd=0.6", "rep_srank", "clocks_depth: skipped"):
        assert needle in text


def test_top_of_page_states_study_runs_and_verdicts_with_rules(report):
    path, _figures, claims = report
    text = path.read_text()
    top = text[: text.index('id="figures"')]  # everything a reader sees before the figures
    assert "synthetic" in top and "0, 1, 2" in top
    runs = H.grokked_runs(sr.clocks(sr.study()))
    assert f"{int(runs['grokked'].sum())}/{len(runs)}</td>" in top  # runs grokked
    rules = H.claim_rules({})
    ids = {c["id"] for c in claims}
    assert ids <= set(rules)  # every claim has its rule stated
    assert set(rules) - ids <= {"relu_reduction"}  # listed only with analysis.reduction on
    claims_html = top[top.index('id="claims"') :]
    claims_html = claims_html[: claims_html.index("</table>")]  # the verdict table itself
    assert "<details" not in claims_html  # rule and evidence are shown whole, never cut
    for c in claims:
        assert html.escape(rules[c["id"]], quote=True) in claims_html
        assert html.escape(c["evidence"], quote=True) in claims_html
    own = H._claims_table([{"id": "separation", "rule": "the record's own rule"}], rules)
    assert "the record&#x27;s own rule" in own and rules["separation"] not in own


def test_top_of_page_leads_with_both_clocks_per_cell(report):
    """Before the verdicts: per cell T_cls, T_rep and T_gen as median [seed min, max] fired/N."""
    path, _figures, _claims = report
    text = path.read_text()
    top = text[: text.index('id="claims"')]
    runs = H.grokked_runs(sr.clocks(sr.study()))
    assert {"t_cls", "t_rep", "t_gen"} <= set(runs) and runs["t_rep"].notna().any()
    for name in ("T_cls (cls @ 1e-06)", "T_rep (rep_srank @ 0.1)", "T_gen (gen_acc @ 0.99)"):
        assert f"<th>{html.escape(name)}</th>" in top, name
    for cid in sr.study():
        r = runs[runs["cell_id"] == cid]
        for col in ("t_cls", "t_rep", "t_gen"):
            fired = r[col].dropna()
            want = (
                f"{fired.median():,.0f} [{fired.min():,.0f}, {fired.max():,.0f}] "
                f"{len(fired)}/{len(r)}"
                if len(fired)
                else f"- 0/{len(r)}"
            )
            assert f"<td>{want}</td>" in top, (cid, col, want)
    assert tables.clock_interval(pd.Series([300.0, float("nan"), 100.0, 200.0])) == (
        "200 [100, 300] 3/4"
    )


def test_cells_have_anchors_and_collapsed_sections(report):
    path, _figures, _claims = report
    text = path.read_text()
    for cid in sr.study():
        anchor = H.cell_anchor(cid)
        assert f'href="#{anchor}"' in text  # the overview links to the cell
        assert re.search(f'<details id="{re.escape(anchor)}"><summary>', text)  # collapsed
    assert H.cell_anchor("relu/wd=0.6") == "cell-relu-wd-0.6"


def test_insufficient_fits_are_counted_by_reason_and_tables_written_as_csv(report):
    path, _figures, _claims = report
    text = path.read_text()
    fits = H.fits_table(FITS)
    summary = H.insufficient_summary(fits)
    scaling = summary[summary["fit"] == "scaling"].iloc[0]
    assert scaling["count"] == 5 and scaling["cells"].count("depth") == 5  # groups kept apart
    law = summary[summary["fit"] == "law"].iloc[0]
    assert law["count"] == 2 and law["cells"] == "relu/wd=0.8, relu/wd=1.0"
    assert "1 ok, 7 insufficient." in text
    # outside the collapsed full table, an insufficient reason appears once per cell or group
    # it concerns (the per-cell sections) plus once in the summary, never once per record
    shown = text[: text.index('id="tables"')]
    assert shown.count("0 positive weight_decay values with uncensored clocks") == 1
    for name in ("cells.csv", "runs.csv", "clock_summary.csv", "fits.csv", "clocks.csv"):
        assert f'href="{name}"' in text and (path.parent / name).exists()
    back = pd.read_csv(path.parent / "fits.csv")
    assert len(back) == len(fits) and set(back["status"]) == {"ok", "insufficient"}


def test_provenance_and_runtime_are_tables_not_json(report):
    path, _figures, _claims = report
    text = path.read_text()
    assert "<td>packages.torch</td><td>2.13.0</td>" in text
    assert json.dumps(PROVENANCE["packages"]) not in text and "{&quot;torch" not in text
    assert "<td>train</td><td>relu</td><td>2</td><td>300</td>" in text  # benchmark row
    assert "Training wall time, all cells: 4.5 s." in text


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
@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_chromium_renders_the_page(report, tmp_path):
    path, figures, _claims = report
    assert len(figures) == 15  # every figure of the synthetic study, under the height budget
    assert_page_renders(path, len(figures), tmp_path)


def test_insufficient_reasons_are_grouped_by_kind():
    assert H.reason_kind("2 uncensored post-fit levels < min_levels=4") == (
        "N uncensored post-fit levels < min_levels=4"
    )
    assert H.reason_kind("0 levels < min_levels=4 (14 rows unresolved: within 2 SE)") == (
        "N levels < min_levels=4 (N rows unresolved: within 2 SE)"
    )
    fits = H.fits_table(FITS)
    compact = H.insufficient_by_kind(fits)
    assert compact.to_dict("records") == [
        {
            "fit": "scaling",
            "reason": "N positive weight_decay values with uncensored clocks < 3",
            "count": 5,
            "clocks": "cls",
        },
        {
            "fit": "law",
            "reason": "N uncensored post-fit levels < min_levels=4",
            "count": 2,
            "clocks": "cls",
        },
    ]


@needs_chromium
@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_a_cell_link_opens_its_collapsed_section(report, tmp_path):
    path, _figures, _claims = report
    anchor = H.cell_anchor("relu/wd=0.8")
    dom = chromium(f"{path.resolve().as_uri()}#{anchor}", tmp_path / "p", "--dump-dom").stdout
    assert re.search(f'<details id="{re.escape(anchor)}" open', dom)
    other = H.cell_anchor("relu/wd=0.6")
    assert re.search(f'<details id="{re.escape(other)}"><summary>', dom)  # others stay shut


def test_grokked_runs_are_counted_per_model_family():
    """A teacher-task deep linear run cannot grok: its family says n/a, never 0/6."""
    clocks = sr.clocks(sr.study())
    runs = H.grokked_runs(clocks)
    config = {"base": {"model": "relu_embed", "task": "modular"}, "grids": {"relu": {}}}
    config["grids"]["deep"] = {"set": {"model": "deep_linear", "task": "teacher"}}
    assert tables.grokked_by_model(runs, clocks, config) == (
        "deep_linear n/a (teacher task: no grokking delay), relu_embed 9/9"
    )
    config["grids"]["deep"]["set"]["task"] = "modular"  # a deep linear net on a grokking task
    assert tables.grokked_by_model(runs, clocks, config) == "deep_linear 0/6, relu_embed 9/9"
    one_family = {"base": {"model": "relu_embed"}, "grids": {"relu": {}, "deep": {}}}
    assert tables.grokked_by_model(runs, clocks, one_family) == "9/15"
    assert tables.grokked_by_model(runs, clocks, {}) == "9/15"  # grids unknown: the total


def test_a_relapsed_run_is_never_counted_as_grokked():
    """Issue 26: wd 0.5 seed 1 fired T_gen, then test accuracy fell to 0.627; "3/3 grokked"."""
    clocks = sr.clocks(sr.study(deep=False))
    clocks["relapse"] = False
    hit = (clocks["cell_id"] == "relu/wd=0.6") & (clocks["seed"] == 1)
    clocks.loc[hit & (clocks["clock"] == "gen_acc") & (clocks["level"] == 0.99), "relapse"] = True
    runs = H.grokked_runs(clocks)
    row = runs.set_index(["cell_id", "seed"]).loc[("relu/wd=0.6", 1)]
    assert row["relapsed"] and not row["grokked"] and row["t_gen"] > 0  # the clock still fired
    assert runs["relapsed"].sum() == 1
    config = {"base": {"model": "relu_embed"}, "grids": {"relu": {}}}
    assert tables.grokked_by_model(runs, clocks, config) == "8/9 (1 relapsed)"
    over = tables._overview(["relu/wd=0.6"], runs, pd.DataFrame(columns=["cell_id"]), {})
    assert over.loc[0, "grokked runs"] == "2/3 (seed 0, 2); relapsed: seed 1"


def test_fits_ratio_is_named_apart_from_the_separation_ratio():
    """Issue 26: fits.json's T_gen/T_cls(1e-3) (9.1) and the claim's R (2.8) were both a
    "separation ratio"; the report names the fits' one clock_ratio."""
    rec = {"fit": "ratio", "clock": "gen_acc", "level": 0.99, "status": "ok", "params": {}}
    rows = tables.fits_table({"cells": {"relu/wd=0.5": {"fits": [rec]}}})
    assert rows["fit"].tolist() == ["clock_ratio"]
