"""The study report: one self-contained offline HTML page (`results/<study>/report/index.html`).

Vega, Vega-Lite and vega-embed are inlined once (vl-convert bundle, no CDN); each figure's spec
is embedded as JSON. When every embed has settled the page sets `document.title` to end with
"[rendered N/N]" (or "[render errors: k]") and `<body data-render="ok|error"
data-console-errors="n" data-console-warnings="m" data-height-px="h">` (console.error/warn and
uncaught errors are counted from before the bundle loads; h = the page's scroll height once
drawn), markers that the headless-browser test reads. The page's tables are also written as CSV
files next to it.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from twoclocks.analyze.claims.spec import (
    FAIL,
    INCONCLUSIVE,
    MEASURED,
    MET,
    NOT_MET,
    OUT_OF_SCOPE,
    PASS,
    resolve_claim_settings,
)
from twoclocks.analyze.claims.spec import claim_rules as spec_claim_rules
from twoclocks.analyze.settings import resolve_settings
from twoclocks.report.figures import FIGURES, js_bundle, spec_json
from twoclocks.report.tables import (  # noqa: F401 (re-exported: the report's tables)
    _cell_ids,
    _flatten,
    _overview,
    by_architecture,
    clock_headers,
    clock_summary,
    fits_table,
    grokked_by_model,
    grokked_runs,
    insufficient_by_kind,
    insufficient_summary,
    reason_kind,
    run_clock_levels,
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1220px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
details { margin: 0.3em 0; overflow-x: auto; } summary { cursor: pointer; }
details[open] > summary { margin-bottom: 0.4em; }
.PASS { background: #c8efc8; font-weight: bold; } .FAIL { background: #f6c6c6; font-weight: bold; }
.INCONCLUSIVE { background: #f4e7b5; font-weight: bold; }
.MET { background: #d9ecf7; font-weight: bold; }
.NOT-MET { background: #f6dcc6; font-weight: bold; }
.OUT-OF-SCOPE { background: #e4e4e4; font-weight: bold; }
.MEASURED { background: #e0e8f4; font-weight: bold; }
#claims td { font-size: 0.9em; } #claims td:nth-child(1) { width: 22%; }
#claims td:nth-child(3) { width: 30%; } .evidence { overflow-wrap: anywhere; }
.figs { display: flex; flex-wrap: wrap; gap: 0 1.5em; }
figure { margin: 0.8em 0; flex: 0 1 585px; min-width: 0; }
figcaption { color: #555; font-size: 0.85em; }
.vis { overflow-x: auto; }
.note { color: #777; font-size: 0.9em; }
"""

_CAPTURE = """
window.__consoleErrors = 0; window.__consoleWarnings = 0;
(function () {
  const err = console.error.bind(console), warn = console.warn.bind(console);
  console.error = function () { window.__consoleErrors += 1; err.apply(null, arguments); };
  console.warn = function () { window.__consoleWarnings += 1; warn.apply(null, arguments); };
  window.addEventListener("error", function () { window.__consoleErrors += 1; });
  window.addEventListener("unhandledrejection", function () { window.__consoleErrors += 1; });
})();
"""

_EMBED = """
(function () {  // a link to a cell's anchor opens its collapsed section
  function openTarget() {
    const t = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (t && t.tagName === "DETAILS") { t.open = true; }
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
(function () {
  const specs = document.querySelectorAll('script[type="application/json"][data-figure]');
  const jobs = Array.from(specs).map(function (node) {
    const target = document.getElementById(node.dataset.figure);
    return vegaEmbed(target, JSON.parse(node.textContent), {actions: false, renderer: "svg"});
  });
  Promise.allSettled(jobs).then(function (results) {
    const bad = results.filter(function (r) { return r.status !== "fulfilled"; });
    bad.forEach(function (r) { console.error(r.reason); });
    document.body.dataset.render = bad.length ? "error" : "ok";
    document.body.dataset.consoleErrors = String(window.__consoleErrors);
    document.body.dataset.consoleWarnings = String(window.__consoleWarnings);
    document.body.dataset.heightPx = String(document.documentElement.scrollHeight);
    document.body.dataset.widthPx = String(document.documentElement.scrollWidth);
    document.title += bad.length ? " [render errors: " + bad.length + "]"
                                 : " [rendered " + results.length + "/" + results.length + "]";
  });
})();
"""


