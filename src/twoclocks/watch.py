"""Live view of a running study: `python -m twoclocks.watch results/<study>`.

Every `--every` seconds it reads the trajectory stores of the study, finished ones
(`runs/<cell>/trajectory.zarr`, else `stacked/<group>/train/cells/<cell>/trajectory.zarr`) and
running ones (`state/<group>/work/stacked.zarr.partial`, written by the training engine while it
trains; a stacked store holds every cell of its group, members in cell order), and writes

- a self-refreshing offline HTML page (`--out`, default `<study>/watch.html`): train / test
  cross-entropy and accuracy vs step per cell (seed mean), Vega inlined, no network;
- a terminal summary: per cell, status, last logged step, train CE and test accuracy (median over
  members).

Reading never writes: stores are opened read-only, rows still holding the NaN placeholders of
`create_store` count as not yet written, and a store caught mid-write (a chunk being replaced, a
store being published or moved) is skipped for this round and read again at the next one.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import xarray as xr

log = logging.getLogger("twoclocks.watch")

METRICS = {  # store variable -> panel title (units)
    "train_loss": "train cross-entropy (nats)",
    "test_loss": "test cross-entropy (nats)",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
}
MAX_POINTS = 300  # logged steps per line on the page (log+linear thinned)


@dataclass(frozen=True)
class Source:
    """One trajectory store: the cells it holds (several for a stacked group) and its status."""

    path: Path
    cells: tuple[str, ...]
    status: str  # "running" | "finished"


def discover(study_dir: str | Path) -> list[Source]:
    """The study's stores: finished per-cell stores, then stores of groups still training."""
    root = Path(study_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a directory; pass a study's results folder, e.g. results/<study>"
        )
    found: dict[str, Source] = {}
    for store in sorted((root / "runs").glob("**/trajectory.zarr")):
        cid = store.parent.relative_to(root / "runs").as_posix()
        found[cid] = Source(store, (cid,), "finished")
    for store in sorted((root / "stacked").glob("**/cells/**/trajectory.zarr")):
        cells_dir = next(p for p in store.parents if p.name == "cells")
        cid = store.parent.relative_to(cells_dir).as_posix()
        found.setdefault(cid, Source(store, (cid,), "finished"))
    sources = [found[c] for c in sorted(found)]
    for work in sorted((root / "state").glob("**/work")):
        for name in ("stacked.zarr.partial", "stacked.zarr"):
            store = work / name
            if store.is_dir():
                cells = tuple(c for c in _stacked_cells(store) if c not in found)
                if cells:
                    sources.append(Source(store, cells, "running"))
                break
    return sources


def _stacked_cells(store: Path) -> list[str]:
    """Cell ids of a stacked store (its `cell` attr names them joined by '+')."""
    try:
        meta = json.loads((store / "zarr.json").read_text())
        cell = json.loads(meta.get("attributes", {}).get("cell", "{}"))
    except (OSError, ValueError):
        return []
    return [c for c in str(cell.get("cell_id", "")).split("+") if c]


def read_progress(source: Source) -> pd.DataFrame:
    """Long table cell_id, seed, step, metric, value of the rows written so far (read-only).

    Members of a stacked store are assigned to its cells in order (equal seeds per cell). Rows
    whose train loss is still NaN are not yet written and left out. Raises OSError/ValueError/
    KeyError when the store cannot be read right now (the caller retries next round).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_dataset(source.path, engine="zarr", consolidated=False, chunks=None)
        try:
            names = [m for m in METRICS if m in ds]
            if "train_loss" not in names:
                raise KeyError(f"{source.path} has no train_loss")
            arrays = {m: np.asarray(ds[m].values, float) for m in names}
            steps = np.asarray(ds["step"].values, float)
            seeds = np.asarray(ds["seed"].values, int)
        finally:
            ds.close()
    n_members, n_cells = len(seeds), len(source.cells)
    per = n_members // n_cells if n_cells and n_members % n_cells == 0 else n_members
    cell_of = [source.cells[min(i // per, n_cells - 1)] for i in range(n_members)]
    written = np.isfinite(arrays["train_loss"])  # (member, step)
    frames = []
    for m, vals in arrays.items():
        i, j = np.nonzero(written & np.isfinite(vals))
        frames.append(
            pd.DataFrame(
                {
                    "cell_id": np.asarray(cell_of, dtype=object)[i],
                    "seed": seeds[i],
                    "step": steps[j],
                    "metric": m,
                    "value": vals[i, j],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def snapshot(study_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Read every store once: (long progress table, per-cell summary, notes on skipped stores).

    Never raises for a store it cannot read right now (any error: the writer may be replacing a
    chunk or publishing the store); it is named in the notes and read again next round.
    """
    frames, notes, status = [], [], {}
    for src in discover(study_dir):
        try:
            df = read_progress(src)
        except Exception as exc:  # noqa: BLE001 - a store caught mid-write: retry next round
            notes.append(f"{src.path}: not readable this round ({type(exc).__name__}); retrying")
            continue
        for c in src.cells:
            status[c] = src.status
        frames.append(df)
    cols = ["cell_id", "seed", "step", "metric", "value"]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return data, summarise(data, status), notes


