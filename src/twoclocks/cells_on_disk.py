"""Which trajectory stores under a study's ``runs/`` belong to it.

A store is read only under the cell it records: a copied or moved store (the ``cell_id`` in its
``cell`` attribute is not its path under ``runs/``) and a store of another study (its ``study``
differs) are *stray*: named, never analysed. With the study's config, stores of cells the config
does not plan are *other* (an earlier config of the same study), and planned cells without a
store are *missing*. Used by `twoclocks.study.load_study`, ``python -m twoclocks.analyze`` and
``python -m twoclocks.verify``, so that all three name the same cells.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import zarr

__all__ = ["CellsOnDisk", "planned_cells", "recorded_cell", "sort_cells"]

STORE = "trajectory.zarr"


def recorded_cell(store: Path) -> dict:
    """The store's ``cell`` attribute (JSON), read from its metadata alone; {} when it has none
    or it cannot be read (the reader that loads the store then names the problem)."""
    try:
        cell = zarr.open_group(str(store), mode="r").attrs.get("cell")
        cell = json.loads(cell) if isinstance(cell, str) else cell
    except Exception:  # noqa: BLE001 - any unreadable metadata: no identity, the loader says why
        return {}
    return dict(cell) if isinstance(cell, dict) else {}


@dataclass
class CellsOnDisk:
    """The stores of a study, sorted (`sort_cells`).

    `stores`: cell id -> store to read; `stray`: path under runs/ -> why it is left out;
    `other`: stores of cells the config does not plan; `missing`: planned cells without a store;
    `study`: the study the stores belong to.
    """

    stores: dict[str, Path]
    stray: dict[str, str] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    study: str | None = None

    def notes(self) -> list[str]:
        """One line per store left out or cell missing, for logs and reports."""
        return (
            [f"{cid}: left out, {why}" for cid, why in self.stray.items()]
            + [f"{cid}: left out, not a cell of the config" for cid in self.other]
            + [f"{cid}: planned, no store" for cid in self.missing]
        )


def planned_cells(study_dir: Path, config=None):
    """The study's current config as a `twoclocks.config.Study` (None when there is none) and
    where it came from.

    `config`: a config file, a config dict or a `Study`; by default the config the report stage
    last wrote into ``claims.json`` (it reruns whenever the config changes). A config from an
    old ``claims.json`` that no longer validates counts as none (said in the source).
    """
    from twoclocks.config import ConfigError, Study, load_config

    if config is None:
        claims = Path(study_dir) / "claims.json"
        if not claims.exists():
            return None, f"no config given and no {claims}"
        from twoclocks.verify import read_json

        config, where = read_json(claims).get("config"), str(claims)
        if not isinstance(config, dict):
            return None, f"{claims} records no config"
    else:
        where = str(config) if isinstance(config, (str, os.PathLike)) else "the given config"
    if isinstance(config, Study):
        return config, where
    try:
        return load_config(config, where=where), where
    except ConfigError as err:
        if where.endswith("claims.json"):  # an old report: say so, keep every store
            return None, f"the config in {where} no longer validates ({err})"
        raise


def _expected_study(study_dir: Path, recorded: dict[str, dict], planned_study: str | None):
    if planned_study is not None:
        return planned_study
    counts = Counter(c["study"] for c in recorded.values() if c.get("study"))
    if study_dir.name in counts or not counts:
        return study_dir.name if counts else None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def sort_cells(
    study_dir: str | Path, planned: list[str] | None = None, planned_study: str | None = None
) -> CellsOnDisk:
    """Sort every ``runs/**/trajectory.zarr`` of `study_dir` into read, stray and other.

    `planned`: the cell ids of the study's config (None: every store that is not stray counts);
    `planned_study`: its study name (None: the study most stores record, the study directory's
    name on a tie with it).
    """
    runs = Path(study_dir) / "runs"
    found = {str(p.parent.relative_to(runs)): p for p in sorted(runs.glob(f"**/{STORE}"))}
    recorded = {cid: recorded_cell(p) for cid, p in found.items()}
    study = _expected_study(Path(study_dir), recorded, planned_study)
    out = CellsOnDisk(stores={}, study=study)
    for cid, path in found.items():
        rec = recorded[cid]
        if rec.get("cell_id") not in (None, cid):
            out.stray[cid] = (
                f"the store records cell {rec['cell_id']!r} (a copied or moved store); "
                f"its cell's store belongs at runs/{rec['cell_id']}"
            )
        elif rec.get("study") not in (None, study):
            out.stray[cid] = f"the store records study {rec['study']!r}, not {study!r}"
        elif planned is not None and cid not in planned:
            out.other.append(cid)
        else:
            out.stores[cid] = path
    out.missing = [c for c in planned or [] if c not in out.stores]
    return out