VERDICT_ORDER = (PASS, FAIL, INCONCLUSIVE, MET, NOT_MET, MEASURED, OUT_OF_SCOPE)


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return _esc(json.dumps(v, sort_keys=True, default=str))
    return _esc(v)


def _table(df: pd.DataFrame, max_rows: int = 500) -> str:
    """An HTML table of `df` (at most `max_rows` rows, with a note when cut for display)."""
    if df is None or len(df) == 0:
        return '<p class="note">(empty)</p>'
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in df.head(max_rows).itertuples(index=False)
    )
    note = (
        f'<p class="note">first {max_rows} of {len(df)} rows; all rows are in the CSV</p>'
        if len(df) > max_rows
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _kv(d: Mapping[str, Any] | None) -> str:
    if not d:
        return '<p class="note">(none)</p>'
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_cell(v)}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def claim_rules(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Claim id -> its rule with the config's `claims:` thresholds filled in (the specs' own
    text, analyze/claims/): the fallback for claims.json records written before `rule`."""
    return spec_claim_rules(settings)


def _claim_rule(claim: Mapping[str, Any], rules: Mapping[str, str]) -> str:
    """A claim's rule: its claims.json record's `rule`, else the report's own statement."""
    return str(claim.get("rule") or rules.get(claim.get("id", ""), ""))


def _verdict_class(claim: Mapping[str, Any]) -> str:
    """CSS class of a verdict: `NOT MET` -> `NOT-MET` (one class, not two)."""
    return _esc(str(claim.get("verdict", "")).replace(" ", "-"))


def _claims_table(claims: list[dict], rules: Mapping[str, str]) -> str:
    """Verdict table: claim (id and the paper's statement), verdict, rule, evidence, all in full."""
    rows = "".join(
        f'<tr><td><b>{_esc(c.get("id", ""))}</b><br><span class="note">'
        f"{_esc(c.get('claim', ''))}</span></td>"
        f'<td class="{_verdict_class(c)}">{_esc(c.get("verdict", ""))}</td>'
        f"<td>{_esc(_claim_rule(c, rules))}</td>"
        f'<td class="evidence">{_esc(c.get("evidence", ""))}</td></tr>'
        for c in claims
    )
    head = "<tr><th>claim (paper)</th><th>verdict</th><th>rule</th><th>evidence</th></tr>"
    return f'<table id="claims" class="wide"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def cell_anchor(cell_id: str) -> str:
    """The HTML id of a cell's section: `cell-` + the cell id with unsafe characters as `-`."""
    return "cell-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", str(cell_id)).strip("-")


def _overview_table(df: pd.DataFrame, headers: Mapping[str, str]) -> str:
    """The per-cell table (cells link to their sections); `headers` renames columns."""
    if df.empty:
        return '<p class="note">(no cells)</p>'
    html_rows = []
    for row in df.itertuples(index=False):
        vals = list(row)
        cell = f'<a href="#{cell_anchor(vals[0])}">{_esc(vals[0])}</a>'
        html_rows.append(
            "<tr><td>" + cell + "</td>" + "".join(f"<td>{_cell(v)}</td>" for v in vals[1:])
        )
    head = "".join(f"<th>{_esc(headers.get(c, c))}</th>" for c in df.columns)
    body = "</tr>".join(html_rows)
    return f'<table id="cells"><thead><tr>{head}</tr></thead><tbody>{body}</tr></tbody></table>'


def _details(summary: str, body: str, open_: bool = False, id_: str | None = None) -> str:
    attrs = (f' id="{_esc(id_)}"' if id_ else "") + (" open" if open_ else "")
    return f"<details{attrs}><summary>{summary}</summary>{body}</details>"


