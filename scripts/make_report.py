"""Snakemake entry point: claims, figures and the self-contained HTML report.

Reads only the rule's declared inputs; the cell ids come in as a param, in study order.
"""

from twoclocks import logs
from twoclocks.report.build import build_report

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
cell_ids = list(sm.params.cell_ids)
replicate = None
if sm.input.replicate_fits:  # analysis.numerics_replicate (workflow/rules/replicate.smk)
    replicate = {
        "stores": dict(zip(cell_ids, sm.input.replicate_stores, strict=True)),
        "manifests": dict(zip(cell_ids, sm.input.replicate_manifests, strict=True)),
        "clocks_path": sm.input.replicate_clocks[0],
        "fits_path": sm.input.replicate_fits[0],
        "measures": dict(zip(cell_ids, sm.input.replicate_measures, strict=True)),
    }
build_report(
    config=dict(sm.params.config),
    stores=dict(zip(cell_ids, sm.input.stores, strict=True)),
    manifests=dict(zip(cell_ids, sm.input.manifests, strict=True)),
    clocks_path=sm.input.clocks,
    fits_path=sm.input.fits_json,
    claims_path=sm.output.claims,
    index_path=sm.output.index,
    figures_dir=sm.output.figures,
    benchmarks_dir=sm.params.benchmarks_dir,
    measures=dict(zip(cell_ids, sm.input.measures, strict=True)),
    laws=dict(zip(cell_ids, sm.input.laws, strict=True)),
    calibration=sm.input.calibration,
    replicate=replicate,
)
log.info("report written to %s", sm.output.index)
