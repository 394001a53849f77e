"""The tiny study on a real SLURM cluster equals a local run bitwise; a preempted train job
resumes (issue 6).

The tests submit real jobs, so they run only when explicitly enabled: start the cluster with
`.ci/slurm-up.sh` (root; installs Debian's slurm-wlm and munge) and set TWOCLOCKS_TEST_SLURM=1
(`.ci/run` does both). Unset, they skip, so a user's cluster never gets jobs by accident; set,
a missing or unusable cluster fails with what is wrong. They use the CI profile
(workflow/profiles/slurm-ci: the test cluster's partition, squeue status checks), and check that
the user profile keeps the plugin's own status checks.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from conftest import snakemake_cmd as _snakemake

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    # Snakemake marks directory() outputs with a file zarr does not know; harmless here.
    pytest.mark.filterwarnings("ignore:Object at .snakemake_timestamp:UserWarning"),
]

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
TEST_CONFIG = REPO / "config" / "test.yaml"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm-ci"
USER_PROFILE = REPO / "workflow" / "profiles" / "slurm"
ENABLE = "TWOCLOCKS_TEST_SLURM"
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
    """Require an explicitly enabled, working cluster: skip unless TWOCLOCKS_TEST_SLURM=1, then
    fail on a missing or unusable one."""
    if os.environ.get(ENABLE) != "1":
        pytest.skip(
            f"cluster tests submit real SLURM jobs: set {ENABLE}=1 to run them (after "
            "`bash .ci/slurm-up.sh`, as .ci/run does)"
        )
    if shutil.which("sbatch") is None:
        pytest.fail(f"{ENABLE}=1 but `sbatch` is missing: run `bash .ci/slurm-up.sh` first")
    problem = _cluster_problem()
    if problem is not None:
        pytest.fail(f"SLURM cluster not usable: {problem}. Start it with `bash .ci/slurm-up.sh`")


def _profile(path: Path) -> dict:
    return yaml.safe_load((path / "profile.yaml").read_text())


def _launch(command: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``command`` from the repo root in the background, stdout and stderr to ``log_path``."""
    with log_path.open("w") as log:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def _start(workdir: Path, profile: Path) -> tuple[subprocess.Popen, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir.parent / f"{workdir.name}.log"
    return _launch(_snakemake(workdir, "--workflow-profile", str(profile)), log_path), log_path


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


def test_user_profile_keeps_the_plugins_status_checks():
    """CI's squeue polling stays in the CI profile; the user profile sets no partition either
    (the cluster's default; the README says how to choose one). Runs without a cluster."""
    user, ci = _profile(USER_PROFILE), _profile(SLURM_PROFILE)
    for key in (
        "slurm-status-command",
        "slurm-init-seconds-before-status-checks",
        "seconds-between-status-checks",
    ):
        assert key not in user, key
        assert key in ci, key
    assert "slurm_partition" not in user["default-resources"]
    assert ci["default-resources"]["slurm_partition"] == "debug"
    assert user["slurm-jobname-prefix"].startswith("twoclocks")
    assert user["executor"] == ci["executor"] == "slurm"


def test_cluster_tests_only_run_when_enabled(tmp_path):
    """Without TWOCLOCKS_TEST_SLURM=1 every test that would submit a job skips (even where
    `sbatch` exists), and .ci/run enables them right after starting its cluster."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("sbatch", "scontrol", "sinfo", "squeue"):  # a "cluster" that must not be used
        (fake_bin / tool).write_text("#!/bin/sh\necho used >> " + str(tmp_path / "used") + "\n")
        (fake_bin / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != ENABLE}
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", __file__, "-k", "runs_a_job or preempt"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:]
    assert "2 skipped" in res.stdout and ENABLE in res.stdout
    assert not (tmp_path / "used").exists()
    ci_run = (REPO / ".ci" / "run").read_text()
    up, enable = ci_run.index("bash .ci/slurm-up.sh"), ci_run.index(f"export {ENABLE}=1")
    assert up < enable < ci_run.index("run_suite\n")


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


# Preemption (issue 6): one relu cell that trains for several seconds under SLURM, so the job can
# be cancelled mid-run after its first checkpoint.
PREEMPT_CONFIG = {
    "study": "preempt",
    "seeds": [0, 1],
    "device": "cpu",
    "logging": {
        "log_dense_steps": 10,
        "log_every_steps": 50,
        "snapshot_count": 4,
        "checkpoint_every_steps": 200,
    },
    "base": {
        "modulus": 23,
        "train_fraction": 0.5,
        "embed_dim": 16,
        "hidden_width": 32,
        "lr": 0.01,
        "steps": 12000,
        "fourier_keep": 3,
    },
    "grids": {"relu": {"axes": {"weight_decay": [1.0]}}},
    "analysis": {"eps": [0.3, 0.1], "eta": [0.8, 0.6], "bootstrap_samples": 10},
}
PREEMPT_CELL = "relu/wd=1.0"
PREEMPT_TARGET = f"results/preempt/runs/{PREEMPT_CELL}/manifest.json"
# What the engine logs (src/twoclocks/train/engine.py).
SAVED_LINE = re.compile(r"signal 15: saved resume state at step (\d+), exiting")
RESUMED_LINE = "resuming cell at step {step} of"
PREEMPT_WAIT_S = 300
# Cancel once a checkpoint past this step is on disk. The run is long (12,000 steps, ~17 s at
# ~700 steps/s on an idle 2-core machine) so that scancel lands well before the end even there;
# progress is read from the resume state, not from the log, whose progress lines come at most
# every 30 s.
CANCEL_AFTER_STEP = 1000


def _preempt_command(workdir: Path, config: Path, profile: Path) -> list[str]:
    return _snakemake(
        workdir, "--workflow-profile", str(profile), "--retries", "0", PREEMPT_TARGET, config=config
    )


def _env() -> dict[str, str]:
    """The test's environment without the cross-study cache (a hit would skip training)."""
    return {k: v for k, v in os.environ.items() if k != "TWOCLOCKS_CACHE"}


def _job_state(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout.strip()


def _wait_for(what: str, probe, proc: subprocess.Popen, log_path: Path, timeout_s: float):
    """Poll `probe()` until it returns a truthy value; fail if snakemake exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(
                f"snakemake exited ({proc.returncode}) before {what}:\n"
                f"{log_path.read_text()[-4000:]}"
            )
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text()[-4000:]}")


def _state_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "results" / "preempt" / "state").rglob("state.npz"))


def _train_logs(workdir: Path) -> str:
    logs = sorted((workdir / "results" / "preempt" / "logs" / "train").rglob("*.log"))
    return "".join(p.read_text() for p in logs)


def _checkpointed_step(workdir: Path) -> int:
    """The step of the latest resume state on disk (written atomically), -1 if none."""
    for path in _state_files(workdir):
        try:
            with np.load(path, allow_pickle=False) as state:
                return int(state["step"])
        except (OSError, KeyError, ValueError):  # replaced between listing and reading
            return -1
    return -1


@contextlib.contextmanager
def _reaped():
    """A list to register background snakemake runs in; those still running at exit (a failed
    assertion) get SIGTERM, on which snakemake cancels its SLURM jobs."""
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_preempted_train_job_resumes_bitwise(cluster, tmp_path):
    """scancel (SIGTERM) on a running train job saves its state; the rerun resumes from it and
    the store equals an uninterrupted local run of the same config, bit for bit."""
    config = tmp_path / "preempt.yaml"
    config.write_text(yaml.safe_dump(PREEMPT_CONFIG, sort_keys=False))
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    with _reaped() as running:
        _preempt_and_resume(config, slurm_dir, local_dir, tmp_path, running)
    stores = [
        d / "results" / "preempt" / "runs" / PREEMPT_CELL / "trajectory.zarr"
        for d in (slurm_dir, local_dir)
    ]
    with (
        xr.open_zarr(stores[0], consolidated=False) as a,
        xr.open_zarr(stores[1], consolidated=False) as b,
    ):
        assert sorted(a.variables) == sorted(b.variables)
        _assert_attrs_equal(a.attrs, b.attrs, PREEMPT_CELL)
        assert int(a.step.max()) == PREEMPT_CONFIG["base"]["steps"]
        for name in a.variables:
            assert a[name].dtype == b[name].dtype, name
            assert _bits(a[name].values) == _bits(b[name].values), f"{name}: values differ"


def _preempt_and_resume(config, slurm_dir, local_dir, logs_dir, running) -> None:
    """SLURM run cancelled half-way, then rerun to the end; a local run without interruption."""
    slurm_log, local_log = logs_dir / "slurm.log", logs_dir / "local.log"
    proc = _launch(_preempt_command(slurm_dir, config, SLURM_PROFILE), slurm_log, _env())
    running.append(proc)
    # The uninterrupted reference, meanwhile on the submitting host.
    local = _launch(_preempt_command(local_dir, config, LOCAL_PROFILE), local_log, _env())
    running.append(local)

    def submitted():
        found = re.search(r"submitted with SLURM jobid (\d+)", slurm_log.read_text())
        return found.group(1) if found else None

    job_id = _wait_for("the train job's submission", submitted, proc, slurm_log, PREEMPT_WAIT_S)
    _wait_for(
        f"job {job_id} RUNNING past a checkpoint and step {CANCEL_AFTER_STEP}",
        lambda: (
            _job_state(job_id) == "RUNNING" and _checkpointed_step(slurm_dir) >= CANCEL_AFTER_STEP
        ),
        proc,
        slurm_log,
        PREEMPT_WAIT_S,
    )
    subprocess.run(["scancel", job_id], check=True, timeout=30)  # SIGTERM to the job's steps
    rc = proc.wait(timeout=PREEMPT_WAIT_S)
    first_log = _train_logs(slurm_dir)
    assert rc != 0, "the train job finished before scancel reached it (raise `steps`)"
    assert _job_state(job_id) == "CANCELLED"
    saved = SAVED_LINE.search(first_log)
    assert saved, f"no SIGTERM save in the train log:\n{first_log[-3000:]}"
    (state_file,) = _state_files(slurm_dir)
    with np.load(state_file, allow_pickle=False) as state:
        step = int(state["step"])
    assert step == int(saved.group(1))
    assert CANCEL_AFTER_STEP <= step < PREEMPT_CONFIG["base"]["steps"]

    rerun = subprocess.run(
        _preempt_command(slurm_dir, config, SLURM_PROFILE),
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=RUN_TIMEOUT_S,
    )
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    assert RESUMED_LINE.format(step=step) in _train_logs(slurm_dir)
    # Snakemake deletes the declared log before the rerun; the attempts log keeps both attempts
    kept = "".join(
        p.read_text() for p in (slurm_dir / "results" / "preempt" / "logs").rglob("*.attempts.log")
    )
    assert SAVED_LINE.search(kept) and RESUMED_LINE.format(step=step) in kept, kept[-3000:]
    assert "==== attempt 2 of" in kept
    assert not _state_files(slurm_dir), "resume state left behind after a finished run"
    local_text = _finish(local, local_log, "local")
    assert "resuming cell" not in _train_logs(local_dir), local_text[-2000:]
