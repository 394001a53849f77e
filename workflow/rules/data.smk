# Dataset generation: one job per distinct dataset of the study.


rule dataset:
    output:
        directory(f"{RESULTS}/data/{{dataset}}.zarr"),
    log:
        f"{RESULTS}/logs/dataset/{{dataset}}.log",
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    params:
        spec=lambda wildcards: STUDY.datasets[wildcards.dataset],
    script:
        "../../scripts/make_dataset.py"
