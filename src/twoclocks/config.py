"""Study configuration: load, validate (JSON schema + semantic checks), expand the grid into cells.

A study is a set of named grids; each grid is `base` <- grid `set` <- one point of the cartesian
product of its `axes`; `extra_cells` add single cells. Every cell is one training job that stacks
all `seeds`. Validation collects every problem and raises one `ConfigError` naming the key, the bad
value, what is allowed and how to fix it, before anything is computed or written.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from twoclocks.data.tasks import TASKS
from twoclocks.provenance import digest
from twoclocks.schema import (  # noqa: F401 (re-exported: the schema readers)
    SCHEMA_PATH,
    cell_default,
    cell_defaults,
    load_schema,
    schema_and_finite_errors,
    schema_errors,
    section_default,
    yaml_number_hint,
)

# Which cell keys apply to which task / model / optimizer; everything else is common. The tasks
# own theirs (`data.tasks.TASKS`: the keys that make the dataset, then task-only keys such as
# fourier_keep), the models theirs (`train.models` registry: `config_keys`, `check_params`,
# `omitted_at_default`, `token_inputs_only`, `block_names`), asked through `model_class`.
# Keys added after studies were run, left out of the resolved cell at their schema default so an
# existing cell keeps its params, hash, cache entry and trajectory: these, plus each model's.
OMITTED_AT_DEFAULT = ("frozen_blocks", "observed_features")
OPTIMIZER_KEYS = {
    "adamw": ("betas", "adam_eps"),
    "sgd": ("momentum",),
    "muon": (
        "muon_momentum",
        "muon_nesterov",
        "muon_ns_steps",
        "muon_adjust_lr",
        "betas",
        "adam_eps",
    ),
}
COMMON_KEYS = (
    "task",
    "model",
    "optimizer",
    "lr",
    "weight_decay",
    "steps",
    "init_scale",
    "dtype",
    "frozen_blocks",
)

# Short names used in readable cell ids.
ABBREVIATIONS = {
    "weight_decay": "wd",
    "train_fraction": "frac",
    "modulus": "p",
    "hidden_width": "width",
    "embed_dim": "d",
    "init_scale": "init",
    "split_seed": "split_seed",
    "teacher_rank": "rank",
    "hidden_layers": "layers",
}
# Axes that may be folded into one stacked job (per-member hyperparameters).
STACKABLE = ("lr", "weight_decay", "init_scale")
ID_PATTERN = re.compile(r"^[A-Za-z0-9._=/+-]+$")


class ConfigError(ValueError):
    """A study configuration that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Cell:
    """One grid cell: resolved params (design.md) plus the grid-axis values that label it."""

    params: dict[str, Any]
    axes: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.params["cell_id"]

    @property
    def hash(self) -> str:
        return self.params["cell_hash"]

    @property
    def dataset_id(self) -> str:
        return self.params["dataset_id"]


@dataclass
class Study:
    """A validated study: its cells, datasets and analysis settings."""

    name: str
    config: dict[str, Any]
    cells: list[Cell]

    @property
    def datasets(self) -> dict[str, dict[str, Any]]:
        """dataset_id -> the params that generate it."""
        from twoclocks.data.io import data_params

        return {c.dataset_id: data_params(c.params) for c in self.cells}

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(f"no cell {cell_id!r} in study {self.name!r}")

    @property
    def groups(self) -> dict[str, list[Cell]]:
        """Train groups: group id -> cells trained as one stacked job (see `stack_axes`)."""
        out: dict[str, list[Cell]] = {}
        for c in self.cells:
            out.setdefault(c.params["group_id"], []).append(c)
        return out

    def group_of(self, cell_id: str) -> str:
        return self.cell(cell_id).params["group_id"]

    @property
    def axis_names(self) -> list[str]:
        """Every grid axis used by some cell, in first-seen order."""
        names: dict[str, None] = {}
        for c in self.cells:
            names.update(dict.fromkeys(c.axes))
        return list(names)


