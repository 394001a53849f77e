"""Live view of a running study: `python -m twoclocks.watch results/<study>`.

Every `--every` seconds it reads the trajectory stores of the study, finished ones
(`runs/<cell>/trajectory.zarr`, else `stacked/<group>/train/cells/<cell>/trajectory.zarr`) and
running ones (`state/<group>/work/stacked.zarr.partial`, written by the training engine while it
trains; a stacked store holds every cell of its group, members in cell order), and writes

- a self-refreshing offline HTML page (`--out`, default `<study>/watch.html`): train / test
  cross-entropy and accuracy vs step per cell (median over seeds), Vega inlined, no network;
- a terminal summary: every planned cell of the study's config with its status (pending,
  running, finished, failed: a job whose process is gone without a finished store, see
  `twoclocks.liveness`), last logged step, train CE and test accuracy (median over members, as
  in the plots), and the study's progress in member-steps, elapsed time and, where
  `twoclocks.eta` has a plan, the remaining time.

It exits once every planned cell is finished or failed (exit status 1 if any failed);
otherwise Ctrl-C stops it (the study keeps running).

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
import yaml

from twoclocks import liveness

log = logging.getLogger("twoclocks.watch")

METRICS = {  # store variable -> panel title (units)
    "train_loss": "train cross-entropy (nats)",
    "test_loss": "test cross-entropy (nats)",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
}
MAX_POINTS = 300  # logged steps per line on the page (log+linear thinned)
STATISTIC = "median"  # over a cell's seeds, in the table and the plots alike


COLUMNS = ["cell", "status", "step", "steps", "train CE", "test acc", "note"]


@dataclass(frozen=True)
class Source:
    """One trajectory store: the cells it holds (several for a stacked group) and its status."""

    path: Path
    cells: tuple[str, ...]
    status: str  # "running" | "finished" | "failed"
    note: str = ""


def jobs(study_dir: str | Path) -> dict[str, tuple[str, dict]]:
    """group id -> (state, marker record) of every train job with a work folder
    (`state/<group>/work`): running, failed (`twoclocks.liveness`) or unknown."""
    root = Path(study_dir) / "state"
    return {
        work.parent.relative_to(root).as_posix(): liveness.job_state(work)
        for work in sorted(root.glob("**/work"))
    }


def load_plan(study_dir: str | Path, configfile: str | Path | None = None):
    """(the study's `twoclocks.config.Study` or None, where it came from).

    From `configfile`, else the config the report stage recorded in `claims.json`, else the
    `config/*.yaml` (relative to the working directory) whose `study:` is the folder's name.
    """
    from twoclocks.config import ConfigError, load_config

    study_dir = Path(study_dir)
    if configfile is not None:
        return load_config(configfile), str(configfile)
    claims = study_dir / "claims.json"
    try:
        recorded = json.loads(claims.read_text()).get("config")
        return load_config(recorded, where=str(claims)), str(claims)
    except (OSError, ValueError, AttributeError, ConfigError):
        pass
    for path in sorted(Path("config").glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text())
            if isinstance(raw, dict) and raw.get("study") == study_dir.resolve().name:
                return load_config(path), str(path)
        except (OSError, yaml.YAMLError, ConfigError):
            continue
    return None, f"no config found for {study_dir.name} (pass --configfile)"


def discover(study_dir: str | Path) -> list[Source]:
    """The study's stores: finished per-cell stores, then stores of groups still training (or
    whose job is gone: failed)."""
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
    for group, (state, record) in jobs(root).items():
        work = root / "state" / group / "work"
        for name in ("stacked.zarr.partial", "stacked.zarr"):
            store = work / name
            if store.is_dir():
                cells = tuple(c for c in _stacked_cells(store) if c not in found)
                status = "failed" if state == "failed" else "running"
                if cells:
                    sources.append(Source(store, cells, status, record.get("reason", "")))
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


def snapshot(study_dir: str | Path, plan=None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Read every store once: (long progress table, per-cell summary, notes on skipped stores).

    `plan`: the study's `Study` (`load_plan`); its cells without a store are listed too, as
    pending, or as running / failed when their group's job is (started, no rows yet). Never
    raises for a store it cannot read right now (any error: the writer may be replacing a
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
            status[c] = (src.status, src.note)
        frames.append(df)
    if plan is not None:
        job = jobs(study_dir)
        for cell in plan.cells:
            if cell.id not in status:
                state, record = job.get(cell.params["group_id"], ("pending", {}))
                state = "running" if state == "unknown" else state
                status[cell.id] = (state, record.get("reason", ""))
    cols = ["cell_id", "seed", "step", "metric", "value"]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return data, summarise(data, status, plan), notes


def summarise(data: pd.DataFrame, status: dict, plan=None) -> pd.DataFrame:
    """Per cell (planned cells in plan order first): status, last step written by every
    member, planned steps, and at that step the median over members of train CE and test
    accuracy. `status`: cell id -> status or (status, note)."""
    planned = {c.id: c.params["steps"] for c in plan.cells} if plan is not None else {}
    order = [c for c in planned if c in status] + [c for c in status if c not in planned]
    rows = []
    for cid in order:
        state, note = status[cid] if isinstance(status[cid], tuple) else (status[cid], "")
        d = data[data["cell_id"] == cid]
        tl = d[d["metric"] == "train_loss"]
        last = float(tl.groupby("seed")["step"].max().min()) if len(tl) else float("nan")
        med = d[d["step"] == last].groupby("metric")["value"].agg(STATISTIC)
        rows.append(
            {
                "cell": cid,
                "status": state,
                "step": last,
                "steps": planned.get(cid, np.nan),
                "train CE": float(med.get("train_loss", np.nan)),
                "test acc": float(med.get("test_acc", np.nan)),
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def progress(study_dir: str | Path, data: pd.DataFrame, summary: pd.DataFrame, plan) -> dict:
    """The study's progress: cells per status, member-steps done and planned (finished cells
    count in full), seconds since its first dataset was written, and the remaining seconds
    from the ETA plan (`twoclocks.eta`; None without one)."""
    counts = summary["status"].value_counts().to_dict()
    out: dict = {"cells": counts, "member_steps_done": None, "member_steps_planned": None}
    if plan is not None:
        members = {c.id: len(c.params["seeds"]) for c in plan.cells}
        out["member_steps_planned"] = sum(members[c.id] * c.params["steps"] for c in plan.cells)
        tl = data[(data["metric"] == "train_loss") & data["cell_id"].isin(list(members))]
        last = tl.groupby(["cell_id", "seed"])["step"].max().groupby("cell_id").sum()
        done = 0.0
        for row in summary.itertuples():
            if row.cell in members:
                full = members[row.cell] * row.steps
                done += full if row.status == "finished" else min(full, last.get(row.cell, 0))
        out["member_steps_done"] = int(done)
    datasets = [p.stat().st_mtime for p in Path(study_dir).glob("data/*.zarr")]
    out["elapsed_s"] = time.time() - min(datasets) if datasets else None
    out["remaining_s"] = remaining_s(study_dir)
    return out


def remaining_s(study_dir: str | Path) -> float | None:
    """The study's remaining training time from the ETA plan Snakemake saved at the start of the
    run (`twoclocks.eta.eta_of_run`, re-read against the steps trained so far); None without a
    plan."""
    from twoclocks.eta import eta_of_run

    try:
        estimate = eta_of_run(Path(study_dir))
        return None if estimate is None else float(estimate.wall_s)
    except Exception as exc:  # noqa: BLE001 - an estimate must never stop the watching
        log.warning("twoclocks.eta failed (%s: %s)", type(exc).__name__, exc)
        return None


def done(summary: pd.DataFrame, plan) -> bool:
    """Whether a known plan has every cell finished or failed (nothing runs or waits)."""
    return plan is not None and summary["status"].isin(["finished", "failed"]).all()


def _duration(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "-"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def headline(prog: dict) -> str:
    """One line: cells per status, member-steps, elapsed and remaining time."""
    cells = ", ".join(f"{n} {k}" for k, n in sorted(prog["cells"].items())) or "no cells yet"
    parts = [cells]
    if prog["member_steps_planned"]:
        done_, planned = prog["member_steps_done"], prog["member_steps_planned"]
        parts.append(f"member-steps {done_:,}/{planned:,} ({done_ / planned:.0%})")
    parts.append(f"elapsed {_duration(prog['elapsed_s'])} (since the first dataset)")
    remaining = prog["remaining_s"]
    parts.append(
        f"remaining ~{_duration(remaining)}" if remaining is not None else "remaining: no estimate"
    )
    return " | ".join(parts)


def chart(data: pd.DataFrame) -> alt.TopLevelMixin:
    """Train/test CE (log) and accuracy vs step per cell, median over seeds (the statistic of
    the table), one panel per metric."""
    from twoclocks.report.figures import thin_indices

    med = data.groupby(["cell_id", "metric", "step"], sort=True)["value"].agg(STATISTIC)
    med = med.reset_index()
    parts = []
    for (cid, m), g in med.groupby(["cell_id", "metric"], sort=True):
        parts.append(g.iloc[thin_indices(len(g), MAX_POINTS)].assign(cell_id=cid, metric=m))
    med = pd.concat(parts, ignore_index=True) if parts else med
    panels = []
    for m, title in METRICS.items():
        d = med[(med["metric"] == m) & ((med["value"] > 0) | ~m.endswith("loss"))]
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
    out: str | Path,
    data: pd.DataFrame,
    summary: pd.DataFrame,
    notes,
    every_s: float,
    study: str,
    head: str = "",
) -> Path:
    """Write the self-refreshing offline page atomically (temp file + rename); `head`: the
    progress line (`headline`)."""
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
        f"{max(1, int(every_s))} s. Table and lines: median over seeds.</p>"
        f"<p>{html.escape(head)}</p>{table}"
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
        description="Live train/test loss and accuracy of every cell of a study: pending, "
        "running, finished or failed. Exits when every planned cell is finished or failed.",
    )
    ap.add_argument("study_dir", help="the study's results folder, e.g. results/paper")
    ap.add_argument("--out", help="HTML page to write (default: STUDY_DIR/watch.html)")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between reads (30)")
    ap.add_argument("--once", action="store_true", help="read once, write, print and exit")
    ap.add_argument(
        "--configfile",
        help="the study's config, for its planned cells (default: the one claims.json records, "
        "else the config/*.yaml whose study: is the folder's name)",
    )
    args = ap.parse_args(argv)
    if not args.every > 0:
        ap.error(f"--every must be a positive number of seconds, got {args.every}")
    study = Path(args.study_dir)
    if not study.is_dir():
        ap.error(f"{study} is not a directory; pass a study's results folder (results/<study>)")
    from twoclocks.config import ConfigError

    try:
        plan, source = load_plan(study, args.configfile)
    except (OSError, ConfigError) as err:
        ap.error(f"--configfile: {err}")
    out = Path(args.out) if args.out else study / "watch.html"
    try:
        while True:
            data, summary, notes = snapshot(study, plan)
            head = headline(progress(study, data, summary, plan))
            write_page(out, data, summary, notes, args.every, study.resolve().name, head)
            if sys.stdout.isatty() and not args.once:
                print("\033[H\033[J", end="")  # redraw in place on a terminal; logs get lines
            print(f"[{time.strftime('%H:%M:%S')}] {out}\n{head}", flush=True)
            print(terminal_summary(summary), flush=True)
            for n in notes + ([] if plan is not None else [source]):
                print("  " + n, flush=True)
            if done(summary, plan):
                failed = int((summary["status"] == "failed").sum())
                print(f"study done: every planned cell finished or failed ({failed} failed)")
                return 1 if failed else 0
            if args.once:
                return 0
            print(f"next read in {args.every:g} s; Ctrl-C stops watching (not the study)")
            time.sleep(args.every)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
