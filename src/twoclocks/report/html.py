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
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from twoclocks.analyze import claims as cl
from twoclocks.report.figures import js_bundle, spec_json

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
#claims td { font-size: 0.95em; } #claims td:nth-child(3) { width: 28%; }
.evidence { max-width: 34em; overflow-wrap: anywhere; }
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


def clock_summary(clocks: pd.DataFrame | None) -> pd.DataFrame:
    """Per (cell, clock, level): fired/total runs and median, min, max step of the fired ones."""
    if clocks is None or len(clocks) == 0:
        return pd.DataFrame()
    df = clocks.copy()
    pre = df["pre_fit"].astype(bool) if "pre_fit" in df else pd.Series(False, index=df.index)
    if "unresolved" in df:
        df["fired_unresolved"] = ~df["censored"].astype(bool) & df["unresolved"].astype(bool)
    n_pre = df[pre].groupby(["cell_id", "clock", "level"]).size()
    df = df[~pre]  # crossings before T_cls(eps_star) are counted, never summarised as clocks
    df["fired"] = ~df["censored"].astype(bool)
    g = df.groupby(["cell_id", "clock", "level"], sort=True)
    out = g.agg(
        fired=("fired", "sum"),
        runs=("fired", "size"),
        median_step=("step", "median"),
        min_step=("step", "min"),
        max_step=("step", "max"),
        median_tau=("tau", "median"),
    ).reset_index()
    if "below_floor" in df:
        out["below_floor"] = g["below_floor"].any().to_numpy()
    if "unresolved" in df:
        out["unresolved"] = g["fired_unresolved"].sum().to_numpy()
    if "pre_fit" in clocks:
        key = pd.MultiIndex.from_frame(out[["cell_id", "clock", "level"]])
        out["pre_fit"] = n_pre.reindex(key, fill_value=0).to_numpy()
    out["fired"] = out["fired"].astype(str) + "/" + out["runs"].astype(str)
    return out.drop(columns="runs")


def _fit_record_rows(fits: Mapping[str, Any]) -> pd.DataFrame:
    """fits.json (design.md "Fits output"): one row per fit record, params as `name=est [ci]`."""

    def fmt(p: Any) -> str:
        if not isinstance(p, Mapping):
            return _cell(p)
        est, lo, hi = (p.get(k) for k in ("estimate", "ci_low", "ci_high"))
        ci = f" [{lo:.4g}, {hi:.4g}]" if isinstance(lo, float) and isinstance(hi, float) else ""
        return ("nan" if est is None else f"{est:.4g}") + ci

    rows = []
    records = [(cid, r) for cid, c in fits["cells"].items() for r in c.get("fits") or []]
    records += [("*", r) for r in fits.get("scaling") or []]
    for cid, r in records:
        stats = r.get("stats") or {}
        params = r.get("params") or {}
        if r.get("fit") == "law":  # the chosen law's parameters first (docs/design.md)
            first = ["delta_aic", "b", "a"] if r.get("preferred") == "log" else ["delta_aic"]
            first += ["k", "T0", "C"] if r.get("preferred") == "power" else []
            params = {k: params[k] for k in [*first, *params] if k in params}
        rows.append(
            {
                "cell_id": cid,
                **{
                    k: r.get(k, "")
                    for k in ("fit", "clock", "level", "axis", "group", "status", "preferred")
                },
                "finding": stats.get("finding", ""),
                "support": stats.get("law_support", ""),
                "params": "; ".join(f"{k}={fmt(v)}" for k, v in params.items()),
                "r2": stats.get("r2"),
                "n_points": stats.get("n_points"),
                "reason": r.get("reason", ""),
            }
        )
    return pd.DataFrame(rows)


def fits_table(fits: Mapping[str, Any] | None) -> pd.DataFrame:
    """Fits as rows: fits.json records if `fits` has `cells`, else nested keys flattened."""
    if isinstance(fits, Mapping) and isinstance(fits.get("cells"), Mapping):
        return _fit_record_rows(fits)
    rows: list[dict] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            leaves = {k: v for k, v in node.items() if not isinstance(v, (Mapping, list))}
            if leaves:
                rows.append({"fit": " / ".join(path) or "(top)", **leaves})
            for k, v in node.items():
                if isinstance(v, Mapping):
                    walk(v, (*path, str(k)))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, str(i)))

    walk(fits or {}, ())
    return pd.DataFrame(rows)


