"""The DAG: every shipped config dry-runs, lint and format gates, bad configs touch nothing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


def snakemake(*args, cwd=REPO, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_dry_runs(config, tmp_path):
    out = snakemake("-n", "--configfile", str(config), "--directory", str(tmp_path))
    assert "train" in out.stdout and "report" in out.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # > 1.5 s: full suite only (fast tier < 90 s)
def test_default_config_is_used_without_configfile(tmp_path):
    out = snakemake("-n", "--directory", str(tmp_path))
    import yaml

    study = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["study"]
    assert f"results/{study}/" in out.stdout


def test_lint_is_clean(tmp_path):
    out = snakemake(
        "--lint",
        "--configfile",
        str(REPO / "config" / "test.yaml"),
        "--directory",
        str(tmp_path),
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_snakefmt_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests", "scripts"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rejected_config_fails_fast_and_touches_nothing(tmp_path):
    results = tmp_path / "results" / "keep"
    results.mkdir(parents=True)
    (results / "precious.txt").write_text("computed earlier")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "study: keep\nseeds: [0]\ngrids:\n  g:\n    axes:\n      train_fraction: [0.3, 1.5]\n"
    )
    out = snakemake(
        "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path), check=False
    )
    assert out.returncode != 0
    assert "grids.g.axes.train_fraction[1] = 1.5" in out.stdout + out.stderr
    assert sorted(p.name for p in results.iterdir()) == ["precious.txt"]
    assert (results / "precious.txt").read_text() == "computed earlier"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text().splitlines()
    block = readme[readme.index("```bash") + 1 : readme.index("```", readme.index("```bash") + 1)]
    assert len(block) == 2
    run, test = block
    assert "snakemake --cores all" in run and "pip install" in run
    assert "pytest" in test
    assert test in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_is_usage_in_at_most_150_lines_and_its_doc_links_exist():
    """Detail lives in docs/ (docs/usage.md); the README keeps the commands and points there."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for doc in set(re.findall(r"`(docs/[\w.]+\.md)`", readme)):
        assert (REPO / doc).exists(), doc


@pytest.mark.slow  # > 1.5 s: full suite only (fast tier < 90 s)
def test_cell_ids_nested_in_other_cell_ids_dry_run(tmp_path):
    """`g/init=1.0` and `g/init=1.0/split=ordered` must not give nested directory outputs."""
    cfg = tmp_path / "nested.yaml"
    cfg.write_text(
        "study: nested\nseeds: [0]\ngrids:\n  g:\n    axes:\n      init_scale: [0.3, 1.0]\n"
        "extra_cells:\n  - {grid: g, set: {init_scale: 1.0, split: ordered}}\n"
    )
    out = snakemake("-n", "--configfile", str(cfg), "--directory", str(tmp_path))
    assert out.stdout.count("rule train:") == 3
