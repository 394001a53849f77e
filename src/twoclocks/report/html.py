"""The study report: one self-contained offline HTML page (`results/<study>/report/index.html`).

Vega, Vega-Lite and vega-embed are inlined once (vl-convert bundle, no CDN); each figure's spec
is embedded as JSON. When every embed has settled the page sets `document.title` to end with
"[rendered N/N]" (or "[render errors: k]") and `<body data-render="ok|error"
data-console-errors="n" data-console-warnings="m">` (console.error/warn and uncaught errors are
counted from before the bundle loads), markers that the headless-browser test reads.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from twoclocks.report.figures import js_bundle, spec_json

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
.PASS { background: #c8efc8; font-weight: bold; } .FAIL { background: #f6c6c6; font-weight: bold; }
.INCONCLUSIVE { background: #f4e7b5; font-weight: bold; }
figure { margin: 1.5em 0; } figcaption { color: #555; font-size: 0.9em; }
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


def _runtime(runtime: Mapping[str, Any] | None) -> str:
    """The runtime section: totals, per-cell training time, and the jobs' benchmark files."""
    if not runtime:
        return '<p class="note">(none)</p>'
    runtime = dict(runtime)
    cells = runtime.pop("cells", None)
    bench = runtime.pop("benchmarks", None)
    parts = [_kv(runtime)] if runtime else []
    if cells:
        df = pd.DataFrame.from_dict(cells, orient="index").rename_axis("cell_id").reset_index()
        parts.append(_table(df))
    if bench:
        parts.append(
            '<p class="note">Per job, from Snakemake\'s <code>benchmark:</code> files '
            "(<code>benchmarks/&lt;rule&gt;/&lt;job&gt;.tsv</code>): wall time, peak resident "
            "memory and CPU time of the job's processes.</p>"
        )
        parts.append(_table(pd.DataFrame(bench)))
    return "".join(parts)


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
                **{k: r.get(k) for k in ("fit", "clock", "level", "axis", "status", "preferred")},
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


def _claims_table(claims: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(c.get('id', ''))}</td><td>{_esc(c.get('claim', ''))}</td>"
        f'<td class="{_esc(c.get("verdict", ""))}">{_esc(c.get("verdict", ""))}</td>'
        f"<td>{_esc(c.get('evidence', ''))}</td></tr>"
        for c in claims
    )
    head = "<tr><th>id</th><th>claim (paper)</th><th>verdict</th><th>evidence</th></tr>"
    return f'<table id="claims"><thead>{head}</thead><tbody>{rows}</tbody></table>'


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
    """Write `out_dir/index.html`: what was run, clock and fit tables, figures, claims.

    One self-contained page that opens with no network; returns its path. `notes` lists
    skipped figures.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = (config or {}).get("study", provenance.get("study", "study") if provenance else "study")
    counts = {v: sum(c.get("verdict") == v for c in claims) for v in ("PASS", "FAIL")}
    counts["INCONCLUSIVE"] = len(claims) - counts["PASS"] - counts["FAIL"]
    figs = []
    for i, (name, chart) in enumerate(figures.items()):
        figs.append(
            f'<figure id="fig-{_esc(name)}"><div id="vis{i}"></div>'
            f'<script type="application/json" data-figure="vis{i}">{spec_json(chart)}</script>'
            f"<figcaption><b>{_esc(name)}</b></figcaption></figure>"
        )
    skipped = "".join(f"<li>{_esc(n)}</li>" for n in notes or [])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>twoclocks report: {_esc(study)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_CAPTURE}</script>",
        f"<script>{js_bundle()}</script>",
        "</head><body>",
        f"<h1>twoclocks report: {_esc(study)}</h1>",
        "<p>Two training clocks of grokking (arXiv 2606.05863): classifier clock T_cls(eps), "
        "representation clock T_rep(eta), and checks of the paper's claims.</p>",
        "<h2>Claims</h2>",
        f"<p>{counts['PASS']} PASS, {counts['FAIL']} FAIL, "
        f"{counts['INCONCLUSIVE']} INCONCLUSIVE.</p>",
        _claims_table(claims),
        "<h2>Figures</h2>",
        *figs,
        f'<ul class="note">{skipped}</ul>' if skipped else "",
        "<h2>Clocks</h2>",
        '<p class="note">Per cell, clock and level; censored runs (never fired) count in '
        "the denominator of <i>fired</i>.</p>",
        _table(clock_summary(clocks)),
        "<h2>Fits</h2>",
        '<p class="note"><i>law</i>: per cell and clock, the log law T = a + b log(1/x) against '
        "the free-offset power law T = T0 + C x^-k, by AIC (<i>preferred</i>; delta_aic = "
        "AIC(power) - AIC(log), &gt; 0 favours the log law; <i>support</i> decisive when its "
        "interval excludes 0). <i>tail</i>: per seed, the gap after T_cls as G_inf + exponential "
        "or power decay (theta = (1 + 1/p)/2). Intervals [low, high]: seed bootstrap. Only "
        "<i>ok</i> fits judge claims; <i>insufficient</i> ones say why.</p>",
        _table(fits_table(fits)),
        "<h2>What was run</h2>",
        "<h3>Runtime</h3>",
        _runtime(runtime),
        "<h3>Provenance</h3>",
        _kv(provenance),
        "<h3>Configuration</h3>",
        f"<pre>{_esc(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>",
        f"<script>{_EMBED}</script>",
        "</body></html>",
    ]
    path = out / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
