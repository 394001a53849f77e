"""Snakemake entry point: one cell's law decisions (analyze.law_stage.run_laws)."""

from twoclocks import logs
from twoclocks.analyze.law_stage import run_laws

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
record = run_laws(
    sm.input.store,
    sm.input.clocks,
    sm.output[0],
    analysis=dict(sm.params.analysis),
    params=dict(sm.params.cell),
    cell_id=sm.wildcards.cell,
    manifest=sm.input.manifest,
)
for clock, r in record["clocks"].items():
    log.info("%-12s %s", clock, r.get("decision"))
