"""Integrity of a study's trajectory stores: each store against the checksums in its manifest.

zarr reads a missing chunk back as the fill value (NaN) without complaint, and a truncated one
fails deep inside a codec (``Zstd decompression error``) without naming a file. Every stage that
reads a store therefore calls :func:`verify_store` first (clocks, report, ``load_study``,
``python -m twoclocks.analyze`` where a manifest exists); a mismatch stops with the file, what is
wrong and the fix. ``python -m twoclocks.verify STUDY_DIR [--configfile CONFIG]`` checks a whole
study against its config (every planned cell has a store, no other store lies under ``runs/``:
`twoclocks.cells_on_disk`) and every store against its manifest, and exits 1 on any problem,
naming each with its fix.

Snakemake by itself does not notice a deleted or damaged chunk (it tracks the store's directory,
not its files) and would rerun nothing, so the workflow's head process runs :func:`quick_check`
(file lists and sizes, no hashing) on every invocation and stops with the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import xarray as xr

from twoclocks.train.manifest import CHECKSUM_ALGORITHM, store_checksums
from twoclocks.train.store import open_trajectory

__all__ = [
    "IntegrityError",
    "check_store",
    "load_store",
    "quick_check",
    "read_json",
    "read_manifest",
    "read_table",
    "verify_published",
    "verify_store",
    "verify_study",
]

log = logging.getLogger("twoclocks.verify")
MANIFEST = "manifest.json"


class IntegrityError(ValueError):
    """A store or manifest that is missing, unreadable or not what was written; names the file
    and the fix."""


def fix_for(run_dir: str | Path) -> str:
    return (
        f"Fix: delete {run_dir} and rerun snakemake (the cell is published again from its train "
        "output, or retrained)."
    )


def read_manifest(path: str | Path) -> dict:
    """The manifest at `path`; an unreadable or truncated one raises IntegrityError naming it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError(f"{path}: manifest missing. {fix_for(path.parent)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(
            f"{path}: manifest unreadable or truncated ({type(err).__name__}: {err}). "
            f"{fix_for(path.parent)}"
        ) from None
    if not isinstance(record, dict):
        raise IntegrityError(f"{path}: not a manifest (a JSON object). {fix_for(path.parent)}")
    return record


def compare_checksums(store: Path, recorded: dict, actual: dict) -> list[str]:
    """Every difference between two `store_checksums` records, one line per file."""
    problems = []
    for array in sorted(set(recorded) | set(actual)):
        want, have = recorded.get(array, {}), actual.get(array, {})
        base = store if array == "." else store / array
        if array not in actual:
            problems.append(f"{base}: array {array!r} missing ({len(want)} files)")
            continue
        for rel in sorted(set(want) | set(have)):
            f = base / rel
            w, h = want.get(rel), have.get(rel)
            if h is None:
                problems.append(f"{f}: missing (deleted chunk or metadata of {array!r})")
            elif w is None:
                problems.append(f"{f}: not in the manifest (a file added after validation)")
            elif w["bytes"] != h["bytes"]:
                problems.append(
                    f"{f}: {h['bytes']} bytes, the manifest says {w['bytes']} (truncated or "
                    "overwritten)"
                )
            elif CHECKSUM_ALGORITHM in h and w[CHECKSUM_ALGORITHM] != h[CHECKSUM_ALGORITHM]:
                problems.append(f"{f}: content differs from the manifest ({CHECKSUM_ALGORITHM})")
    return problems


def check_store(
    store: str | Path, manifest: str | Path | None = None, *, strict: bool = True
) -> list[str]:
    """Problems of `store` against `manifest` (default: ``manifest.json`` beside the store),
    each naming its file; empty when the store is exactly what was validated.

    A manifest without checksums (written before they were recorded) cannot be checked: a
    problem with ``strict``, else a logged warning. An unreadable manifest raises
    IntegrityError (`read_manifest`).
    """
    store = Path(store)
    manifest = Path(manifest) if manifest is not None else store.parent / MANIFEST
    record = read_manifest(manifest)
    if "checksums" not in record:
        note = f"{manifest}: no checksums (written by an older twoclocks); {store} not verified"
        if strict:
            return [note]
        log.warning("%s", note)
        return []
    if record.get("checksum_algorithm", CHECKSUM_ALGORITHM) != CHECKSUM_ALGORITHM:
        return [f"{manifest}: unknown checksum algorithm {record['checksum_algorithm']!r}"]
    if not store.is_dir():
        return [f"{store}: trajectory store missing (its manifest {manifest} exists)"]
    return compare_checksums(store, record["checksums"], store_checksums(store))


