# Training: one job per train group. A group is one cell, or with `stack_axes` every cell of a
# grid that differs only in the stacked axes; all its members (cells x seeds) are one tensor
# program. Resume state lives outside the declared outputs (results/<study>/state/<group>), so
# a retried or preempted job resumes instead of starting over. `unstack` publishes each cell's
# store at runs/<cell>/trajectory.zarr with a validated manifest.

# mem_mb: the group's estimated peak memory (twoclocks.train.memory) x margin x attempt.
from twoclocks.train.memory import declared_mem_mb


rule train:
    input:
        dataset=group_dataset,
    output:
        directory(f"{RESULTS}/stacked/{{group}}/train"),
    log:
        f"{RESULTS}/logs/train/{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{group}}.tsv"
    conda:
        "../envs/twoclocks.yaml"
    threads: STUDY.config["train_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: declared_mem_mb(
            group_cells(wildcards), attempt
        ),
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=train_gpus,
    params:
        cells=group_cells,
        axes=group_axes,
        state_dir=lambda wildcards: f"{RESULTS}/state/{wildcards.group}/work",
    script:
        "../../scripts/train_group.py"


rule unstack:
    input:
        group_dir_of,
    output:
        store=directory(f"{RESULTS}/runs/{{cell}}/trajectory.zarr"),
        manifest=f"{RESULTS}/runs/{{cell}}/manifest.json",
    log:
        f"{RESULTS}/logs/unstack/{{cell}}.log",
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    params:
        cell_id=lambda wildcards: wildcards.cell,
        group=lambda wildcards: STUDY.group_of(wildcards.cell),
    script:
        "../../scripts/unstack_cell.py"
