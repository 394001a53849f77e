"""Snakemake `benchmark:` files: declared on train and analysis rules, shown in the report."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import snakemake_cmd

from twoclocks.report.build import benchmark_rows, runtime_summary
from twoclocks.report.html import write_report

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_train_and_analysis_jobs_write_benchmarks(tmp_path):
    out = subprocess.run(
        snakemake_cmd(tmp_path, "-n"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip().startswith("benchmark:")]
    rules = {Path(ln.split()[1]).parts[3] for ln in lines}  # results/<study>/benchmarks/<rule>
    assert {"train", "clocks", "fits"} <= rules, out.stdout


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_benchmark_figures_reach_the_runtime_table(tmp_path):
    """A real Snakemake benchmark file (a job holding ~80 MB for ~1 s) shows in the report."""
    study = tmp_path / "results" / "s"
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            f"""
            rule clocks:
                output: "results/s/runs/c/x.txt"
                benchmark: "results/s/benchmarks/clocks/relu/wd=1.0.tsv"
                shell: "{sys.executable} -c 'import time; b = bytearray(80_000_000); "
                       "time.sleep(1.5)' && touch {{output}}"
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = benchmark_rows(study / "benchmarks")
    assert row["rule"] == "clocks" and row["job"] == "relu/wd=1.0"
    assert 1.4 <= row["wall_s"] < 30
    assert row["max_rss_mb"] >= 70  # the 80 MB buffer (Snakemake reports MB)
    runtime = runtime_summary({}, study / "benchmarks")
    assert runtime["benchmarks"] == [row]
    index = write_report(
        tmp_path / "report",
        config={"study": "s", "seeds": [0]},
        provenance={},
        runtime=runtime,
        clocks=None,
        fits={},
        claims=[],
        figures={},
    )
    page = index.read_text()
    assert "benchmark:" in page and "max_rss_mb" in page and "relu/wd=1.0" in page
    bench_csv = (index.parent / "benchmarks.csv").read_text()
    assert "clocks" in bench_csv and "relu/wd=1.0" in bench_csv


def test_unreadable_or_empty_benchmark_files_are_left_out(tmp_path):
    bench = tmp_path / "benchmarks" / "fits.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("")
    assert benchmark_rows(bench.parent) == []
    bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n2.5\t0:00:02\t-\t1.0\n")
    (row,) = benchmark_rows(bench.parent)
    assert row == {
        "rule": "fits",
        "job": "",
        "wall_s": 2.5,
        "max_rss_mb": row["max_rss_mb"],
        "cpu_time_s": 1.0,
    }
    assert row["max_rss_mb"] != row["max_rss_mb"]  # "-" (not sampled) is NaN
    assert benchmark_rows(tmp_path / "missing") == []
    assert benchmark_rows(None) == []
