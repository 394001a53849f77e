"""Every default has one home, the config schema: the code reads it, and values do not drift."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from twoclocks.config import cell_default, cell_defaults, load_config, load_schema, section_default
from twoclocks.report import figures as F
from twoclocks.train.models import model_spec
from twoclocks.train.optim import StackedAdamW, StackedSGD, make_optimizer

SRC = Path(__file__).resolve().parents[1] / "src" / "twoclocks"
MINIMAL = {"study": "d", "seeds": [0], "grids": {"g": {"axes": {"weight_decay": [1.0]}}}}


def _fallbacks(path: Path):
    """(line, key, literal) for every `x.get("key", <literal>)` in a source file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
        ):
            try:
                yield node.lineno, node.args[0].value, ast.literal_eval(node.args[1])
            except ValueError:  # not a literal: e.g. cell_default(...)
                continue


def test_literal_fallbacks_in_the_code_equal_the_schema_defaults():
    """A `params.get("betas", (0.9, 0.999))` next to a schema default of [0.9, 0.98] is drift.

    analyze/ is left out: its fallbacks read old stores (no `lr`: clock time in steps), which is
    a different meaning from a config default.
    """
    schema = load_schema()
    top = {k: s["default"] for k, s in schema["properties"].items() if "default" in s}
    defaults = {**top, **cell_defaults()}
    drift, checked = [], 0
    for path in sorted(SRC.rglob("*.py")):
        if "analyze" in path.parts:
            continue
        for line, key, value in _fallbacks(path):
            if key in defaults:
                checked += 1
                want, value = defaults[key], list(value) if isinstance(value, tuple) else value
                if value != want or type(value) is not type(want):  # 1 vs 1.0: another hash
                    drift.append(f"{path.relative_to(SRC)}:{line} {key}={value!r}, schema {want!r}")
    assert checked >= 3  # the scan sees the engine's fallbacks
    assert not drift, drift


def test_loaded_config_holds_every_schema_default_value():
    config = load_config(MINIMAL).config
    schema = load_schema()
    for key, sub in schema["properties"].items():
        if "default" in sub and not isinstance(sub["default"], dict):
            assert config[key] == sub["default"], key
    for section in ("logging", "report", "analysis"):
        for key, sub in schema["properties"][section]["properties"].items():
            assert config[section][key] == sub["default"], f"{section}.{key}"
    for key, value in cell_defaults().items():
        assert config["base"][key] == value, key


def test_optimizer_falls_back_to_the_schema_values():
    params = {"w": torch.zeros(2, 3, 3)}
    adam = make_optimizer({"lr": 0.1}, params)
    assert isinstance(adam, StackedAdamW)
    assert [adam.beta1, adam.beta2] == cell_default("betas") == [0.9, 0.98]
    assert adam.eps == cell_default("adam_eps")
    sgd = make_optimizer({"lr": 0.1, "optimizer": "sgd"}, params)
    assert isinstance(sgd, StackedSGD) and sgd.momentum == cell_default("momentum")
    wd = cell_default("weight_decay")
    assert torch.all(torch.as_tensor(adam.weight_decay) == wd)


def test_model_spec_falls_back_to_the_schema_values():
    attrs = {"task": "teacher", "num_classes": 4}
    spec = model_spec({"model": "deep_linear", "depth": 2, "width": 3}, attrs, input_dim=5)
    assert spec.balanced_init is cell_default("balanced_init") is True
    tokens = {"task": "modular", "num_classes": 7, "vocab_size": 7}
    relu = model_spec({"model": "relu_embed", "embed_dim": 4, "hidden_width": 5}, tokens)
    assert (relu.combine, relu.hidden_layers, relu.bias) == tuple(
        cell_default(k) for k in ("combine", "hidden_layers", "bias")
    )


def test_every_analysis_key_has_its_schema_default_equal_to_the_code():
    """The `analysis` section's defaults live in the schema and equal the settings the clocks
    and fits use when a key is left out (analyze.clocks.DEFAULT_SETTINGS): no key without one,
    no drift, and a config without an analysis section resolves to exactly those values."""
    from twoclocks.analyze.clocks import DEFAULT_SETTINGS, resolve_settings

    props = load_schema()["properties"]["analysis"]["properties"]
    assert set(props) == set(DEFAULT_SETTINGS)
    missing = sorted(k for k, sub in props.items() if "default" not in sub)
    assert not missing, f"analysis keys without a schema default: {missing}"
    drift = {k: (props[k]["default"], v) for k, v in DEFAULT_SETTINGS.items()}
    drift = {k: pair for k, pair in drift.items() if pair[0] != pair[1]}
    assert not drift, f"schema default vs DEFAULT_SETTINGS: {drift}"
    loaded = load_config(MINIMAL).config["analysis"]
    assert loaded == {k: sub["default"] for k, sub in props.items()}
    assert resolve_settings(loaded) == resolve_settings({})


def test_report_thinning_default_is_the_schema_value():
    """Figures thin to `report.max_points_per_line`; its default is the 400 the figures used."""
    assert F.MAX_POINTS == section_default("report", "max_points_per_line") == 400


def test_unknown_default_names_the_keys_that_have_one():
    with pytest.raises(KeyError, match="no default in the schema"):
        cell_default("dtype")
