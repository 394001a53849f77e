"""Snakemake entry point: publish one cell's trajectory store from its train group.

The cell id and the (possibly nested) group id come in as rule params, never parsed from paths.
"""

from pathlib import Path

from twoclocks import logs
from twoclocks.fsutil import link_tree
from twoclocks.train.manifest import store_checksums, write_manifest
from twoclocks.verify import read_json, verify_published

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
group_dir = Path(sm.input[0])
source = group_dir / "cells" / sm.params.cell_id / "trajectory.zarr"
how = link_tree(source, sm.output.store)  # hard links: one copy of the data on disk
group = read_json(group_dir / "group.json")
# Hard links share the data with the train output: damage done there in place (a truncated
# file) would be published, and checksummed, as if valid. Compare with what training wrote
# before reading any array.
checksums = store_checksums(sm.output.store)  # of the final (linked or copied) store
verify_published(source, group.get("checksums", {}).get(sm.params.cell_id), checksums, group_dir)
write_manifest(
    sm.output.store,
    sm.output.manifest,
    checksums=checksums,
    group=sm.params.group if len(group["cells"]) > 1 else None,
    stacked_cells=len(group["cells"]),
    wall_seconds=round(group["wall_seconds"] / len(group["cells"]), 2),
    group_wall_seconds=round(group["wall_seconds"], 2),
)
log.info("published %s from %s (%s)", sm.output.store, group_dir, how)