def verify_store(
    store: str | Path, manifest: str | Path | None = None, *, strict: bool = False
) -> None:
    """Raise IntegrityError (every problem, with its file, and the fix) unless `store` matches
    the checksums its manifest recorded; a manifest without checksums only warns unless
    `strict` (see `check_store`)."""
    store = Path(store)
    manifest = Path(manifest) if manifest is not None else store.parent / MANIFEST
    problems = check_store(store, manifest, strict=strict)
    if problems:
        raise IntegrityError(
            f"{store} does not match its manifest {manifest}:\n  "
            + "\n  ".join(problems)
            + f"\n{fix_for(manifest.parent)}"
        )


def verify_published(source: Path, trained: dict | None, published: dict, group_dir: Path):
    """Raise IntegrityError if the checksums of a store published from `source` (hard links,
    so damage done in place to the train output is shared) differ from what training recorded
    (`trained`, from group.json; None for an older train output: not compared)."""
    if trained is None:
        log.warning("%s records no checksums (older train output); not compared", group_dir)
        return
    if problems := compare_checksums(Path(source), trained, published):
        raise IntegrityError(
            f"{source} no longer matches what training wrote ({Path(group_dir) / 'group.json'}):"
            "\n  " + "\n  ".join(problems) + f"\nFix: delete {group_dir} and rerun snakemake "
            "(the group is retrained)."
        )


def load_store(store: str | Path) -> xr.Dataset:
    """Open `store` and read every variable into memory; a read error (a truncated chunk, bad
    metadata) raises IntegrityError naming the store and the variable."""
    store = Path(store)
    try:
        ds = open_trajectory(store)
    except Exception as err:  # zarr/xarray raise many types; all mean "cannot open this store"
        raise IntegrityError(
            f"{store}: cannot open the store ({type(err).__name__}: {err})"
        ) from err
    for name, var in ds.variables.items():
        try:
            var.load()  # in place: the Dataset holds this Variable
        except Exception as err:
            raise IntegrityError(
                f"{store / str(name)}: cannot read array {name!r} of {store} "
                f"({type(err).__name__}: {err}); a chunk is damaged"
            ) from err
    return ds


def read_table(path: str | Path) -> pd.DataFrame:
    """A parquet table written by an earlier stage; a damaged one raises IntegrityError naming
    the file and the fix (pyarrow's own errors name none)."""
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise IntegrityError(
            f"{path}: unreadable ({type(err).__name__}: {err}). Fix: delete it and rerun snakemake."
        ) from err


def read_json(path: str | Path) -> dict:
    """A JSON file written by an earlier stage; errors name the file and the fix."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(
            f"{path}: unreadable ({type(err).__name__}: {err}). Fix: delete it and rerun snakemake."
        ) from err


def _store_problems(run_dir: Path) -> list[str]:
    """Problems of one run directory's store against its manifest (each naming a file)."""
    store, manifest = run_dir / "trajectory.zarr", run_dir / MANIFEST
    if not manifest.exists():
        return [f"{manifest}: missing, so {store} was never validated (an interrupted job?)"]
    try:
        return check_store(store, manifest)
    except IntegrityError as err:  # unreadable manifest; its message has the fix
        return [str(err).split(" Fix: ")[0]]


def _cell_problems(study_dir: Path, config) -> tuple[dict[Path, list[str]], list[Path]]:
    """The study against its config (`twoclocks.cells_on_disk`): problems of missing, stray,
    unplanned and stale cells, each with its fix, and the run directories to check."""
    from twoclocks.cells_on_disk import planned_cells, recorded_cell, sort_cells

    runs = study_dir / "runs"
    study, source = planned_cells(study_dir, config)
    planned = None if study is None else {c.id: c.hash for c in study.cells}
    cells = sort_cells(study_dir, None if planned is None else list(planned), study and study.name)
    problems: dict[Path, list[str]] = {}
    for cid, why in cells.stray.items():  # at a planned cell's path: delete and rebuild
        fix = fix_for(runs / cid) if cid in (planned or {}) else _fix_extra(runs / cid)
        problems[runs / cid] = [f"{runs / cid}: stray store, {why}", fix]
    for cid in cells.other:
        problems[runs / cid] = [f"{runs / cid}: not a cell of {source}", _fix_extra(runs / cid)]
    for cid in cells.missing:
        if not (runs / cid / MANIFEST).exists() and cid not in cells.stray:
            problems[runs / cid] = [
                f"{runs / cid}: planned by {source}, no store",
                "Fix: rerun snakemake with this config (every planned cell is one of its targets).",
            ]
    for cid, path in cells.stores.items():
        recorded = recorded_cell(path).get("cell_hash")
        if planned is not None and recorded not in (None, planned[cid]):
            problems[runs / cid] = [
                f"{path}: trained with other settings (cell hash {recorded}) than {source} "
                f"({planned[cid]})",
                fix_for(runs / cid),
            ]
    todo = [runs / c for c in cells.stores] + [runs / c for c in cells.missing]
    return problems, [d for d in todo if d not in problems]


