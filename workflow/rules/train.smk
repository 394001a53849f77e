# Training: one job per grid cell; all seeds of the cell are stacked into one tensor program.
# Resume state lives outside the declared outputs (results/<study>/state/<cell>), so a retried or
# preempted job resumes instead of starting over.


rule train:
    input:
        dataset=dataset_of,
    output:
        store=directory(f"{RESULTS}/runs/{{cell}}/trajectory.zarr"),
        manifest=f"{RESULTS}/runs/{{cell}}/manifest.json",
    log:
        f"{RESULTS}/logs/train/{{cell}}.log",
    conda:
        "../envs/twoclocks.yaml"
    threads: STUDY.config["train_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=train_gpus,
    params:
        cell=cell_params,
        state_dir=lambda wildcards: f"{RESULTS}/state/{wildcards.cell}",
    script:
        "../../scripts/train_cell.py"
