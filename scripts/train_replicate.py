"""Snakemake entry point: train one group of the numerics replicate (analysis.numerics_replicate).

The same job as train_group.py, under torch's portable CPU kernels: ATEN_CPU_CAPABILITY=default
is set here, before torch is imported (torch reads it once, at its first CPU kernel), and
checked after; the stores' provenance records the capability (numerics.cpu_capability).
"""

import os
import runpy
from pathlib import Path

# analyze.replicate.REPLICATE_CAPABILITY, set before torch is imported
os.environ["ATEN_CPU_CAPABILITY"] = "default"

import torch  # noqa: E402

from twoclocks.analyze import replicate  # noqa: E402
from twoclocks.train.engine import resolve_device  # noqa: E402

sm = snakemake  # noqa: F821
devices = {resolve_device(str(dict(c).get("device", "auto"))).type for c in sm.params.cells}
for device_type in sorted(devices):
    replicate.check_second_code_path(torch.backends.cpu.get_cpu_capability(), device_type)
runpy.run_path(str(Path(__file__).with_name("train_group.py")), init_globals={"snakemake": sm})
