"""Snakemake entry point: claims, figures and the self-contained HTML report."""

from twoclocks import logs
from twoclocks.report.build import build_report

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
build_report(
    study_dir=sm.params.study_dir,
    config=dict(sm.params.config),
    claims_path=sm.output.claims,
    index_path=sm.output.index,
    figures_dir=sm.output.figures,
)
log.info("report written to %s", sm.output.index)
