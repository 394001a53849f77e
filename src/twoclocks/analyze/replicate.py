"""The numerics replicate's workflow side (analysis.numerics_replicate, issue 26 item 2): is it
on, is the study one it can perturb, which files it adds under ``results/<study>/replicate``,
and the check its train job makes after importing torch. Light on imports: the Snakefile's head
reads it at parse time. The verdicts are merged by ``analyze.claims.robust``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twoclocks.config import ConfigError

CAPABILITY_ENV = "ATEN_CPU_CAPABILITY"  # read by torch once, at its first CPU kernel dispatch
REPLICATE_CAPABILITY = "default"  # torch's portable (non-vectorised) CPU kernels


def replicate_enabled(config: Mapping[str, Any]) -> bool:
    """Whether the study asks for the numerics replicate (`analysis.numerics_replicate`)."""
    return bool((config.get("analysis") or {}).get("numerics_replicate", False))


def replicate_files(config: Mapping[str, Any], results: str, cell_ids: list[str]) -> dict:
    """The replicate's files by kind, under ``<results>/replicate`` (empty lists when the key is
    off): per cell `stores`, `manifests`, `clocks`, `measures`; the study's `study_clocks`,
    `fits`; and `targets`, what the workflow's final targets add (manifests, clocks, fits)."""
    names = ("stores", "manifests", "clocks", "measures", "study_clocks", "fits", "targets")
    if not replicate_enabled(config):
        return {k: [] for k in names}
    root = f"{results}/replicate"
    per_cell = {
        "stores": "trajectory.zarr",
        "manifests": "manifest.json",
        "clocks": "clocks.parquet",
        "measures": "measures.parquet",
    }
    files = {k: [f"{root}/runs/{cid}/{name}" for cid in cell_ids] for k, name in per_cell.items()}
    files.update(study_clocks=[f"{root}/clocks.parquet"], fits=[f"{root}/fits.json"])
    keep = ("manifests", "clocks", "study_clocks", "fits")
    files["targets"] = [path for k in keep for path in files[k]]
    return files


def check_replicate_config(config: Mapping[str, Any]) -> None:
    """Refuse the replicate where it would perturb nothing, before any job runs.

    ``ATEN_CPU_CAPABILITY`` selects CPU kernels only: a CUDA study trained twice would be judged
    twice on the same GPU bits and every verdict would look robust without being tested.
    """
    if replicate_enabled(config) and config.get("device") == "cuda":
        raise ConfigError(
            "analysis.numerics_replicate perturbs the CPU code path (ATEN_CPU_CAPABILITY="
            "default) and tests nothing on CUDA. Fix: set device: cpu for the replicate's "
            "study, or set analysis.numerics_replicate: false."
        )


def check_second_code_path(capability: str, device_type: str) -> None:
    """In the replicate's train job, after torch is imported: raise unless torch honoured
    ``ATEN_CPU_CAPABILITY=default`` (`capability`, from torch.backends.cpu.get_cpu_capability)
    and the job trains on the CPU (`device_type`; with device: auto a GPU would be used)."""
    if capability != REPLICATE_CAPABILITY.upper():
        raise RuntimeError(
            f"the numerics replicate runs on CPU capability {capability!r}, not "
            f"{REPLICATE_CAPABILITY.upper()!r}: torch ignored {CAPABILITY_ENV}="
            f"{REPLICATE_CAPABILITY} (it must be set before torch runs any kernel)"
        )
    if device_type != "cpu":
        raise ConfigError(
            f"the numerics replicate would train on {device_type!r}: {CAPABILITY_ENV} perturbs "
            "CPU kernels only. Fix: set device: cpu, or analysis.numerics_replicate: false."
        )