def _csv(df: pd.DataFrame, out: Path, name: str) -> str:
    """Write `df` to out/name (deterministic CSV) and return a link to it."""
    df.to_csv(out / name, index=False, float_format="%.6g", lineterminator="\n")
    return f'<a href="{_esc(name)}" download>{_esc(name)}</a> ({len(df)} rows)'


def _figures_html(figures: Mapping[str, alt.TopLevelMixin], notes: list[str] | None) -> list[str]:
    """Each chart with its registered caption and PNG/SVG links, then the skipped ones."""
    figs = []
    for i, (name, chart) in enumerate(figures.items()):
        text = FIGURES[name].caption if name in FIGURES else ""
        figs.append(
            f'<figure id="fig-{_esc(name)}"><div id="vis{i}" class="vis"></div>'
            f'<script type="application/json" data-figure="vis{i}">{spec_json(chart)}</script>'
            f"<figcaption><b>{_esc(name)}</b>: {_esc(text)} "
            f'<a href="figures/{_esc(name)}.png">PNG</a> '
            f'<a href="figures/{_esc(name)}.svg">SVG</a></figcaption></figure>'
        )
    skipped = "".join(f"<li>{_esc(n)}</li>" for n in notes or [])
    return [
        '<h2 id="figures">Figures</h2>',
        f'<div class="figs">{"".join(figs)}</div>',
        f'<ul class="note">{skipped}</ul>' if skipped else "",
    ]


def _cell_sections(r: _Report) -> list[str]:
    """One collapsed section per cell: its clocks per level and its fits."""
    parts = []
    for row in r.overview.to_dict("records"):
        cid = row["cell"]
        s_rows = r.summary[r.summary["cell_id"] == cid] if len(r.summary) else r.summary
        f_rows = r.fit_rows[r.fit_rows["cell_id"] == cid] if len(r.fit_rows) else r.fit_rows
        ok = f_rows[f_rows["status"] == "ok"] if len(f_rows) else f_rows
        bad = insufficient_summary(f_rows) if len(f_rows) else pd.DataFrame()
        body = (
            "<h4>Clocks</h4>"
            + _table(s_rows.drop(columns="cell_id") if len(s_rows) else s_rows)
            + "<h4>Fits (ok)</h4>"
            + _table(ok.drop(columns=["cell_id", "reason"]) if len(ok) else ok)
            + ("<h4>Insufficient fits</h4>" + _table(bad.drop(columns="cells")) if len(bad) else "")
        )
        head = (
            f"<b>{_esc(cid)}</b>: grokked {_esc(row['grokked runs'])}; {row['ok fits']} ok fits, "
            f"{row['insufficient fits']} insufficient"
        )
        parts.append(_details(head, body, id_=cell_anchor(cid)))
    return [
        '<h2 id="cells-detail">Per cell</h2>',
        '<p class="note">Clocks per level: fired/runs (censored runs count in the denominator), '
        "median, min and max step of the fired ones.</p>",
        "".join(parts) or '<p class="note">(no cells)</p>',
    ]


