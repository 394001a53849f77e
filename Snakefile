# twoclocks: dataset -> train (all seeds of a cell stacked) -> clocks -> fits -> replay -> laws
# (+ calibration) -> report.
# Run `snakemake --cores all` for the embedded default study (config/config.yaml), or
# `snakemake --cores all --configfile config/paper.yaml` for the paper's study.


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/replay.smk"
include: "workflow/rules/laws.smk"
include: "workflow/rules/replicate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"


rule all:
    default_target: True
    input:
        final_targets(),