def load_config(
    source: str | Path | dict, schema_path: Path | None = None, where: str | None = None
) -> Study:
    """Read a YAML file (or take a dict), validate it and expand its grid.

    `where` names the source in error messages (e.g. the --configfile path of a dict).
    """
    if isinstance(source, dict):
        raw, where = source, where or "config"
    else:
        where = str(source)
        raw = read_yaml(source)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the config must be a mapping with keys study, seeds, grids")
    schema = load_schema(schema_path)
    _raise_if(where, schema_and_finite_errors(raw, schema))
    config = _normalise_numbers(_with_defaults(raw, schema), schema)
    _raise_if(where, _value_errors(config, schema))
    cells = expand(config, schema)
    _raise_if(where, _semantic_errors(config, cells))
    return Study(name=config["study"], config=config, cells=cells)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error is a ConfigError naming the file,
    the line and column (1-based, as editors count) and the problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        start = getattr(err, "context_mark", None)
        if context and start is not None and mark is not None and start.line != mark.line:
            context += f" that starts at line {start.line + 1}, column {start.column + 1}"
        what = f"{context}, {problem}" if context else problem
        raise ConfigError(
            f"{where}: not valid YAML ({what}); fix the syntax there (indent with spaces, "
            "not tabs; quote values that contain ': ' or start with special characters)"
        ) from None


