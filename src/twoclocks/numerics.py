"""What, besides the program and its inputs, decides the bits of a run: the numerics fingerprint.

torch picks CPU kernels by the instruction set it detects (AVX512, AVX2, ... or what
`ATEN_CPU_CAPABILITY` caps it to) and MKL picks its own code paths (`MKL_ENABLE_INSTRUCTIONS`,
`MKL_CBWR`); on GPUs the device model and the CUDA / cuDNN versions choose the kernels. Runs that
differ in any of these differ in the last bits (up to ~2e-6 on the tiny study), so the fingerprint
goes into the cache key (`twoclocks.train.cache.run_hash`), into every store's provenance, and
next to every resume state: resuming under another fingerprint stops unless allowed.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from pathlib import Path

import torch

ALLOW_ENV = "TWOCLOCKS_ALLOW_NUMERICS_CHANGE"
# Environment variables that change which CPU code paths torch / MKL / OpenBLAS take.
ENV_KEYS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OPENBLAS_CORETYPE")
log = logging.getLogger("twoclocks.numerics")


class NumericsChanged(RuntimeError):
    """A resume state was written under another numerics fingerprint."""


def fingerprint(device: str | torch.device = "cpu") -> dict:
    """JSON-safe record of the numerics a run on `device` gets on this machine.

    CPU: torch's CPU capability and any of `ENV_KEYS` that are set. CUDA adds the device
    name, its compute capability and the CUDA / cuDNN versions torch was built with.
    """
    record: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    env = {k: os.environ[k] for k in ENV_KEYS if os.environ.get(k)}
    if env:
        record["env"] = env
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        record.update(
            cuda_device=torch.cuda.get_device_name(index),
            cuda_capability=f"{major}.{minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return record


def blas() -> str:
    """The BLAS torch was built with (``mkl``, ``open``, ``accelerate``, ...), from its build
    settings; ``unknown`` where they do not say."""
    found = re.search(r"BLAS_INFO=([\w.-]+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


def cpu_identity() -> dict:
    """Everything that decides the float bits of a CPU run on this machine, for fixtures keyed
    by numerics: `fingerprint("cpu")` plus machine architecture, torch version and BLAS.

    Two machines with equal identities give bitwise equal trajectories for equal inputs and
    thread counts (the training dtype is part of the inputs, not of the identity). Of the
    environment it keeps what changes bits: ``ATEN_CPU_CAPABILITY`` shows in ``cpu_capability``
    already, and a BLAS library's variables count only for that library.
    """
    record = fingerprint("cpu")
    library = blas()
    prefix = "OPENBLAS_" if library.startswith("open") else "MKL_" if library == "mkl" else None
    env = {k: v for k, v in record.pop("env", {}).items() if prefix and k.startswith(prefix)}
    if env:
        record["env"] = env
    return {**record, "machine": platform.machine(), "torch": torch.__version__, "blas": library}


def identity_key(identity: dict) -> str:
    """A short readable key of `cpu_identity()`, e.g. ``x86_64-AVX512-torch2.13.0+cpu-mkl``;
    variables of `ENV_KEYS` that are set add a digest of their values."""
    key = "-".join(
        [
            identity["machine"],
            identity["cpu_capability"],
            "torch" + identity["torch"],
            identity["blas"],
        ]
    )
    if identity.get("env"):
        from twoclocks.provenance import digest

        key += "-env" + digest(identity["env"], 8)
    return key


def _marker(state_dir: Path) -> Path:
    return state_dir.with_name(state_dir.name + ".numerics.json")


def guard_resume(state_dir: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Record the numerics next to a resume state, or check them before resuming from it.

    A fresh `state_dir` gets `<state_dir>.numerics.json`; an existing resume state whose record
    differs from this machine's raises `NumericsChanged` naming both and the fixes, unless
    `TWOCLOCKS_ALLOW_NUMERICS_CHANGE=1` (then a warning, and the new record is kept). Returns
    this machine's fingerprint.
    """
    state_dir = Path(state_dir)
    marker = _marker(state_dir)
    now = fingerprint(device)
    has_state = state_dir.is_dir() and any(state_dir.iterdir())
    if has_state and marker.exists():
        before = json.loads(marker.read_text())
        if before != now:
            what = (
                f"the resume state in {state_dir} was written with numerics {before}, this "
                f"machine runs {now}; resuming would mix two numerics in one trajectory"
            )
            if os.environ.get(ALLOW_ENV) != "1":
                raise NumericsChanged(
                    f"{what}. Resume on the same node type (on SLURM: pin it with a "
                    f"`constraint` resource), or delete {state_dir.parent} to start the job "
                    f"over, or set {ALLOW_ENV}=1 to resume anyway."
                )
            log.warning("%s; resuming anyway (%s=1)", what, ALLOW_ENV)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(now, sort_keys=True) + "\n")
    return now