def _fits_section(fit_rows: pd.DataFrame) -> list[str]:
    """Fit counts, what each kind of fit is, the ok ones and the insufficient ones by reason."""
    bad_all = insufficient_summary(fit_rows)
    n_ok = int((fit_rows["status"] == "ok").sum()) if len(fit_rows) else 0
    ok_all = fit_rows[fit_rows["status"] == "ok"] if len(fit_rows) else fit_rows
    return [
        '<h2 id="fits">Fits</h2>',
        f"<p>{n_ok} ok, {len(fit_rows) - n_ok} insufficient.</p>",
        '<p class="note"><i>law</i>: per cell and clock, the log law T = a + b log(1/x) against '
        "the free-offset power law T = T0 + C x^-k, by AIC (<i>preferred</i>; delta_aic = "
        "AIC(power) - AIC(log), &gt; 0 favours the log law; <i>support</i> decisive when its "
        "interval excludes 0). <i>tail</i>: per seed, the gap after T_cls as G_inf + exponential "
        "or power decay (theta = (1 + 1/p)/2). <i>clock_ratio</i>: T_clock / T_cls at the "
        "reference levels, geometric mean over seeds (not the claims' R). <i>scaling</i>: a "
        "clock against a grid axis within a group. Intervals [low, high]: seed bootstrap. Only "
        "<i>ok</i> fits judge claims.</p>",
        _details(f"ok fits ({n_ok})", _table(ok_all), open_=0 < n_ok <= 12),
        "<h3>Insufficient fits, by reason</h3>"
        + '<p class="note">N: a count that differs between the fits summarised.</p>'
        + _table(insufficient_by_kind(fit_rows))
        + _details("per clock, with the cells and groups", _table(bad_all))
        if len(bad_all)
        else "",
    ]


def _tables_and_run(r: _Report, out: Path) -> list[str]:
    """The full tables (also written as CSV next to the page) and what was run."""
    full_fits = r.fit_rows if len(r.fit_rows) else fits_table(r.fits)
    links = [
        _csv(r.overview, out, "cells.csv"),
        _csv(r.runs, out, "runs.csv"),
        _csv(r.summary, out, "clock_summary.csv"),
        _csv(full_fits, out, "fits.csv"),
    ]
    if r.clocks is not None and len(r.clocks):
        links.append(_csv(r.clocks, out, "clocks.csv"))
    rt = dict(r.runtime or {})
    rt_cells, bench = rt.pop("cells", None), rt.pop("benchmarks", None)
    rt_df = pd.DataFrame.from_dict(rt_cells, orient="index") if rt_cells else pd.DataFrame()
    rt_df = rt_df.rename_axis("cell_id").reset_index() if len(rt_df) else rt_df
    bench_df = pd.DataFrame(bench or [])
    if len(rt_df):
        links.append(_csv(rt_df, out, "runtime.csv"))
    if len(bench_df):
        links.append(_csv(bench_df, out, "benchmarks.csv"))
    prov = pd.DataFrame(
        [{"key": k, "value": v} for k, v in _flatten(r.provenance or {}).items()],
        columns=["key", "value"],
    )
    total = rt.pop("train_wall_seconds_total", None) if "train_wall_seconds_total" in rt else None
    bench_note = (
        '<p class="note">From the rules\' <code>benchmark:</code> files '
        "(<code>benchmarks/&lt;rule&gt;/&lt;job&gt;.tsv</code>): wall time, peak resident "
        "memory (MB) and CPU time (s) of the job's processes.</p>"
    )
    config_json = json.dumps(r.config, indent=2, sort_keys=True, default=str)
    return [
        '<h2 id="tables">Full tables</h2>',
        '<p class="note">Also as CSV next to this page: ' + "; ".join(links) + ".</p>",
        _details("Clock summary (all cells)", _table(r.summary)),
        _details("Fits (all records)", _table(full_fits)),
        _details("Runs (T_cls, T_rep, T_gen, grokked)", _table(r.runs)),
        '<h2 id="run">What was run</h2>',
        f"<p>Training wall time, all cells: {_cell(total)} s.</p>" if total is not None else "",
        _kv(rt) if rt else "",
        _details(f"Training time per cell ({len(rt_df)})", _table(rt_df)) if len(rt_df) else "",
        _details(f"Snakemake benchmarks per job ({len(bench_df)})", bench_note + _table(bench_df))
        if len(bench_df)
        else "",
        _details("Provenance", _table(prov)),
        _details("Configuration", f"<pre>{_esc(config_json)}</pre>"),
    ]


