# Replay: what needs weight snapshots or the model itself, measured once per cell so that claims
# and report read tables only (src/twoclocks/replay). Thresholds arrive as params.
from twoclocks.analyze.clocks import resolve_settings as _analysis_settings

REPLAY_ANALYSIS = _analysis_settings(STUDY.config["analysis"])

# The frozen-gate reduction (issue 14, replay/frozen_gates.py): opt-in (analysis.reduction),
# one job per ReLU cell after its clocks; about two extra trainings per cell, on the CPU.
REDUCE_IDS = (
    [c.id for c in STUDY.cells if c.params.get("model") == "relu_embed"]
    if REPLAY_ANALYSIS["reduction"]
    else []
)


CELL_DATASET = lambda w: f"{RESULTS}/data/{STUDY.cell(w.cell).dataset_id}.zarr"
# the reduce stage's store of a cell, when the reduction runs for it
CELL_REDUCTION = lambda w: (
    [f"{RESULTS}/runs/{w.cell}/reduce.zarr"] if w.cell in REDUCE_IDS else []
)


rule measure:
    input:
        store=f"{RESULTS}/runs/{{cell}}/trajectory.zarr",
        manifest=f"{RESULTS}/runs/{{cell}}/manifest.json",
        dataset=CELL_DATASET,
        reduction=CELL_REDUCTION,
    output:
        f"{RESULTS}/runs/{{cell}}/measures.parquet",
    log:
        f"{RESULTS}/logs/measure/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/measure/{{cell}}.tsv"
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    params:
        fourier_keep=STUDY.config["claims"]["fourier_keep"],
    script:
        "../../scripts/measure_cell.py"


rule reduce:
    input:
        store=f"{RESULTS}/runs/{{cell}}/trajectory.zarr",
        manifest=f"{RESULTS}/runs/{{cell}}/manifest.json",
        dataset=CELL_DATASET,
        clocks=f"{RESULTS}/runs/{{cell}}/clocks.parquet",
    output:
        directory(f"{RESULTS}/runs/{{cell}}/reduce.zarr"),
    log:
        f"{RESULTS}/logs/reduce/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reduce/{{cell}}.tsv"
    conda:
        "../envs/twoclocks.yaml"
    params:
        eps_star=REPLAY_ANALYSIS["eps_star"],
        gen_acc_level=STUDY.config["claims"]["gen_acc_level"],
        margin=REPLAY_ANALYSIS["reduction_margin"],
    script:
        "../../scripts/reduce_cell.py"
