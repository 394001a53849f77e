# Analysis: clocks per cell (crossings, asymptotes, tail shapes), then one table for the study
# and every fit. Data flows one way: the fits rule reads the clocks tables, never the stores.


rule clocks:
    input:
        store=f"{RESULTS}/runs/{{cell}}/trajectory.zarr",
        manifest=f"{RESULTS}/runs/{{cell}}/manifest.json",
    output:
        f"{RESULTS}/runs/{{cell}}/clocks.parquet",
    log:
        f"{RESULTS}/logs/clocks/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/clocks/{{cell}}.tsv"
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    params:
        analysis=STUDY.config["analysis"],
        axes=lambda wildcards: STUDY.cell(wildcards.cell).axes,
    script:
        "../../scripts/extract_clocks.py"


rule fits:
    input:
        clocks=[f"{RESULTS}/runs/{cid}/clocks.parquet" for cid in CELL_IDS],
    output:
        clocks=f"{RESULTS}/clocks.parquet",
        clocks_csv=f"{RESULTS}/clocks.csv",
        fits=f"{RESULTS}/fits.parquet",
        fits_json=f"{RESULTS}/fits.json",
    log:
        f"{RESULTS}/logs/fits.log",
    benchmark:
        f"{RESULTS}/benchmarks/fits/all.tsv"
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    params:
        analysis=STUDY.config["analysis"],
    script:
        "../../scripts/fit_clocks.py"


# The frozen-gate reduction (issue 14, train/frozen_gates.py): opt-in (analysis.reduction),
# one job per ReLU cell after its clocks; about two extra trainings per cell, on the CPU.
REDUCE_IDS = (
    [c.id for c in STUDY.cells if c.params.get("model") == "relu_embed"]
    if STUDY.config["analysis"].get("reduction", False)
    else []
)


rule reduce:
    input:
        store=f"{RESULTS}/runs/{{cell}}/trajectory.zarr",
        manifest=f"{RESULTS}/runs/{{cell}}/manifest.json",
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
        analysis=STUDY.config["analysis"],
        claims=STUDY.config.get("claims", {}),
    script:
        "../../scripts/reduce_cell.py"
