"""Config values: non-finite numbers, YAML syntax errors, the device check, --config overrides.

Every invalid value ends in the one-message ConfigError naming the key, never in another
exception, and nothing is written under results/.
"""

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import snakemake_cmd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twoclocks.config import (
    ConfigError,
    config_for_snakemake,
    device_errors,
    load_config,
    merge_overrides,
    read_yaml,
)

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
NAN, INF = float("nan"), float("inf")


def _get(cfg, path: tuple):
    for key in path:
        cfg = cfg[key]
    return cfg


def _set(cfg: dict, path: tuple, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


def _error(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    return str(info.value)


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("base", "lr"), NAN, "base.lr = nan"),
        (("base", "lr"), INF, "base.lr = inf"),
        (("base", "weight_decay"), NAN, "base.weight_decay = nan"),
        (("base", "init_scale"), NAN, "base.init_scale = nan"),
        (("base", "train_fraction"), NAN, "base.train_fraction = nan"),
        (("base", "train_fraction"), INF, "base.train_fraction = inf"),
        (("analysis", "eps"), [0.3, NAN, 0.03], "analysis.eps[1] = nan"),
        (("grids", "relu", "axes", "weight_decay"), [0.5, -INF], "weight_decay[1] = -inf"),
        (("grids", "linear", "set", "init_scale"), NAN, "grids.linear.set.init_scale = nan"),
    ],
)
def test_non_finite_numbers_are_one_config_error_naming_the_key(path, value, key):
    msg = _error(_set(TEST_CONFIG, path, value))
    assert f"{key} is not a finite number; give a finite value" in msg
    assert "1 problem(s)" in msg  # no range error on top of it (inf > 1 for train_fraction)


def test_non_finite_numbers_are_reported_with_the_other_problems():
    cfg = _set(_set(TEST_CONFIG, ("base", "lr"), NAN), ("seeds",), [0, 0])
    cfg["base"]["modulus"] = 1
    msg = _error(cfg)
    assert "base.lr = nan" in msg and "base.modulus = 1" in msg


# -- property test: mutate the valid tiny config ---------------------------------------------


def _leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaf_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaf_paths(v, (*prefix, i))
    yield prefix


def _schema_cell_keys():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return sorted(schema["$defs"]["cell"]["properties"])


PATHS = sorted(
    {p for p in _leaf_paths(TEST_CONFIG) if p}
    | {("base", k) for k in _schema_cell_keys()}
    | {("logging", k) for k in TEST_CONFIG["logging"]}
    | {("device",), ("dtype",), ("train_threads",), ("analysis", "bootstrap_samples")},
    key=str,
)
VALUES = st.one_of(
    st.sampled_from([NAN, INF, -INF, 0, -1, 0.0, -0.5, 1e308, 2**63, True, None, "", "x", [], {}]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=4),
    st.lists(st.one_of(st.floats(), st.integers(-5, 5)), max_size=3),
)