def _architecture_section(r: _Report) -> str:
    """The clocks across model families and optimisers (`tables.by_architecture`), collapsed;
    only where the study has more than one (model, optimizer) pair."""
    table = by_architecture(r.runs, r.clocks, r.config, r.claims)
    if len(table) < 2:
        return ""
    note = (
        '<p class="note">Median over runs (steps; runs where the clock fired) and of the '
        "per-run ratios; law decisions of the laws stage per cell (counts).</p>"
    )
    return _details("Clocks by model and optimiser", note + _table(table))


def _top(r: _Report) -> list[str]:
    """Title, the summary line, both clocks per cell, then the verdicts with rule and evidence."""
    counts = Counter(str(c.get("verdict")) for c in r.claims)
    verdicts = ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER if counts[v]) or "no claims"
    runs = r.runs
    seeds = r.config.get("seeds") or (sorted({int(s) for s in runs["seed"]}) if len(runs) else [])
    return [
        f"<h1>twoclocks report: {_esc(r.study)}</h1>",
        *(
            f'<p class="warning"><b>Warning:</b> {_esc(w)}</p>'
            for w in r.config.get("warnings", [])
        ),
        '<p class="note">Two training clocks of grokking (arXiv 2606.05863): classifier clock '
        "T_cls(eps), representation clock T_rep(eta), and checks of the paper's claims. "
        '<a href="#figures">Figures</a> · <a href="#cells-detail">Cells</a> · '
        '<a href="#fits">Fits</a> · <a href="#tables">Full tables (CSV)</a> · '
        '<a href="#run">What was run</a></p>',
        '<table id="summary">',
        f"<tr><th>study</th><td>{_esc(r.study)}</td><th>cells</th><td>{len(r.overview)}</td>"
        f"<th>seeds</th><td>{_esc(', '.join(str(s) for s in seeds))}</td></tr>",
        f"<tr><th>runs grokked</th><td>{_esc(grokked_by_model(runs, r.clocks, r.config))}</td>"
        "<th>verdicts</th>"
        f'<td colspan="3">{_esc(verdicts)}</td></tr></table>',
        "<h2>Clocks per cell</h2>",
        '<p class="note">Both clocks and the generalisation clock per cell, in optimiser steps: '
        "median [seed min, seed max] of the runs where the clock fired, fired/runs. A clock "
        f"fires once {_esc(r.window_logs)} consecutive logs pass its level (App. F.4); grokked: "
        f"T_gen fired and no relapse (later train CE &gt; {_esc(r.relapse_factor)} x eps or test "
        f"accuracy &lt; level - {_esc(r.relapse_margin)}).</p>",
        _overview_table(r.overview, clock_headers(r.levels)),
        _architecture_section(r),
        "<h2>Verdicts</h2>",
        _claims_table(r.claims, claim_rules(r.config.get("claims"))),
        law_calibration_table(r.claims),
    ]


def law_calibration_table(claims: list[dict]) -> str:
    """Next to each law verdict, its calibration (calibration.json via claims.json): per family
    of known truth at this study's horizon and cadence, how often the estimator told it right,
    said INCONCLUSIVE, or was confidently wrong, and the coverage of its 95% interval."""
    rows = []
    for c in claims:
        cal = (c.get("details") or {}).get("calibration")
        if not isinstance(cal, Mapping):
            continue
        head = f"{c['id']}: {c.get('verdict')}; verdict allowed: {cal.get('allowed')}"
        rows.append(f'<tr><th colspan="6">{_esc(head)} ({_esc(cal.get("reason", ""))})</th></tr>')
        for f in cal.get("families") or []:
            pct = {k: "n/a" if f.get(k) is None else f"{100 * f[k]:.0f}%"
                   for k in ("correct", "inconclusive", "wrong", "coverage")}  # fmt: skip
            if f.get("wrong_upper") is not None:
                pct["wrong"] += f" (bound {100 * f['wrong_upper']:.1f}%)"
            said = (f"at {f['horizon']} a {f.get('note') or f['family']} ({f['truth']}) is told "
                    f"as {f['truth']} in {pct['correct']} of {f['draws']} draws")  # fmt: skip
            rows.append(
                f"<tr><td>{_esc(f['family'])}</td><td>{_esc(said)}</td><td>{pct['correct']}</td>"
                f"<td>{pct['inconclusive']}</td><td>{pct['wrong']}</td><td>{pct['coverage']}</td>"
                "</tr>"
            )
    if not rows:
        return ""
    head = ("<tr><th>family</th><th>at this horizon and cadence</th><th>correct</th>"
            "<th>inconclusive</th><th>confident wrong</th><th>95% coverage</th></tr>")  # fmt: skip
    return _details(
        "Law verdicts: their calibration (known truths at this horizon)",
        '<p class="note">Known truths simulated at this study\'s horizon, log cadence, level '
        "grids and measured noise, decided by the same estimators (issue #22); a law verdict is "
        "INCONCLUSIVE unless every family that matters shows a confident-wrong rate of at most 5% "
        "(its one-sided 95% Clopper-Pearson bound, in brackets; 0 wrong needs 59 draws).</p>"
        f'<table class="wide"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>',
        id_="law-calibration",
    )


