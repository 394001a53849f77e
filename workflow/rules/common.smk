# Config loading and validation, grid expansion, path helpers. Runs before any job is scheduled.
import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake_interface_executor_plugins.settings import ExecMode

from twoclocks.config import (
    ConfigError,
    check_device,
    config_for_snakemake,
    load_config,
)
from twoclocks.eta import study_eta, write_plan
from twoclocks.train.memory import check_study
from twoclocks.verify import quick_check

DEFAULT_CONFIG = Path(workflow.basedir) / "config" / "config.yaml"
SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"

# No `configfile:` directive: it would be deep-merged with a --configfile (grids of both studies).
# Without --configfile, --config overrides are merged over the default config instead.
try:
    _config, CONFIG_SOURCE = config_for_snakemake(
        config, workflow.configfiles, DEFAULT_CONFIG
    )
    config.clear()
    config.update(_config)
    STUDY = load_config(dict(config), schema_path=SCHEMA, where=CONFIG_SOURCE)
    check_study(STUDY, CONFIG_SOURCE, local=workflow.local_exec)
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None


onstart:
    # Once the executor is known and before any job: local train jobs need the device asked for.
    if workflow.local_exec:
        try:
            check_device(STUDY.config, CONFIG_SOURCE)
        except ConfigError as err:
            raise WorkflowError(f"invalid config: {err}") from None
    try:  # the ETA in the run's log; its plan, for a live view of the time left (twoclocks.eta)
        logger.info(STUDY_ETA.line())
        write_plan(STUDY_ETA, f"results/{STUDY.name}")
    except Exception as err:
        print(
            f"study {STUDY.name}: training plan not saved ({err!r})",
            file=sys.stderr,
        )


RESULTS = f"results/{STUDY.name}"
CELL_IDS = [c.id for c in STUDY.cells]

# The study's expected training time, first line of a run and of `snakemake -n` (twoclocks.eta).
if workflow.exec_mode == ExecMode.DEFAULT:
    try:
        _jobs = max(1, int(workflow._cores or 1) // int(STUDY.config["train_threads"]))
        STUDY_ETA = study_eta(STUDY, results_dir=RESULTS, jobs=_jobs)
        print(STUDY_ETA.line(), file=sys.stderr)
    except Exception as err:  # an estimate must never stop a run
        print(f"study {STUDY.name}: no training ETA ({err!r})", file=sys.stderr)

# Snakemake sees a store's directory, not its files: a chunk deleted or truncated after the
# store was validated would go unnoticed ("Nothing to be done"). The head process compares each
# store's files and sizes with its manifest (no hashing; the stages check sha256) and stops.
if workflow.exec_mode == ExecMode.DEFAULT:
    _damaged = quick_check(RESULTS) + quick_check(f"{RESULTS}/replicate")
    if _damaged:
        raise WorkflowError("damaged trajectory store(s):\n  " + "\n  ".join(_damaged))


wildcard_constraints:
    cell=r"[A-Za-z0-9._=+-]+(/[A-Za-z0-9._=+-]+)*",
    group=r"[A-Za-z0-9._=+-]+(/[A-Za-z0-9._=+-]+)*",
    dataset=r"[A-Za-z0-9._-]+",


def group_cells(wildcards):
    return [c.params for c in STUDY.groups[wildcards.group]]


def group_axes(wildcards):
    """cell id -> the grid-axis values that label it, for every cell of a train group."""
    return {c.id: c.axes for c in STUDY.groups[wildcards.group]}


def train_gpus(wildcards=None):
    """One GPU per train job when the study asks for CUDA, none otherwise."""
    return 1 if STUDY.config["device"] == "cuda" else 0


def group_dataset(wildcards):
    return f"{RESULTS}/data/{STUDY.groups[wildcards.group][0].dataset_id}.zarr"


def group_dir_of(wildcards):
    return f"{RESULTS}/stacked/{STUDY.group_of(wildcards.cell)}/train"


def trajectories(kind):
    """Every cell's trajectory store (kind='store') or manifest (kind='manifest')."""
    name = "trajectory.zarr" if kind == "store" else "manifest.json"
    return [f"{RESULTS}/runs/{cid}/{name}" for cid in CELL_IDS]


def final_targets():
    """The report and every planned cell's files. Snakemake (>= 7.7) reruns no job for a deleted
    intermediate file while the files downstream of it exist ("Nothing to be done"); as targets,
    a deleted runs/<cell> (manifest, clocks, reduction) is rebuilt by a plain rerun, and so is
    everything downstream of it, the replicate's too (numerics_replicate)."""
    per_cell = [f"{RESULTS}/runs/{cid}/clocks.parquet" for cid in CELL_IDS]
    reductions = [f"{RESULTS}/runs/{cid}/reduce.zarr" for cid in REDUCE_IDS]
    return [
        *trajectories("manifest"),
        *per_cell,
        *reductions,
        f"{RESULTS}/clocks.parquet",
        f"{RESULTS}/fits.json",
        f"{RESULTS}/claims.json",
        f"{RESULTS}/report/index.html",
        *REPLICATE_FILES["targets"],
    ]