def claim_rules(settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Claim id -> the rule that turns its measurement into a verdict, with the thresholds of
    the config's `claims:` section filled in: the registry's own rule texts (each ClaimSpec's
    `rule`), so that a new claim module states its rule here without an edit."""
    return cl.claim_rules(settings)


EVIDENCE_CHARS = 160  # evidence longer than this opens with its start, the rest one click away
RULE_CHARS = 100  # likewise for a claim's rule


def _evidence(text: str, chars: int = EVIDENCE_CHARS) -> str:
    """Claim evidence or rule; a long one shows its start and folds the rest (one click)."""
    if len(text) <= chars:
        return _esc(text)
    cut = text.rfind(" ", 0, chars)
    cut = cut if cut > 0 else chars
    return f"<details><summary>{_esc(text[:cut])} …</summary>{_esc(text[cut:])}</details>"


def _claims_table(claims: list[dict], rules: Mapping[str, str]) -> str:
    """Compact verdict table: claim (id and the paper's statement), verdict, rule, evidence."""
    rows = "".join(
        f'<tr><td><b>{_esc(c.get("id", ""))}</b><br><span class="note">'
        f"{_esc(c.get('claim', ''))}</span></td>"
        f'<td class="{_esc(c.get("verdict", ""))}">{_esc(c.get("verdict", ""))}</td>'
        f"<td>{_evidence(c.get('rule') or rules.get(c.get('id', ''), ''), RULE_CHARS)}</td>"
        f'<td class="evidence">{_evidence(str(c.get("evidence", "")))}</td></tr>'
        for c in claims
    )
    head = "<tr><th>claim (paper)</th><th>verdict</th><th>rule</th><th>evidence</th></tr>"
    return f'<table id="claims" class="wide"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def cell_anchor(cell_id: str) -> str:
    """The HTML id of a cell's section: `cell-` + the cell id with unsafe characters as `-`."""
    return "cell-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", str(cell_id)).strip("-")


def grokked_runs(clocks: pd.DataFrame | None, settings: Mapping[str, Any] | None = None):
    """Per (cell_id, seed): T_cls at the claims' eps, T_gen (first step with test accuracy at the
    claims' level, else the strictest gen_loss level) and `grokked` (T_gen fired)."""
    cols = ["cell_id", "seed", "t_cls", "t_gen", "grokked"]
    if clocks is None or len(clocks) == 0 or "clock" not in clocks:
        return pd.DataFrame(columns=cols)
    s = cl.resolve_claim_settings(settings)
    gen, gen_level = cl.gen_clock(clocks, s["gen_acc_level"])
    t_gen = cl.clock_times(clocks, gen, gen_level).rename(columns={"step": "t_gen"})
    t_cls = cl.clock_times(clocks, "cls", cl.pick_level(clocks, "cls", s["cls_eps"]))
    df = t_gen[["cell_id", "seed", "t_gen"]].merge(
        t_cls[["cell_id", "seed", "step"]].rename(columns={"step": "t_cls"}),
        on=["cell_id", "seed"],
        how="outer",
    )
    df["grokked"] = df["t_gen"].notna()
    return df[cols].sort_values(["cell_id", "seed"]).reset_index(drop=True)


def _cell_ids(runtime, clocks, fits) -> list[str]:
    """Cell ids in study order: the manifests' order, then any only the clocks or fits name."""
    ids = list((runtime or {}).get("cells") or {})
    if clocks is not None and "cell_id" in clocks:
        ids += list(dict.fromkeys(clocks["cell_id"].astype(str)))
    if isinstance(fits, Mapping) and isinstance(fits.get("cells"), Mapping):
        ids += [str(c) for c in fits["cells"]]
    return list(dict.fromkeys(ids))


def _overview(cell_ids, runs: pd.DataFrame, fit_rows: pd.DataFrame, runtime) -> pd.DataFrame:
    """One row per cell: link, runs grokked, median T_cls and T_gen, ok/insufficient fits, time."""
    cells_rt = (runtime or {}).get("cells") or {}
    rows = []
    for cid in cell_ids:
        r = runs[runs["cell_id"] == cid] if len(runs) else runs
        f = fit_rows[fit_rows["cell_id"] == cid] if len(fit_rows) else fit_rows
        grok = r[r["grokked"].astype(bool)] if len(r) else r
        seeds = ", ".join(str(int(x)) for x in grok["seed"]) if len(grok) else ""
        rows.append(
            {
                "cell": cid,
                "grokked runs": f"{len(grok)}/{len(r)}" + (f" (seed {seeds})" if seeds else ""),
                "median T_cls": float(r["t_cls"].median()) if len(r) else math.nan,
                "median T_gen": float(r["t_gen"].median()) if len(r) else math.nan,
                "ok fits": int((f["status"] == "ok").sum()) if len(f) else 0,
                "insufficient fits": int((f["status"] != "ok").sum()) if len(f) else 0,
                "train wall s": (cells_rt.get(cid) or {}).get("wall_seconds"),
            }
        )
    return pd.DataFrame(rows)


def _overview_table(df: pd.DataFrame) -> str:
    if df.empty:
        return '<p class="note">(no cells)</p>'
    links = df.copy()
    html_rows = []
    for row in links.itertuples(index=False):
        vals = list(row)
        cell = f'<a href="#{cell_anchor(vals[0])}">{_esc(vals[0])}</a>'
        html_rows.append(
            "<tr><td>" + cell + "</td>" + "".join(f"<td>{_cell(v)}</td>" for v in vals[1:])
        )
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = "</tr>".join(html_rows)
    return f'<table id="cells"><thead><tr>{head}</tr></thead><tbody>{body}</tr></tbody></table>'


def insufficient_summary(fit_rows: pd.DataFrame) -> pd.DataFrame:
    """Fits that judged nothing, counted per (fit, clock, reason), with the cells (or, for
    scaling fits, the groups) they concern."""
    cols = ["fit", "clock", "reason", "count", "cells"]
    bad = fit_rows[fit_rows["status"] != "ok"].copy() if len(fit_rows) else fit_rows
    if bad.empty:
        return pd.DataFrame(columns=cols)
    group = bad["group"].fillna("").astype(str) if "group" in bad else ""
    cell = bad["cell_id"].astype(str)
    bad["where"] = np.where(group == "", cell, np.where(cell == "*", group, cell + " " + group))
    g = bad.groupby(["fit", "clock", "reason"], sort=True, dropna=False)
    out = g.agg(count=("where", "size"), cells=("where", lambda x: ", ".join(dict.fromkeys(x))))
    return out.reset_index().sort_values("count", ascending=False, kind="stable")[cols]


def reason_kind(reason: str) -> str:
    """A reason with its run-specific counts as N ("2 uncensored post-fit levels < min_levels=4"
    -> "N uncensored post-fit levels < min_levels=4"), thresholds kept."""
    return re.sub(r"\((\d+) rows", "(N rows", re.sub(r"^\d+(?=[ (])", "N", str(reason)))


def insufficient_by_kind(fit_rows: pd.DataFrame) -> pd.DataFrame:
    """The compact summary: insufficient fits per (fit, kind of reason), with their clocks."""
    per = insufficient_summary(fit_rows)
    cols = ["fit", "reason", "count", "clocks"]
    if per.empty:
        return pd.DataFrame(columns=cols)
    per["reason"] = per["reason"].map(reason_kind)
    g = per.groupby(["fit", "reason"], sort=True)
    out = g.agg(count=("count", "sum"), clocks=("clock", lambda x: ", ".join(dict.fromkeys(x))))
    return out.reset_index().sort_values("count", ascending=False, kind="stable")[cols]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b": leaf} (lists kept as leaves) for key/value tables."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _details(summary: str, body: str, open_: bool = False, id_: str | None = None) -> str:
    attrs = (f' id="{_esc(id_)}"' if id_ else "") + (" open" if open_ else "")
    return f"<details{attrs}><summary>{summary}</summary>{body}</details>"


def _csv(df: pd.DataFrame, out: Path, name: str) -> str:
    """Write `df` to out/name (deterministic CSV) and return a link to it."""
    df.to_csv(out / name, index=False, float_format="%.6g", lineterminator="\n")
    return f'<a href="{_esc(name)}" download>{_esc(name)}</a> ({len(df)} rows)'


# one-line captions: what each figure shows and its units
CAPTIONS = {
    "fig1_loss": "Train (dashed) and test (solid) cross-entropy in nats vs optimiser step; line "
    "= seed mean, band = seed min-max.",
    "fig3_loss_srank": "Test loss (left, log) and stable rank of the chosen matrix (right) vs "
    "step: the rank falls inside the generalisation window.",
    "fig2_embedding": "Embedding rows ordered by residue (generator order), projected on the "
    "final matrix's principal directions, at the first and last checkpoint.",
    "fig2_head": "Class rows of the head U, ordered and projected as for the embedding.",
    "fig2_spectra": "Fraction of row energy per Fourier frequency k, first vs last checkpoint.",
    "clock_cls": "Classifier clock: T_cls(eps) in steps vs log(1/eps); dashed = the chosen law.",
    "clock_rep": "Representation clock: T_rep(eta) in steps vs eta (log-log); dashed = the law "
    "chosen by AIC (log or power law).",
    "separation_ratio": "T_gen/T_cls and T_rep/T_cls per weight decay (mean, seed min-max); "
    "dotted = the separation threshold.",
    "clocks_depth": "Deep linear nets: clock steps vs depth L.",
    "grad_bounds": "Per-block gradient norms against the Prop. 4.2 bound terms.",
    "gates": "ReLU gate flips per log interval and the smallest |pre-activation| on the train set.",
    "deep_singular_values": "Singular values of the end-to-end map A vs step (Prop. 4.3).",
    "deep_schatten": "Sum of squared layer norms vs L times the Schatten-2/L energy (eq. 2.7).",
}


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

    Top: study, cells, seeds, which runs grokked, the verdicts (rule and evidence). Then the
    figures, one collapsed section per cell (anchor `#cell-...`, see `cell_anchor`), fits (the
    insufficient ones counted by reason), the full tables one click away, and what was run.
    One self-contained page that opens with no network; returns its path. `notes` lists
    skipped figures.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = config or {}
    study = config.get("study", (provenance or {}).get("study", "study"))
    claim_settings = config.get("claims")
    order = [v for kind in cl.OUTCOMES.values() for v in kind]  # PASS, FAIL, ..., MEASURED
    counts = {v: sum(c.get("verdict") == v for c in claims) for v in dict.fromkeys(order)}
    runs = grokked_runs(clocks, claim_settings)
    fit_rows = fits_table(fits) if isinstance((fits or {}).get("cells"), Mapping) else None
    fit_rows = fit_rows if fit_rows is not None else pd.DataFrame(columns=["cell_id", "status"])
    cell_ids = _cell_ids(runtime, clocks, fits)
    overview = _overview(cell_ids, runs, fit_rows, runtime)
    summary = clock_summary(clocks)
    seeds = config.get("seeds") or (sorted({int(s) for s in runs["seed"]}) if len(runs) else [])
    n_grok = int(runs["grokked"].sum()) if len(runs) else 0

    figs = []
    for i, (name, chart) in enumerate(figures.items()):
        figs.append(
            f'<figure id="fig-{_esc(name)}"><div id="vis{i}" class="vis"></div>'
            f'<script type="application/json" data-figure="vis{i}">{spec_json(chart)}</script>'
            f"<figcaption><b>{_esc(name)}</b>: {_esc(CAPTIONS.get(name, ''))} "
            f'<a href="figures/{_esc(name)}.png">PNG</a> '
            f'<a href="figures/{_esc(name)}.svg">SVG</a></figcaption></figure>'
        )
    skipped = "".join(f"<li>{_esc(n)}</li>" for n in notes or [])

    cell_parts = []
    for cid, row in zip(cell_ids, overview.itertuples(index=False), strict=True):
        s_rows = summary[summary["cell_id"] == cid] if len(summary) else summary
        f_rows = fit_rows[fit_rows["cell_id"] == cid] if len(fit_rows) else fit_rows
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
            f"<b>{_esc(cid)}</b>: grokked {_esc(row[1])}; {row[4]} ok fits, {row[5]} insufficient"
        )
        cell_parts.append(_details(head, body, id_=cell_anchor(cid)))

    bad_all = insufficient_summary(fit_rows)
    n_ok = int((fit_rows["status"] == "ok").sum()) if len(fit_rows) else 0
    ok_all = fit_rows[fit_rows["status"] == "ok"] if len(fit_rows) else fit_rows
    full_fits = fit_rows if len(fit_rows) else fits_table(fits)
    links = [
        _csv(overview, out, "cells.csv"),
        _csv(runs, out, "runs.csv"),
        _csv(summary, out, "clock_summary.csv"),
        _csv(full_fits, out, "fits.csv"),
    ]
    if clocks is not None and len(clocks):
        links.append(_csv(clocks, out, "clocks.csv"))
    rt = dict(runtime or {})
    rt_cells = rt.pop("cells", None)
    bench = rt.pop("benchmarks", None)
    rt_df = (
        pd.DataFrame.from_dict(rt_cells, orient="index").rename_axis("cell_id").reset_index()
        if rt_cells
        else pd.DataFrame()
    )
    bench_df = pd.DataFrame(bench or [])
    if len(rt_df):
        links.append(_csv(rt_df, out, "runtime.csv"))
    if len(bench_df):
        links.append(_csv(bench_df, out, "benchmarks.csv"))
    prov = pd.DataFrame(
        [{"key": k, "value": v} for k, v in _flatten(provenance or {}).items()],
        columns=["key", "value"],
    )
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n or v in ("PASS", "FAIL"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>twoclocks report: {_esc(study)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_CAPTURE}</script>",
        f"<script>{js_bundle()}</script>",
        "</head><body>",
        f"<h1>twoclocks report: {_esc(study)}</h1>",
        '<p class="note">Two training clocks of grokking (arXiv 2606.05863): classifier clock '
        "T_cls(eps), representation clock T_rep(eta), and checks of the paper's claims. "
        '<a href="#figures">Figures</a> · <a href="#cells-detail">Cells</a> · '
        '<a href="#fits">Fits</a> · <a href="#tables">Full tables (CSV)</a> · '
        '<a href="#run">What was run</a></p>',
        '<table id="summary">',
        f"<tr><th>study</th><td>{_esc(study)}</td><th>cells</th><td>{len(cell_ids)}</td>"
        f"<th>seeds</th><td>{_esc(', '.join(str(s) for s in seeds))}</td></tr>",
        f"<tr><th>runs grokked</th><td>{n_grok}/{len(runs)}</td><th>verdicts</th>"
        f'<td colspan="3">{_esc(verdicts)}</td></tr></table>',
        "<h2>Verdicts</h2>",
        _claims_table(claims, claim_rules(claim_settings)),
        "<h2>Cells</h2>",
        '<p class="note">A run grokked when its generalisation clock fired (T_gen, see the '
        "separation rule). Steps are optimiser steps. Click a cell for its clocks and fits.</p>",
        _overview_table(overview),
        '<h2 id="figures">Figures</h2>',
        f'<div class="figs">{"".join(figs)}</div>',
        f'<ul class="note">{skipped}</ul>' if skipped else "",
        '<h2 id="cells-detail">Per cell</h2>',
        '<p class="note">Clocks per level: fired/runs (censored runs count in the denominator), '
        "median, min and max step of the fired ones.</p>",
        "".join(cell_parts) or '<p class="note">(no cells)</p>',
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
        '<h2 id="tables">Full tables</h2>',
        '<p class="note">Also as CSV next to this page: ' + "; ".join(links) + ".</p>",
        _details("Clock summary (all cells)", _table(summary)),
        _details("Fits (all records)", _table(full_fits)),
        _details("Runs (T_cls, T_gen, grokked)", _table(runs)),
        '<h2 id="run">What was run</h2>',
        f"<p>Training wall time, all cells: {_cell(rt.pop('train_wall_seconds_total', ''))} s.</p>"
        if "train_wall_seconds_total" in rt
        else "",
        _kv(rt) if rt else "",
        _details(f"Training time per cell ({len(rt_df)})", _table(rt_df)) if len(rt_df) else "",
        _details(
            f"Snakemake benchmarks per job ({len(bench_df)})",
            '<p class="note">From the rules\' <code>benchmark:</code> files '
            "(<code>benchmarks/&lt;rule&gt;/&lt;job&gt;.tsv</code>): wall time, peak resident "
            "memory (MB) and CPU time (s) of the job's processes.</p>" + _table(bench_df),
        )
        if len(bench_df)
        else "",
        _details("Provenance", _table(prov)),
        _details(
            "Configuration",
            f"<pre>{_esc(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>",
        ),
        f"<script>{_EMBED}</script>",
        "</body></html>",
    ]
    path = out / "index.html"
    path.write_text("\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return path
