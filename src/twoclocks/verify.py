"""Integrity of a study's trajectory stores: each store against the checksums in its manifest.

zarr reads a missing chunk back as the fill value (NaN) without complaint, and a truncated one
fails deep inside a codec (``Zstd decompression error``) without naming a file. Every stage that
reads a store therefore calls :func:`verify_store` first (clocks, report, ``load_study``,
``python -m twoclocks.analyze`` where a manifest exists); a mismatch stops with the file, what is
wrong and the fix. ``python -m twoclocks.verify STUDY_DIR`` checks a whole study and exits
non-zero on any problem.

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


def verify_study(study_dir: str | Path) -> tuple[int, dict[Path, list[str]]]:
    """Hash every store under ``study_dir/runs`` against its manifest.

    Returns the number of intact stores and, per damaged run directory, its problems (each
    naming a file) ending with the fix. A store without a manifest, a manifest without a store
    or without checksums, and an unreadable manifest are problems too.
    """
    runs = Path(study_dir) / "runs"
    if not runs.is_dir():
        raise IntegrityError(f"{study_dir}: no runs/ directory (is this a study directory?)")
    stores = {p.parent for p in runs.glob("**/trajectory.zarr")}
    manifests = {p.parent for p in runs.glob(f"**/{MANIFEST}")}
    damaged, ok = {}, 0
    for run_dir in sorted(stores | manifests):
        store, manifest = run_dir / "trajectory.zarr", run_dir / MANIFEST
        if not manifest.exists():
            found = [f"{manifest}: missing, so {store} was never validated (an interrupted job?)"]
        else:
            try:
                found = check_store(store, manifest)
            except IntegrityError as err:  # unreadable manifest; its message has the fix
                found = [str(err).split(" Fix: ")[0]]
        if found:
            damaged[run_dir] = [*found, fix_for(run_dir)]
        else:
            ok += 1
    return ok, damaged


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
    parser = argparse.ArgumentParser(
        prog="python -m twoclocks.verify",
        description="Check every STUDY_DIR/runs/<cell>/trajectory.zarr against the checksums of "
        "its manifest.json; exit 1 on any problem, 2 when STUDY_DIR is not a study.",
    )
    parser.add_argument("study_dir", type=Path, nargs="+")
    args = parser.parse_args(argv)
    rc = 0
    for study_dir in args.study_dir:
        start = time.perf_counter()
        try:
            ok, damaged = verify_study(study_dir)
        except IntegrityError as err:
            print(f"error: {err}", file=sys.stderr)
            rc = 2
            continue
        for run_dir, problems in damaged.items():
            print(f"DAMAGED {run_dir}:\n  " + "\n  ".join(problems), file=sys.stderr)
        seconds = time.perf_counter() - start
        print(
            f"{study_dir}: {ok} of {ok + len(damaged)} stores intact "
            f"({len(damaged)} damaged), checked in {seconds:.1f} s"
        )
        rc = max(rc, 1 if damaged else 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
