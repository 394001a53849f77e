"""Snakemake entry point: one clocks table for the study, and the fits across cells."""

import json

import pandas as pd

from twoclocks import logs
from twoclocks.analyze.fits import fit_clocks
from twoclocks.train.store import open_trajectory

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
clocks = pd.concat([pd.read_parquet(p) for p in sm.input.clocks], ignore_index=True)
clocks.to_parquet(sm.output.clocks, index=False)
clocks.to_csv(sm.output.clocks_csv, index=False)
stores = {str(p).split("/runs/", 1)[1].rsplit("/", 1)[0]: p for p in sm.input.stores}
trajectories = {cid: open_trajectory(p) for cid, p in stores.items()}
fits, summary = fit_clocks(clocks, dict(sm.params.analysis), trajectories)
fits.to_parquet(sm.output.fits, index=False)
with open(sm.output.fits_json, "w") as fh:
    json.dump(summary, fh, indent=2, sort_keys=True, default=str)
log.info("fits: %d rows", len(fits))
