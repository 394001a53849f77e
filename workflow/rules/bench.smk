# Benchmark (not part of `all`): `snakemake --cores all bench` writes results/<study>/bench.json,
# our engine vs a peer-style reference loop, FLOP utilisation, metric share, dry-run time.
# Two torch threads: the CI machine's cores (override: --set-threads bench=N).


rule bench:
    output:
        f"{RESULTS}/bench.json",
    log:
        f"{RESULTS}/logs/bench.log",
    conda:
        "../envs/twoclocks.yaml"
    threads: 2
    resources:
        gpu=train_gpus,
    params:
        device=STUDY.config["device"],
    shell:
        "python -m twoclocks.bench --device {params.device} --threads {threads} "
        "--output {output} > {log} 2>&1"
