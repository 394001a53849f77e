"""scripts/gpu_check.sh: valid bash, a dry run that lists every step, a clear stop without a GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_dry_run_lists_the_steps_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True, text=True, check=True
    )
    text = proc.stdout
    for want in (
        "pip install -c requirements-cuda.lock",
        "twoclocks.bench --device cuda",
        "paper study with device cuda",
        "tests/test_gpu.py -m gpu",
        "== figures",
    ):
        assert want in text, want
    assert not out.exists()


def test_without_a_gpu_it_stops_with_a_clear_error(tmp_path):
    """No nvidia-smi on PATH (whatever this machine has): exit 1 before installing anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "date", "dirname", "sed", "mkdir", "python"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = dict(os.environ, PATH=str(bin_dir))
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(SCRIPT), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert "no NVIDIA GPU here: nvidia-smi not found" in proc.stderr
    assert "install" not in proc.stdout