@dataclass
class _Report:
    """What the page is drawn from: the inputs of `write_report` and the tables built once."""

    config: dict
    provenance: dict
    runtime: dict
    clocks: pd.DataFrame | None
    fits: dict
    claims: list

    def __post_init__(self) -> None:
        self.config = self.config or {}
        self.study = self.config.get("study", (self.provenance or {}).get("study", "study"))
        claim_settings = self.config.get("claims")
        rep_level = _rep_reference_level(self.config)
        self.levels = run_clock_levels(self.clocks, claim_settings, rep_level)
        self.runs = grokked_runs(self.clocks, claim_settings, rep_level)
        cells = isinstance((self.fits or {}).get("cells"), Mapping)
        rows = fits_table(self.fits) if cells else pd.DataFrame(columns=["cell_id", "status"])
        self.fit_rows = rows
        ids = _cell_ids(self.runtime, self.clocks, self.fits)
        self.overview = _overview(ids, self.runs, self.fit_rows, self.runtime)
        self.summary = clock_summary(self.clocks)
        analysis = resolve_settings(self.config.get("analysis"))
        self.window_logs = int(analysis["stability_window_logs"])
        self.relapse_factor = f"{float(analysis['relapse_factor']):g}"
        self.relapse_margin = f"{float(analysis['relapse_margin']):g}"


def _rep_reference_level(config: Mapping[str, Any]) -> float | None:
    """The analysis reference level of the claims' representation clock (None: the default)."""
    rep = resolve_claim_settings(config.get("claims"))["rep_clock"]
    levels = (config.get("analysis") or {}).get("reference_levels") or {}
    return levels.get(rep)


def write_report(
    out_dir: str | Path,
    *,
    config: dict,
    provenance: dict,
    runtime: dict,
    clocks: pd.DataFrame | None,
    fits: dict,
    claims: list,
    figures: dict[str, alt.TopLevelMixin],
    notes: list[str] | None = None,
) -> Path:
    """Write `out_dir/index.html` and its tables as CSV files next to it.

    Top: study, seeds, runs grokked, both clocks per cell (T_cls, T_rep, T_gen with seed
    ranges), the verdicts with their full rule and evidence. Then the figures (captions from
    their registration), one collapsed section per cell (anchor `#cell-...`, see `cell_anchor`),
    fits (the insufficient ones counted by reason), the full tables one click away, and what was
    run. One self-contained page that opens with no network; returns its path. `notes` lists
    skipped figures.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = _Report(config, provenance, runtime, clocks, fits, claims)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>twoclocks report: {_esc(r.study)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_CAPTURE}</script>",
        f"<script>{js_bundle()}</script>",
        "</head><body>",
        *_top(r),
        *_figures_html(figures, notes),
        *_cell_sections(r),
        *_fits_section(r.fit_rows),
        *_tables_and_run(r, out),
        f"<script>{_EMBED}</script>",
        "</body></html>",
    ]
    path = out / "index.html"
    path.write_text("\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return path
