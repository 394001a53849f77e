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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

# the study's results are read through this one alias
from twoclocks.analyze import claims as cl
from twoclocks.report.figures import FIGURES, js_bundle, spec_json
from twoclocks.report.tables import (  # noqa: F401 (re-exported: the report's tables)
    _cell_ids,
    _flatten,
    _overview,
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
    """Claim id -> the rule that turns its measurement into PASS/FAIL (analyze/claims.py), with
    the thresholds of the config's `claims:` section filled in. Every claim is INCONCLUSIVE
    when it has fewer than `min_runs` usable runs (or no `ok` law fit)."""
    s = cl.resolve_claim_settings(settings)
    lo, hi = s["rep_exponent_range"]
    gen = (
        f"T_gen = first step with test accuracy >= {s['gen_acc_level']} and, separately, with "
        f"test CE <= {s['gen_loss_level']:g}; PASS (FAIL) when every clock that can be judged "
        "passes (fails), INCONCLUSIVE when the two disagree"
    )
    return {
        "separation": f"PASS if the median over cells of T_gen / T_cls(eps={s['cls_eps']:g}) "
        f"> {s['separation_min_ratio']:g} ({gen})",
        "wd_earlier": f"Spearman rho(weight decay, T_gen) <= {s['wd_rho_max']:g}: PASS, > 0: "
        f"FAIL; needs >= {s['wd_min_cells']} weight decays with a grokked cell ({gen})",
        "srank_drop": f"PASS if the stable rank of the pre-registered matrix "
        f"{s['srank_claim_matrix']!r} falls by a median >= {s['srank_min_drop']:.0%} between "
        "T_cls and T_gen (the paper's Fig. 3 read as ~36 -> ~10-12; it names no matrix and "
        "disclaims rank collapse: a figure reproduction, not a test of the theory); the "
        "evidence lists every candidate's drop on [T_cls, T_gen] and from its post-fit peak to "
        "the end",
        "cls_log_law": "PASS if AIC prefers the log law T = a + b log(1/eps) in more than half "
        "of the cells with an ok law fit",
        "rep_power_law": f"PASS if, for {s['rep_clock']}, the power law with k's whole interval "
        f"in ({lo:g}, {hi:g}) is chosen in more than half of the cells with an ok law fit",
        "grad_hierarchy": "PASS if ||grad_U|| / ||grad_E|| over steps [1, T_cls(eps="
        f"{s['grad_window_eps']:g})] has median > 1 and is > 1 in >= 2/3 of runs; FAIL if the "
        "median < 1 (Prop. 4.2 as stated, raw gradients; the evidence adds the relative "
        "displacement ||dU||/||U|| over ||dE||/||E|| that AdamW makes in the same window)",
        "gates_stable": "A precondition of the paper's ReLU corollary, not a claim of it. "
        "PASS if in more than half of the runs the training-set gate pattern drifts by at most "
        f"{s['gate_drift_max']:g} (fraction of (sample, unit) gates changed since the weight "
        "snapshot at T_cls, and the same weighted by each unit's share of the logits) on the "
        "snapshots in [T_cls, T_gen]",
        "fourier": f"PASS if in more than half of the runs the final Fourier gap "
        f"<= {s['fourier_gap_max']:g} and at most half its initial value",
        "deep_linear": "PASS if, over lazy deep linear cells (orthogonal init, n < d, weight "
        "decay > 0), the median of each cell's median T_rep(rep_spurious, eta="
        f"{s['dln_eta']:g}) / T_cls(eps_star) >= {s['dln_min_ratio']:g} (a cell where no run "
        "fired counts as 0)",
        "dln_rate_scaling": "PASS if in every lazy sweep with an ok scaling fit the interval of "
        "the exponent of T_rep(rep_spurious) against weight decay (lr fixed) holds -1",
        "dln_controls": "PASS if no weight-decay-0 or small-init cell has a median "
        f"T_rep(rep_spurious, eta={s['dln_eta']:g}) / T_cls(eps_star) >= {s['dln_min_ratio']:g}",
        "small_sv_shrink_faster": "PASS if the median over lazy runs of Spearman rho(rank from "
        "the largest singular value of A, relative shrink rate over the last "
        f"{s['late_fraction']:.0%} of steps) >= {s['dln_sv_min_rho']:g}",
        "dln_rep_law": "PASS if the law selection chooses the log law for rep_spurious in more "
        "than half of the lazy cells with an ok fit (exponential tail; docs/science.md 6)",
        "relu_reduction": "Only with analysis.reduction on. From the exact training state at "
        "t0 in {T_cls(eps_star), mid-plateau} the network is trained on with its training-set "
        "gates frozen (the linear model in the active coordinates, Prop. 4.1). A (run, t0) "
        f"pair tracks when over (t0, T_gen] the relative divergence ||theta_frozen - "
        f"theta_real|| / ||theta_real - theta(t0)|| and the relative test-CE gap stay <= "
        f"{s['reduction_tol']:g}; only pairs whose gates drift by at most "
        f"{s['gate_drift_max']:g} on [T_cls, T_gen] are scored; PASS if more than half of them "
        "track, else FAIL",
    }


def _claim_rule(claim: Mapping[str, Any], rules: Mapping[str, str]) -> str:
    """A claim's rule: its claims.json record's `rule`, else the report's own statement."""
    return str(claim.get("rule") or rules.get(claim.get("id", ""), ""))


def _claims_table(claims: list[dict], rules: Mapping[str, str]) -> str:
    """Verdict table: claim (id and the paper's statement), verdict, rule, evidence, all in full."""
    rows = "".join(
        f'<tr><td><b>{_esc(c.get("id", ""))}</b><br><span class="note">'
        f"{_esc(c.get('claim', ''))}</span></td>"
        f'<td class="{_esc(c.get("verdict", ""))}">{_esc(c.get("verdict", ""))}</td>'
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
        "or power decay (theta = (1 + 1/p)/2). <i>ratio</i>: T_clock / T_cls at the reference "
        "levels, geometric mean over seeds. <i>scaling</i>: a clock against a grid axis "
        "within a group. Intervals [low, high]: seed bootstrap. Only <i>ok</i> fits judge "
        "claims.</p>",
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


def _top(r: _Report) -> list[str]:
    """Title, the summary line, both clocks per cell, then the verdicts with rule and evidence."""
    counts = {v: sum(c.get("verdict") == v for c in r.claims) for v in ("PASS", "FAIL")}
    counts["INCONCLUSIVE"] = len(r.claims) - counts["PASS"] - counts["FAIL"]
    verdicts = ", ".join(f"{counts[v]} {v}" for v in ("PASS", "FAIL", "INCONCLUSIVE"))
    runs = r.runs
    seeds = r.config.get("seeds") or (sorted({int(s) for s in runs["seed"]}) if len(runs) else [])
    return [
        f"<h1>twoclocks report: {_esc(r.study)}</h1>",
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
        "median over the runs where the clock fired [seed min, seed max], then fired/runs. A run "
        "grokked when T_gen fired. Click a cell for its clocks at every level and its fits.</p>",
        _overview_table(r.overview, clock_headers(r.levels)),
        "<h2>Verdicts</h2>",
        _claims_table(r.claims, claim_rules(r.config.get("claims"))),
    ]


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


def _rep_reference_level(config: Mapping[str, Any]) -> float | None:
    """The analysis reference level of the claims' representation clock (None: the default)."""
    rep = cl.resolve_claim_settings(config.get("claims"))["rep_clock"]
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