def _fix_extra(run_dir: Path) -> str:
    return f"Fix: delete {run_dir} (or move it out of runs/): no reader uses it."


def verify_study(study_dir: str | Path, config=None) -> tuple[int, dict[Path, list[str]]]:
    """Check a study against its config and hash every store against its manifest.

    `config`: a config file, dict or `Study`; default: the one the report stage recorded in
    ``claims.json`` (`twoclocks.cells_on_disk.planned_cells`); without either only stray stores
    (a copy under another cell's path, another study's store) are found. Returns the number of
    intact stores and, per problem run directory, its problems (each naming a file) ending with
    the fix: a planned cell without a store, a store the config does not plan or a stray one, a
    store without a manifest, a manifest without a store or without checksums, an unreadable
    manifest, a store that differs from its manifest.
    """
    study_dir = Path(study_dir)
    if not (study_dir / "runs").is_dir():
        raise IntegrityError(f"{study_dir}: no runs/ directory (is this a study directory?)")
    damaged, todo = _cell_problems(study_dir, config)
    manifests = {p.parent for p in (study_dir / "runs").glob(f"**/{MANIFEST}")}
    ok = 0
    for run_dir in sorted(set(todo) | (manifests - set(damaged))):
        found = _store_problems(run_dir)
        if found:
            damaged[run_dir] = [*found, fix_for(run_dir)]
        else:
            ok += 1
    return ok, dict(sorted(damaged.items()))


def quick_check(study_dir: str | Path) -> list[str]:
    """File lists and sizes of every store that has a manifest under ``study_dir/runs``, against
    the manifest (a stat per file, no hashing: milliseconds per store), with the fix.

    For the Snakemake head process, which would otherwise see nothing: it tracks a store's
    directory, not the files in it. Stores without a manifest (being written) are skipped.
    """
    problems = []
    for manifest in sorted(Path(study_dir).glob(f"runs/**/{MANIFEST}")):
        store = manifest.parent / "trajectory.zarr"
        try:
            record = read_manifest(manifest)
        except IntegrityError as err:
            problems.append(str(err))
            continue
        if "checksums" not in record:
            continue
        if not store.is_dir():
            found = [f"{store}: trajectory store missing (its manifest {manifest} exists)"]
        else:
            found = compare_checksums(
                store, record["checksums"], store_checksums(store, digest=False)
            )
        problems += [*found, fix_for(manifest.parent)] if found else []
    return problems


def main(argv: list[str] | None = None) -> int:
    from twoclocks.cells_on_disk import planned_cells

    parser = argparse.ArgumentParser(
        prog="python -m twoclocks.verify",
        description="Check STUDY_DIR against its config (every planned cell has a store, no "
        "other store is under runs/) and every STUDY_DIR/runs/<cell>/trajectory.zarr against the "
        "checksums of its manifest.json; exit 1 on any problem, 2 when STUDY_DIR is not a study.",
    )
    parser.add_argument("study_dir", type=Path, nargs="+")
    parser.add_argument(
        "--configfile",
        type=Path,
        default=None,
        help="the study's config (default: the one the report recorded in STUDY_DIR/claims.json)",
    )
    args = parser.parse_args(argv)
    rc = 0
    for study_dir in args.study_dir:
        start = time.perf_counter()
        try:
            study, source = planned_cells(study_dir, args.configfile)
            ok, problems = verify_study(study_dir, args.configfile)
        except ValueError as err:  # IntegrityError, ConfigError
            print(f"error: {err}", file=sys.stderr)
            rc = 2
            continue
        if study is None:
            print(f"{study_dir}: planned cells not checked ({source}); pass --configfile")
        for run_dir, found in problems.items():
            print(f"PROBLEM {run_dir}:\n  " + "\n  ".join(found), file=sys.stderr)
        seconds = time.perf_counter() - start
        print(
            f"{study_dir}: {ok} of {ok + len(problems)} stores intact ({len(problems)} damaged, "
            f"missing or extra; cells of {source}), checked in {seconds:.1f} s"
        )
        rc = max(rc, 1 if problems else 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
