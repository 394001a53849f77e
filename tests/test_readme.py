"""The README's code runs: every ```python block against a short run of the default study, and
every ```bash block parses, names files that exist and only flags its programs accept.

The python blocks run statement by statement in the folder that holds `results/<study>`; each
expression statement must give something non-empty (a selection that matches no cell, such as
`weight_decay == 1.0` on a study of weight decays 0.45-0.6, fails here, not silently).
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def blocks(language: str, text: str | None = None) -> list[str]:
    """The code of every fenced block of `language` in the README (or `text`)."""
    text = README.read_text() if text is None else text
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """The simple commands of a bash block (lines joined at `\\`, split at `&&`, `;`, `|`),
    comments dropped, as argument lists."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for w in words + ["&&"]:
            if w in {"&&", ";", "|", "||"}:
                if current:
                    out.append(current)
                current = []
            else:
                current.append(w)
    return out


def nonempty(value) -> bool:
    """Whether a value a README line shows has any content (xarray, pandas, numpy, sized)."""
    sizes = getattr(value, "sizes", None)
    if isinstance(sizes, dict) or hasattr(sizes, "values"):
        return all(int(n) > 0 for n in sizes.values()) and bool(sizes)
    size = getattr(value, "size", None)
    if isinstance(size, int):
        return size > 0
    try:
        return len(value) > 0
    except TypeError:
        return True


def test_the_readme_has_code_to_check():
    assert blocks("python") and blocks("bash")


def test_the_command_splitter_and_emptiness_check():
    assert commands("pip install -e . && snakemake --cores all  # run\nsnakemake -n \\\n  -p") == [
        ["pip", "install", "-e", "."],
        ["snakemake", "--cores", "all"],
        ["snakemake", "-n", "-p"],
    ]
    import numpy as np
    import xarray as xr

    ds = xr.Dataset({"x": (("cell", "step"), np.zeros((2, 3)))})
    assert nonempty(ds) and nonempty(ds.x) and nonempty([1])
    assert not nonempty(ds.isel(cell=[])) and not nonempty(ds.x.isel(cell=[]))
    assert not nonempty(ds.x.to_pandas().iloc[:0]) and nonempty(3.0)


def test_bash_blocks_parse_and_name_files_that_exist():
    for block in blocks("bash"):
        done = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
        assert done.returncode == 0, f"{done.stderr}\n{block}"
        for cmd in commands(block):
            for word in cmd:
                value = word.split("=", 1)[-1]
                if re.match(r"(config|workflow|scripts|tests|docs)/", value):
                    assert (REPO / value).exists(), f"{value} (in {' '.join(cmd)}) does not exist"
            if cmd[:2] == ["python", "-m"] and cmd[2].startswith("twoclocks."):
                import importlib.util

                assert importlib.util.find_spec(cmd[2]), f"no module {cmd[2]}"


@functools.cache
def _help(program: tuple[str, ...]) -> str:
    done = subprocess.run(
        [*program, "--help"], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow  # starts snakemake and each module's --help: ~20 s
def test_bash_blocks_use_only_flags_their_programs_accept():
    checked = 0
    for block in blocks("bash"):
        for cmd in commands(block):
            if cmd[0] == "snakemake" and shutil.which("snakemake"):
                program: tuple[str, ...] = ("snakemake",)
            elif cmd[:2] == ["python", "-m"] and cmd[2].startswith("twoclocks."):
                program = (sys.executable, "-m", cmd[2])
            else:
                continue
            text = _help(program)
            for flag in (w.split("=", 1)[0] for w in cmd if re.match(r"--?[A-Za-z]", w)):
                assert re.search(rf"(^|[\s,\[]){re.escape(flag)}([\s,=\]]|$)", text, re.M), (
                    f"{' '.join(cmd)}: {program[-1]} has no flag {flag}"
                )
                checked += 1
    assert checked


def _short_default_study(root: Path) -> str:
    """Train the default study's cells (config/config.yaml) for a few steps and publish them
    under root/results/<study>/runs/<cell>/ as the pipeline does; returns the study name."""
    import torch

    from twoclocks.config import load_config
    from twoclocks.data.io import build_dataset, data_params
    from twoclocks.train.group import train_group
    from twoclocks.train.manifest import write_manifest

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["base"]["steps"] = 40
    for grid in config["grids"].values():
        grid.get("set", {}).pop("steps", None)
    config["logging"].update(log_dense_steps=10, log_every_steps=10, snapshot_count=2)
    study = load_config(config)
    results = root / "results" / study.name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for gid, cells in study.groups.items():
            data = build_dataset(data_params(cells[0].params))
            axes = {c.id: c.axes for c in cells}
            paths = train_group([c.params for c in cells], data, root / "tmp" / gid, axes=axes)
            for cid, path in paths.items():
                run = results / "runs" / cid
                run.mkdir(parents=True)
                path.rename(run / "trajectory.zarr")
                write_manifest(run / "trajectory.zarr", run / "manifest.json")  # as unstack does
    finally:
        torch.set_num_threads(threads)
    return study.name


@pytest.mark.slow  # trains the default study's cells for 40 steps: ~15 s
def test_python_blocks_run_on_the_default_study(tmp_path, monkeypatch):
    _short_default_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    for block in blocks("python"):
        namespace: dict = {"__name__": "__readme__"}
        for stmt in ast.parse(block).body:
            line = ast.get_source_segment(block, stmt)
            if isinstance(stmt, ast.Expr):
                value = eval(compile(ast.Expression(stmt.value), "README.md", "eval"), namespace)
                assert nonempty(value), f"README line gives nothing: {line}"
            else:
                exec(compile(ast.Module([stmt], []), "README.md", "exec"), namespace)
