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