@settings(
    derandomize=True,  # the same examples on every run: CI never depends on the draw
    database=None,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(path=st.sampled_from(PATHS), value=VALUES)
@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_any_mutation_is_valid_or_a_config_error_naming_the_key(path, value, tmp_path_factory):
    cfg = _set(TEST_CONFIG, path, value)
    workdir = tmp_path_factory.getbasetemp()
    before = sorted(workdir.rglob("results"))
    try:
        study = load_config(cfg)
    except ConfigError as err:
        key = next(str(p) for p in reversed(path) if isinstance(p, str))
        assert key in str(err), f"{path} = {value!r}: the message does not name {key!r}:\n{err}"
    else:
        for cell in study.cells:  # what validation let through is finite and usable
            for v in cell.params.values():
                assert not (isinstance(v, float) and not math.isfinite(v)), (path, value)
    assert sorted(workdir.rglob("results")) == before


DICT_PATHS = sorted(
    {p for p in _leaf_paths(TEST_CONFIG) if isinstance(_get(TEST_CONFIG, p), dict)}, key=str
)


@settings(derandomize=True, database=None, max_examples=150, deadline=None)
@given(
    path=st.sampled_from(DICT_PATHS),
    key=st.one_of(st.text(max_size=6), st.sampled_from(["lr", "a.b", "relu", "0", ""])),
    value=VALUES,
)
def test_any_added_key_is_valid_or_a_config_error(path, key, value):
    cfg = copy.deepcopy(TEST_CONFIG)
    _get(cfg, path)[key] = value
    try:
        load_config(cfg)
    except ConfigError as err:
        assert str(err).startswith("config: ") and "problem(s); nothing was run" in str(err)


# -- YAML syntax errors --------------------------------------------------------------------


def test_yaml_syntax_errors_name_file_line_and_column(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("study: t\nseeds: [0, 1\nbase:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(bad)
    msg = str(info.value)
    assert msg.startswith(f"{bad}, line 3, column 5: not valid YAML")
    assert "starts at line 2, column 8" in msg and "expected ',' or ']'" in msg
    tab = tmp_path / "tab.yaml"
    tab.write_text("study: t\nbase:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError, match=r"tab\.yaml, line 3, column 1: .*'\\t'"):
        load_config(tab)


def test_config_checker_cli_names_the_line(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("study: t\nseeds: [0\n")
    good = REPO / "config" / "test.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "twoclocks.config", str(good), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "test.yaml: ok, study 'test', 4 cell(s)" in proc.stdout
    assert f"{bad}, line 3, column 1: not valid YAML" in proc.stderr


# -- the device check ----------------------------------------------------------------------


def test_cuda_without_cuda_is_rejected_with_the_fix(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (msg,) = device_errors({"device": "cuda"})
    assert msg.startswith("device = 'cuda' but torch ")
    assert "device: auto" in msg and "requirements-cuda.lock" in msg
    assert device_errors({"device": "auto"}) == device_errors({"device": "cpu"}) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_errors({"device": "cuda"}) == []


# -- --config overrides --------------------------------------------------------------------


def test_overrides_merge_into_the_default_config(tmp_path):
    default = REPO / "config" / "config.yaml"
    merged, where = config_for_snakemake(
        {"study": "x", "logging": {"snapshot_count": 3}}, [], default
    )
    shipped = yaml.safe_load(default.read_text())
    assert merged["study"] == "x" and merged["grids"] == shipped["grids"]
    assert merged["logging"] == {**shipped.get("logging", {}), "snapshot_count": 3}
    assert where == f"{default} with --config logging, study"
    assert config_for_snakemake({}, [], default) == (shipped, str(default))
    given_cfg = {"study": "y", "seeds": [0]}
    assert config_for_snakemake(given_cfg, ["a.yaml"], default) == (given_cfg, "a.yaml")
    assert merge_overrides({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}, "d": [1]}) == {
        "a": {"b": 3, "c": 2},
        "d": [1],
    }


# -- through Snakemake: fails before any job, nothing under results/ -----------------------


def _snakemake(tmp_path, *args):
    return subprocess.run(
        snakemake_cmd(tmp_path, "--cores", "1", *args, config=None),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # > 1.5 s: full suite only (fast tier < 90 s)
def test_config_override_without_configfile_keeps_the_default_study(tmp_path):
    out = _snakemake(tmp_path, "-n", "--config", "study=override_check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "results/override_check/report/index.html" in out.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"base": {**TEST_CONFIG["base"], "lr": NAN}}, "base.lr = nan is not a finite number"),
        ({"device": "cuda"}, "device = 'cuda' but torch"),
    ],
    ids=["nan-lr", "cuda-without-cuda"],
)
@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_rejected_before_any_job_and_nothing_written(tmp_path, change, fragment):
    if "device" in change:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump({**TEST_CONFIG, **change}))
    out = _snakemake(tmp_path, "--configfile", str(cfg))
    assert out.returncode != 0
    assert fragment in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()