def merge_overrides(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` merged in: nested mappings key by key, anything else replaced
    (what Snakemake does with --config on top of a --configfile)."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def config_for_snakemake(config: dict, configfiles, default_path: Path) -> tuple[dict, str]:
    """The study config Snakemake should run, and how to name it in messages.

    With --configfile, Snakemake already merged the file(s) and any --config overrides. Without
    one, `config` holds only the --config overrides (or nothing): they are merged over the
    default config (`default_path`) instead of replacing it.
    """
    if configfiles:
        return dict(config), ", ".join(map(str, configfiles))
    default = read_yaml(default_path)
    if not isinstance(default, dict):
        raise ConfigError(f"{default_path}: the config must be a mapping")
    if not config:
        return default, str(default_path)
    keys = ", ".join(sorted(config))
    return merge_overrides(default, dict(config)), f"{default_path} with --config {keys}"


def device_errors(config: dict) -> list[str]:
    """`device: cuda` needs a torch build with CUDA and a visible GPU on the machine that runs
    the train jobs; checked before any job where those jobs run locally (imports torch)."""
    if config.get("device") != "cuda":
        return []
    import torch

    if torch.cuda.is_available():
        return []
    build = torch.version.cuda
    why = (
        f"torch {torch.__version__} is a CPU-only build"
        if not build
        else f"torch {torch.__version__} (CUDA {build}) sees no GPU"
    )
    return [
        f"device = 'cuda' but {why} on this machine; use device: auto (falls back to the CPU) "
        "or cpu, or on a GPU machine install the CUDA build: "
        "pip install -c requirements-cuda.lock -e ."
    ]


def check_device(config: dict, where: str) -> None:
    """Raise the one-message ConfigError when the config's device is not usable here."""
    _raise_if(where, device_errors(config))


def _raise_if(where: str, errors: list[str]) -> None:
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{where}: {len(errors)} problem(s); nothing was run:\n{lines}")


def _with_defaults(raw: dict, schema: dict) -> dict:
    """Fill top-level and section defaults from the schema (the schema is the single source)."""
    config = json.loads(json.dumps(raw))
    for key, sub in schema["properties"].items():
        if "default" in sub and key not in config:
            config[key] = json.loads(json.dumps(sub["default"]))
        if isinstance(config.get(key), dict) and "properties" in sub:
            for k, s in sub["properties"].items():
                if "default" in s:
                    config[key].setdefault(k, copy.deepcopy(s["default"]))
    config["base"] = {**cell_defaults(schema), **config.get("base", {})}
    config.setdefault("extra_cells", [])
    return config


def _normalise_numbers(config: dict, schema: dict) -> dict:
    """Float-typed cell keys become floats and seeds ints, so `1` and `1.0` are one value
    (one cell id, one hash, one cache entry)."""
    props = schema["$defs"]["cell"]["properties"]
    floats = {k for k, sub in props.items() if sub.get("type") == "number"}

    def fix(cell: dict) -> None:
        for k in floats & set(cell):
            if isinstance(cell[k], int) and not isinstance(cell[k], bool):
                cell[k] = float(cell[k])

    fix(config["base"])
    for grid in config["grids"].values():
        fix(grid.get("set", {}))
        for k in floats & set(grid.get("axes", {})):
            grid["axes"][k] = [
                float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                for v in grid["axes"][k]
            ]
    for extra in config["extra_cells"]:
        fix(extra["set"])
    config["seeds"] = [int(s) if isinstance(s, float) else s for s in config["seeds"]]
    return config


def _value_errors(config: dict, schema: dict) -> list[str]:
    """Type/range-check every axis value against the cell schema; check level grids."""
    cell_props = schema["$defs"]["cell"]["properties"]
    errors = []
    for gname, grid in config["grids"].items():
        for key, values in grid.get("axes", {}).items():
            sub = {**cell_props[key], "$defs": schema["$defs"]}
            for i, value in enumerate(values):
                errors += schema_errors(value, sub, ("grids", gname, "axes", key, i))
            if len({json.dumps(v) for v in values}) != len(values):
                errors.append(
                    f"grids.{gname}.axes.{key} = {values!r} repeats a value; list each once"
                )
    seeds = config["seeds"]
    if len(set(seeds)) != len(seeds):
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        errors.append(f"seeds = {seeds!r} has duplicate seed(s) {dup}; list each seed once")
    for key in ("eps", "eta"):
        levels = config["analysis"].get(key)
        if levels is None:
            continue
        if any(v <= 0 for v in levels):
            errors.append(f"analysis.{key} = {levels!r} has non-positive levels; all must be > 0")
        elif any(a <= b for a, b in itertools.pairwise(levels)):
            errors.append(
                f"analysis.{key} = {levels!r} is not strictly decreasing; "
                "sort it from the loosest to the tightest level, e.g. "
                f"{sorted(set(levels), reverse=True)}"
            )
    for i, extra in enumerate(config["extra_cells"]):
        if extra["grid"] not in config["grids"]:
            errors.append(
                f"extra_cells[{i}].grid = {extra['grid']!r} is not a grid; "
                f"allowed: {', '.join(config['grids'])}"
            )
        if "frozen_blocks" in extra["set"]:  # an extra cell's set values label it, like axes
            errors.append(
                f"extra_cells[{i}].set.frozen_blocks: a list cannot label a cell (the clock "
                "tables hold one scalar per label); give it its own grid with "
                "`set: {frozen_blocks: [...]}`"
            )
    return errors


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return "-".join(_format_value(x) for x in v)
    return str(v)


def model_class(name: str):
    """The registered model class called `name` (`train.models.model_class`; imported here, not
    at the top, so that reading the config module stays torch-free)."""
    from twoclocks.train.models import model_class as registered

    return registered(name)


def _relevant_keys(p: dict) -> tuple[str, ...]:
    t = TASKS[p["task"]]
    keys = COMMON_KEYS + t.config_keys + tuple(model_class(p["model"]).config_keys)
    return keys + OPTIMIZER_KEYS[p["optimizer"]] + t.extra_keys


def dataset_id(p: dict) -> str:
    """A readable, unique name for the dataset a cell trains on (its task's ``dataset_id``)."""
    return TASKS[p["task"]].dataset_id(p)


# names, not settings: left out of a cell's hash and of what decides whether cells can stack
IDENTITY_KEYS = ("study", "grid", "cell_id", "cell_hash", "group_id")


def cell_hash(params: dict) -> str:
    """12 hex chars of sha256 over the canonical JSON of the params that define the run.

    Study, grid and cell names are left out: identical runs share a hash across studies.
    """
    return digest({k: v for k, v in params.items() if k not in IDENTITY_KEYS})


def _resolve(
    config: dict, grid: str, overrides: dict, label: dict, stack: bool, defaults: dict
) -> Cell:
    merged = {**config["base"], **config["grids"][grid].get("set", {}), **overrides}
    merged.setdefault("dtype", config["dtype"])
    params = {k: merged[k] for k in _relevant_keys(merged) if k in merged}
    for k in OMITTED_AT_DEFAULT + tuple(model_class(params["model"]).omitted_at_default):
        if k in params and k in defaults and params[k] == defaults[k]:
            del params[k]
    params["seeds"] = list(config["seeds"])
    params["device"] = config["device"]
    params.update(config["logging"])
    if params.get("log_rows_per_decade") == 0:  # linear cadence: params and hashes as before
        del params["log_rows_per_decade"]
    params["grid"] = grid
    params["dataset_id"] = dataset_id(params)
    params["study"] = config["study"]
    parts = [grid] + [f"{ABBREVIATIONS.get(k, k)}={_format_value(v)}" for k, v in label.items()]
    params["cell_id"] = "/".join(parts)
    folded = set(config["stack_axes"]) if stack else set()
    group = [grid] + [
        f"{ABBREVIATIONS.get(k, k)}={_format_value(v)}" for k, v in label.items() if k not in folded
    ]
    params["group_id"] = "/".join(group) if folded & set(label) else params["cell_id"]
    params["cell_hash"] = cell_hash(params)
    return Cell(params=params, axes=dict(label))


def expand(config: dict, schema: dict | None = None) -> list[Cell]:
    """Every cell of every grid, then the extra cells, in config order."""
    defaults = cell_defaults(schema)
    cells = []
    for gname, grid in config["grids"].items():
        axes = grid.get("axes", {})
        for point in itertools.product(*axes.values()):
            label = dict(zip(axes, point, strict=True))
            cells.append(_resolve(config, gname, label, label, True, defaults))
    grid_cells = len(cells)
    for extra in config["extra_cells"]:
        cells.append(_resolve(config, extra["grid"], extra["set"], extra["set"], False, defaults))
    if config.get("stack_grids"):
        _stack_across_grids(cells[:grid_cells], config["stack_axes"])
    return cells


def _stack_across_grids(cells: list[Cell], stack_axes) -> None:
    """`stack_grids`: train groups of different grids whose cells differ only in the grid and
    the `stack_axes` values merge into one group (in place), so cells of the same shapes train
    as one job wherever they are declared. The merged id is the first group's id plus the other
    grids' names (``dln_lazy_gd/.../depth=3+dln_wd0_gd``); extra cells keep their own jobs."""
    skip = {*IDENTITY_KEYS, *stack_axes}
    by_key: dict[str, list[Cell]] = {}
    for c in cells:
        key = digest({k: v for k, v in c.params.items() if k not in skip})
        by_key.setdefault(key, []).append(c)
    for members in by_key.values():
        gids = list(dict.fromkeys(c.params["group_id"] for c in members))
        if len(gids) < 2:
            continue
        others = dict.fromkeys(c.params["grid"] for c in members if c.params["group_id"] != gids[0])
        merged = "+".join([gids[0], *others])
        for c in members:
            c.params["group_id"] = merged


def model_blocks(p: dict) -> list[str]:
    """The parameter block names of a resolved cell's model, in the order the model builds them,
    without initialising it (the model's ``block_names``)."""
    return model_class(p["model"]).block_names(p, TASKS[p["task"]].input_kind)


def _model_errors(p: dict) -> list[str]:
    """What the cell's model says about its keys, its input kind, then its frozen blocks."""
    cls = model_class(p["model"])
    errors = list(cls.check_params(p))
    if TASKS[p["task"]].input_kind != "tokens" and cls.token_inputs_only:
        from twoclocks.train.models import MODELS

        dense = sorted(k for k, c in MODELS.items() if not c.token_inputs_only)
        errors.append(
            f"model {p['model']!r} needs token inputs (task: modular); for task "
            f"{p['task']!r} use model: {' or '.join(dense)}"
        )
    return errors or _frozen_errors(p)


def _frozen_errors(p: dict) -> list[str]:
    """`frozen_blocks` must name blocks of the cell's model and leave at least one trainable."""
    frozen = p.get("frozen_blocks") or []
    if not frozen:
        return []
    blocks = model_blocks(p)
    unknown = [b for b in frozen if b not in blocks]
    if unknown:
        return [
            f"frozen_blocks names {unknown}, not a block of model "
            f"{p['model']!r}; its blocks are {blocks}: use names from that list"
        ]
    if set(frozen) >= set(blocks):
        return [
            f"frozen_blocks = {frozen} freezes every block of model "
            f"{p['model']!r} ({blocks}): nothing would train; leave at least one block out"
        ]
    return []


def _group_errors(cells: list[Cell]) -> list[str]:
    """Cells that share a train group may differ only in the stacked axes."""
    identity = {"grid", "cell_id", "cell_hash", "group_id", *STACKABLE}
    first: dict[str, Cell] = {}
    errors = []
    for c in cells:
        ref = first.setdefault(c.params["group_id"], c)
        if ref is c:
            continue
        diff = sorted(
            k
            for k in set(c.params) | set(ref.params)
            if k not in identity and c.params.get(k) != ref.params.get(k)
        )
        if diff:
            errors.append(
                f"cells {ref.id!r} and {c.id!r} fall in the same train group "
                f"{c.params['group_id']!r} but differ in {diff}; only {list(STACKABLE)} can be "
                f"stacked: give the extra cell its own grid"
            )
    return errors


def _semantic_errors(config: dict, cells: list[Cell]) -> list[str]:
    """What the schema cannot express: cross-key constraints and id collisions."""
    errors: list[str] = []
    if not cells:
        return ["the grid is empty: every grid needs axes with at least one value each"]
    for gname, grid in config["grids"].items():
        probe = {**config["base"], **grid.get("set", {})}
        keys = set(_relevant_keys(probe)) | {"dtype"}
        for key in grid.get("axes", {}):
            if key not in keys:
                errors.append(
                    f"grids.{gname}.axes.{key}: does not apply to task {probe['task']!r} with "
                    f"model {probe['model']!r} and optimizer {probe['optimizer']!r}; remove it or "
                    f"set the matching task/model in grids.{gname}.set"
                )
    errors += _group_errors(cells)
    seen: dict[str, Cell] = {}
    seen_hash: dict[str, Cell] = {}
    log = config["logging"]
    for c in cells:
        p, cid = c.params, c.id
        if not ID_PATTERN.match(cid):
            errors.append(
                f"cell id {cid!r} has characters unsafe in file names; "
                "use letters, digits, '.', '-'"
            )
        if cid in seen:
            errors.append(
                f"cell id {cid!r} collides with another cell; give the extra cell a distinct "
                f"value or put it in its own grid"
            )
        seen[cid] = c
        if p["cell_hash"] in seen_hash and seen_hash[p["cell_hash"]].id != cid:
            errors.append(
                f"cells {seen_hash[p['cell_hash']].id!r} and {cid!r} resolve to the same run; "
                f"remove one"
            )
        seen_hash[p["cell_hash"]] = c
        errors += [f"cell {cid}: {msg}" for msg in TASKS[p["task"]].check(p)]
        errors += [f"cell {cid}: {msg}" for msg in _model_errors(p)]
        if log["snapshot_count"] > p["steps"] + 1:
            errors.append(
                f"cell {cid}: logging.snapshot_count = {log['snapshot_count']} exceeds the "
                f"{p['steps'] + 1} available steps; lower it"
            )
    return errors


def main(argv: list[str] | None = None) -> int:
    """``python -m twoclocks.config FILE...``: validate study configs without Snakemake.

    Prints each file's cells, or its problems (YAML syntax errors with file, line and column,
    which Snakemake's own --configfile loader does not name); exits 1 on any problem.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m twoclocks.config", description=main.__doc__.splitlines()[0]
    )
    ap.add_argument("files", nargs="+", type=Path, help="study config YAML files")
    ap.add_argument("--device", action="store_true", help="also check that `device` is usable")
    args = ap.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            study = load_config(path)
            if args.device:
                check_device(study.config, str(path))
        except ConfigError as err:
            print(err, file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok, study {study.name!r}, {len(study.cells)} cell(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