def summarise(data: pd.DataFrame, status: dict[str, str]) -> pd.DataFrame:
    """Per cell: status, last step written by every member, and at that step the median over
    members of train CE and test accuracy."""
    rows = []
    for cid in status:
        d = data[data["cell_id"] == cid]
        tl = d[d["metric"] == "train_loss"]
        last = float(tl.groupby("seed")["step"].max().min()) if len(tl) else float("nan")
        at = d[d["step"] == last]
        med = at.groupby("metric")["value"].median()
        rows.append(
            {
                "cell": cid,
                "status": status[cid],
                "step": last,
                "train CE": float(med.get("train_loss", np.nan)),
                "test acc": float(med.get("test_acc", np.nan)),
            }
        )
    return pd.DataFrame(rows, columns=["cell", "status", "step", "train CE", "test acc"])


def chart(data: pd.DataFrame) -> alt.TopLevelMixin:
    """Seed-mean train/test CE (log) and accuracy vs step per cell, one panel per metric."""
    from twoclocks.report.figures import thin_indices

    mean = data.groupby(["cell_id", "metric", "step"], sort=True)["value"].mean().reset_index()
    parts = []
    for (cid, m), g in mean.groupby(["cell_id", "metric"], sort=True):
        parts.append(g.iloc[thin_indices(len(g), MAX_POINTS)].assign(cell_id=cid, metric=m))
    mean = pd.concat(parts, ignore_index=True) if parts else mean
    panels = []
    for m, title in METRICS.items():
        d = mean[(mean["metric"] == m) & ((mean["value"] > 0) | ~m.endswith("loss"))]
        if d.empty:
            continue
        y = alt.Y(
            "value:Q",
            title=title,
            scale=alt.Scale(type="log") if m.endswith("loss") else alt.Scale(domain=[0, 1]),
        )
        panels.append(
            alt.Chart(d)
            .mark_line()
            .encode(
                x=alt.X("step:Q", title="step"),
                y=y,
                color=alt.Color("cell_id:N", title="cell"),
                tooltip=["cell_id:N", "step:Q", alt.Tooltip("value:Q", format=".4g")],
            )
            .properties(title=title, width=360, height=220)
        )
    if not panels:
        return alt.Chart(pd.DataFrame({"x": []})).mark_point()
    rows = [alt.hconcat(*panels[i : i + 2]) for i in range(0, len(panels), 2)]
    return alt.vconcat(*rows)


def write_page(
    out: str | Path, data: pd.DataFrame, summary: pd.DataFrame, notes, every_s: float, study: str
) -> Path:
    """Write the self-refreshing offline page atomically (temp file + rename)."""
    from twoclocks.report.figures import js_bundle, spec_json

    out = Path(out)
    table = summary.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")
    note = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{max(1, int(every_s))}">'
        f"<title>twoclocks watch: {html.escape(study)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px}</style>"
        f"<script>{js_bundle()}</script></head><body>"
        f"<h1>twoclocks watch: {html.escape(study)}</h1>"
        f"<p>Updated {time.strftime('%Y-%m-%d %H:%M:%S')}; refreshes every "
        f"{max(1, int(every_s))} s. Lines: seed mean.</p>{table}"
        f"<ul>{note}</ul>"
        '<div id="vis"></div>'
        f'<script>vegaEmbed("#vis", {spec_json(chart(data))}, {{"actions": false}})'
        ".catch(console.error);</script></body></html>\n"
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def terminal_summary(summary: pd.DataFrame) -> str:
    """The summary as aligned text for the terminal."""
    if summary.empty:
        return "no trajectory stores yet"
    return summary.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m twoclocks.watch",
        description="Live train/test loss and accuracy of a study's running and finished cells.",
    )
    ap.add_argument("study_dir", help="the study's results folder, e.g. results/paper")
    ap.add_argument("--out", help="HTML page to write (default: STUDY_DIR/watch.html)")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between reads (30)")
    ap.add_argument("--once", action="store_true", help="read once, write, print and exit")
    args = ap.parse_args(argv)
    if not args.every > 0:
        ap.error(f"--every must be a positive number of seconds, got {args.every}")
    study = Path(args.study_dir)
    if not study.is_dir():
        ap.error(f"{study} is not a directory; pass a study's results folder (results/<study>)")
    out = Path(args.out) if args.out else study / "watch.html"
    try:
        while True:
            data, summary, notes = snapshot(study)
            write_page(out, data, summary, notes, args.every, study.resolve().name)
            if sys.stdout.isatty() and not args.once:
                print("\033[H\033[J", end="")  # redraw in place on a terminal; logs get lines
            print(f"[{time.strftime('%H:%M:%S')}] {out}\n{terminal_summary(summary)}", flush=True)
            for n in notes:
                print("  " + n, flush=True)
            if args.once:
                return 0
            time.sleep(args.every)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
