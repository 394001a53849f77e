"""Snakemake entry point: the study's calibration of the law estimators
(analyze.law_calibration.run_calibration)."""

from twoclocks import logs
from twoclocks.analyze.law_calibration import run_calibration

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
cal = run_calibration(
    dict(zip(sm.params.cell_ids, sm.input.laws, strict=True)),
    sm.output[0],
    analysis=dict(sm.params.analysis),
    workers=int(sm.threads),
)
for key, h in cal["horizons"].items():
    log.info("%s: %d families, %d draws each", key, len(h["families"]), cal["draws"])
