# Law decisions (issue #22): per cell the three-outcome law of every clock (analyze.law_stage),
# then per study the calibration of those estimators at the study's own horizon, cadence, level
# grids and measured noise (analyze.law_calibration). The law claims read both.


rule laws:
    input:
        store=f"{RESULTS}/runs/{{cell}}/trajectory.zarr",
        manifest=f"{RESULTS}/runs/{{cell}}/manifest.json",
        clocks=f"{RESULTS}/runs/{{cell}}/clocks.parquet",
    output:
        f"{RESULTS}/runs/{{cell}}/laws.json",
    log:
        f"{RESULTS}/logs/laws/{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/laws/{{cell}}.tsv"
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    params:
        analysis=STUDY.config["analysis"],
        cell=lambda wildcards: STUDY.cell(wildcards.cell).params,
    script:
        "../../scripts/decide_laws.py"


rule calibrate:
    input:
        laws=[f"{RESULTS}/runs/{cid}/laws.json" for cid in CELL_IDS],
    output:
        f"{RESULTS}/calibration.json",
    log:
        f"{RESULTS}/logs/calibrate.log",
    benchmark:
        f"{RESULTS}/benchmarks/calibrate/all.tsv"
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    threads: 2
    params:
        analysis=STUDY.config["analysis"],
        cell_ids=CELL_IDS,
    script:
        "../../scripts/calibrate_laws.py"
