"""The tiny study on a real SLURM cluster equals a local run bitwise (issue 6).

Start the cluster with `.ci/slurm-up.sh` (root; installs Debian's slurm-wlm and munge). The
tests skip only when `sbatch` is absent and `CI` is unset; under CI a missing cluster fails.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

pytestmark = [
    pytest.mark.cluster,
    # Snakemake marks directory() outputs with a file zarr does not know; harmless here.
    pytest.mark.filterwarnings("ignore:Object at .snakemake_timestamp:UserWarning"),
]

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
TEST_CONFIG = REPO / "config" / "test.yaml"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "workflow" / "profiles" / "local"
STUDY = "test"
RUN_TIMEOUT_S = 1200
# Provenance legitimately differs between a SLURM job and a local process (host, job id, times).
IGNORED_ATTRS = frozenset({"provenance"})
READY_STATES = ("idle", "mixed", "allocated", "completing")
# `snakemake --summary` statuses of a finished output (temp() files are gone by design).
DONE_STATUSES = ("ok", "removed temp file")


def _cluster_problem() -> str | None:
    """Why the SLURM cluster cannot take jobs, or None when it can."""
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"`scontrol ping` failed: {err}"
    if "UP" not in ping.stdout:
        return f"slurmctld is not up: {(ping.stdout + ping.stderr).strip()}"
    info = subprocess.run(
        ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False
    )
    states = info.stdout.split()
    if not any(s.rstrip("*~#!%$@^-") in READY_STATES for s in states):
        return f"no node ready for jobs (sinfo states: {states or info.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    """Require a working cluster: skip without SLURM outside CI, fail in CI."""
    in_ci = bool(os.environ.get("CI"))
    if shutil.which("sbatch") is None:
        if in_ci:
            pytest.fail("CI is set but `sbatch` is missing: run .ci/slurm-up.sh before the tests")
        pytest.skip("SLURM not installed (no sbatch) and CI unset")
    problem = _cluster_problem()
    if problem is not None:
        pytest.fail(f"SLURM cluster not usable: {problem}. Start it with .ci/slurm-up.sh")


def _profile(path: Path) -> dict:
    return yaml.safe_load((path / "profile.yaml").read_text())


def _snakemake(workdir: Path, *args: str) -> list[str]:
    """The snakemake command for the tiny study, run in `workdir` (nothing copied there)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--configfile",
        str(TEST_CONFIG),
        "--directory",
        str(workdir),
        *args,
    ]


def _start(workdir: Path, profile: Path) -> tuple[subprocess.Popen, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir.parent / f"{workdir.name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            _snakemake(workdir, "--workflow-profile", str(profile)),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, log_path


def _finish(proc: subprocess.Popen, log_path: Path, what: str) -> str:
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=60)
        rc = None
    text = log_path.read_text()
    assert rc == 0, f"{what} run failed (rc={rc}); log tail:\n{text[-4000:]}"
    return text


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> dict[str, Path]:
    """Run the tiny study through the slurm and the local profile (concurrently)."""
    missing = [p for p in (SNAKEFILE, TEST_CONFIG) if not p.exists()]
    if missing:
        pytest.fail(f"pipeline not in place: missing {', '.join(map(str, missing))}")
    root = tmp_path_factory.mktemp("cluster")
    slurm_proc, slurm_log = _start(root / "slurm", SLURM_PROFILE)
    local_proc, local_log = _start(root / "local", LOCAL_PROFILE)
    local_text = _finish(local_proc, local_log, "local")
    slurm_text = _finish(slurm_proc, slurm_log, "slurm")
    assert "Using workflow specific profile" in local_text
    assert "submitted with SLURM jobid" in slurm_text, "no job went through sbatch"
    return {"slurm": root / "slurm", "local": root / "local"}


def test_cluster_runs_a_job(cluster, tmp_path):
    """sbatch on the profile's partition runs a job to completion."""
    partition = _profile(SLURM_PROFILE)["default-resources"]["slurm_partition"]
    out = tmp_path / "job.out"
    subprocess.run(
        ["sbatch", "--wait", "-p", partition, "-c", "1", "--mem", "100", "-o", str(out)]
        + ["--wrap", "echo ran on $SLURM_JOB_PARTITION"],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.read_text().strip() == f"ran on {partition}"


def _summary(workdir: Path) -> list[dict[str, str]]:
    """Rows of `snakemake --summary`: every file the workflow creates, with its status."""
    # --cores: rules may size threads by workflow.cores; --summary runs nothing.
    cmd = _snakemake(workdir, "--summary", "--cores", "all")
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = [ln for ln in res.stdout.splitlines() if "\t" in ln]
    header = lines[0].split("\t")
    return [dict(zip(header, ln.split("\t"), strict=False)) for ln in lines[1:]]


@pytest.mark.parametrize("mode", ["slurm", "local"])
def test_every_target_exists(runs, mode):
    """Each workflow output is present and up to date after the run."""
    rows = _summary(runs[mode])
    assert rows, "snakemake --summary lists no outputs"
    stale = [(r["output_file"], r["status"], r["plan"]) for r in rows]
    stale = [s for s in stale if s[1] not in DONE_STATUSES or s[2] != "no update"]
    assert not stale, f"{mode}: outputs missing or outdated: {stale[:20]}"
    for r in rows:
        if r["status"] == "ok":
            assert (runs[mode] / r["output_file"]).exists(), r["output_file"]
    assert any(r["output_file"].startswith(f"results/{STUDY}/") for r in rows)


def _trajectories(workdir: Path) -> dict[str, Path]:
    runs_dir = workdir / "results" / STUDY / "runs"
    return {
        str(p.parent.relative_to(runs_dir)): p for p in sorted(runs_dir.rglob("trajectory.zarr"))
    }


def _bits(values: np.ndarray) -> bytes | list:
    """Exact representation of an array: raw bytes, or the items for object arrays."""
    if values.dtype == object:
        return values.ravel().tolist()
    return np.ascontiguousarray(values).tobytes()


def _assert_attrs_equal(a: dict, b: dict, where: str) -> None:
    a = {k: v for k, v in a.items() if k not in IGNORED_ATTRS}
    b = {k: v for k, v in b.items() if k not in IGNORED_ATTRS}
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(
        b, sort_keys=True, default=str
    ), f"{where}: attrs differ"


def test_trajectories_bitwise_equal(runs):
    """Every trajectory store holds the same arrays, bit for bit, on SLURM and locally."""
    slurm, local = _trajectories(runs["slurm"]), _trajectories(runs["local"])
    assert slurm, "no trajectory.zarr under results/test/runs"
    assert sorted(slurm) == sorted(local)
    for cell_id, path in slurm.items():
        with (
            xr.open_zarr(path, consolidated=False) as a,
            xr.open_zarr(local[cell_id], consolidated=False) as b,
        ):
            assert dict(a.sizes) == dict(b.sizes), cell_id
            assert sorted(a.variables) == sorted(b.variables), cell_id
            _assert_attrs_equal(a.attrs, b.attrs, cell_id)
            for name in a.variables:
                va, vb = a[name], b[name]
                where = f"{cell_id}:{name}"
                assert va.dims == vb.dims, where
                assert va.dtype == vb.dtype, where
                assert _bits(va.values) == _bits(vb.values), f"{where}: values differ"
                _assert_attrs_equal(va.attrs, vb.attrs, where)
