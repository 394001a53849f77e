"""Snakemake entry point: generate one dataset store."""

from twoclocks import logs
from twoclocks.data.io import build_dataset, save_dataset

log = logs.to_file(snakemake.log[0])  # noqa: F821
ds = build_dataset(dict(snakemake.params.spec))  # noqa: F821
save_dataset(ds, snakemake.output[0])  # noqa: F821
log.info("wrote %s: %s", snakemake.output[0], dict(ds.sizes))  # noqa: F821
