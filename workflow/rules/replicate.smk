# The numerics replicate (opt-in: analysis.numerics_replicate, issue 26): every train group
# trained again under torch's portable CPU kernels (ATEN_CPU_CAPABILITY=default, set by
# scripts/train_replicate.py before torch is imported) into results/<study>/replicate/, with
# its own stores, clocks, measures and fits; the report rule judges the claims on both
# (analyze/claims/robust.py; analyze/replicate.py here). The primary study's files are never written here.
from twoclocks.analyze import replicate as _replicate

try:
    _replicate.check_replicate_config(STUDY.config)
except ConfigError as err:
    raise WorkflowError(f"invalid config: {err}") from None

REPLICA = f"{RESULTS}/replicate"


# the replicate's files by kind (empty lists when off): the report's optional inputs, targets
REPLICATE_FILES = _replicate.replicate_files(STUDY.config, RESULTS, CELL_IDS)


rule replicate_train:
    input:
        dataset=group_dataset,
    output:
        directory(f"{REPLICA}/stacked/{{group}}/train"),
    log:
        f"{REPLICA}/logs/train/{{group}}.log",
    benchmark:
        f"{REPLICA}/benchmarks/train/{{group}}.tsv"
    conda:
        "../envs/twoclocks.yaml"
    threads: STUDY.config["train_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        cells=group_cells,
        axes=group_axes,
        state_dir=lambda wildcards: f"{REPLICA}/state/{wildcards.group}/work",
    script:
        "../../scripts/train_replicate.py"


use rule unstack as replicate_unstack with:
    input:
        lambda wildcards: f"{REPLICA}/stacked/{STUDY.group_of(wildcards.cell)}/train",
    output:
        store=directory(f"{REPLICA}/runs/{{cell}}/trajectory.zarr"),
        manifest=f"{REPLICA}/runs/{{cell}}/manifest.json",
    log:
        f"{REPLICA}/logs/unstack/{{cell}}.log",


use rule clocks as replicate_clocks with:
    input:
        store=f"{REPLICA}/runs/{{cell}}/trajectory.zarr",
        manifest=f"{REPLICA}/runs/{{cell}}/manifest.json",
    output:
        f"{REPLICA}/runs/{{cell}}/clocks.parquet",
    log:
        f"{REPLICA}/logs/clocks/{{cell}}.log",
    benchmark:
        f"{REPLICA}/benchmarks/clocks/{{cell}}.tsv"


use rule measure as replicate_measure with:
    input:
        store=f"{REPLICA}/runs/{{cell}}/trajectory.zarr",
        manifest=f"{REPLICA}/runs/{{cell}}/manifest.json",
        dataset=CELL_DATASET,
        reduction=[],  # the reduce stage runs on the primary only
    output:
        f"{REPLICA}/runs/{{cell}}/measures.parquet",
    log:
        f"{REPLICA}/logs/measure/{{cell}}.log",
    benchmark:
        f"{REPLICA}/benchmarks/measure/{{cell}}.tsv"


use rule fits as replicate_fits with:
    input:
        clocks=[f"{REPLICA}/runs/{cid}/clocks.parquet" for cid in CELL_IDS],
    output:
        clocks=f"{REPLICA}/clocks.parquet",
        clocks_csv=f"{REPLICA}/clocks.csv",
        fits=f"{REPLICA}/fits.parquet",
        fits_json=f"{REPLICA}/fits.json",
    log:
        f"{REPLICA}/logs/fits.log",
    benchmark:
        f"{REPLICA}/benchmarks/fits/all.tsv"
