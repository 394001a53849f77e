"""Snakemake entry point: one clocks table for the study, and every fit (reads clocks only)."""

import json

import pandas as pd

from twoclocks import logs, provenance
from twoclocks.analyze.fits import fit_clocks
from twoclocks.verify import read_table

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
record = {"provenance": provenance.collect(), "analysis": dict(sm.params.analysis)}
clocks = pd.concat([read_table(p) for p in sm.input.clocks], ignore_index=True)
provenance.write_parquet(clocks, sm.output.clocks, record)
clocks.to_csv(sm.output.clocks_csv, index=False)
fits, summary = fit_clocks(clocks, dict(sm.params.analysis))
provenance.write_parquet(fits, sm.output.fits, record)
with open(sm.output.fits_json, "w") as fh:
    json.dump({**summary, **record}, fh, indent=2, sort_keys=True, default=str)
log.info("fits: %d rows (%d ok); %d clock rows", len(fits), int((fits["status"] == "ok").sum()),
         len(clocks))  # fmt: skip
