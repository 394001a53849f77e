"""Model registry and metric catalog: in step with the schema and the docs; a toy third model
defined only here trains through the engine."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_RELU_CELL
from torch import Tensor, nn

from twoclocks import config
from twoclocks.data.modular import make_modular
from twoclocks.train import metric_catalog as cat
from twoclocks.train import metrics as tm
from twoclocks.train import store as ts
from twoclocks.train.engine import train_cell
from twoclocks.train.models import MODELS, init_params, model_class, model_spec, register
from twoclocks.train.models.base import Forward, ModelSpec, one_hot_pairs, uniform

REPO = Path(__file__).resolve().parents[1]


def _schema_enum(key: str) -> list[str]:
    schema = config.load_schema()
    found = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == key and isinstance(v, dict) and "enum" in v:
                    found.append(v["enum"])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert found, f"schema has no enum for {key}"
    return found[0]


def test_model_registry_matches_the_schema_and_config():
    assert set(MODELS) == set(_schema_enum("model"))
    assert not hasattr(config, "MODEL_KEYS")  # config asks the registry, keeps no copy
    source = Path(config.__file__).read_text()
    assert not [k for k in MODELS if k in source]  # and never branches on a model's name
    schema = config.load_schema()["$defs"]
    props, axes = set(schema["cell"]["properties"]), set(schema["cell_key"]["enum"])
    for cls in MODELS.values():
        assert config.model_class(cls.kind) is cls
        assert set(cls.config_keys) <= props & axes, cls.kind
        assert set(cls.omitted_at_default) <= set(cls.config_keys), cls.kind
        assert set(cls.omitted_at_default) <= set(config.cell_defaults()), cls.kind


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown model 'mlp'.*deep_linear, relu_embed"):
        model_class("mlp")
    with pytest.raises(ValueError, match="registered models"):
        model_spec({"model": "mlp"}, {"task": "modular", "num_classes": 5, "vocab_size": 5})


def test_end_to_end_matrix_is_the_last_logged_matrix():
    attrs = {"task": "modular", "num_classes": 5, "vocab_size": 5}
    relu = model_spec(dict(TINY_RELU_CELL, hidden_layers=2), attrs)
    deep = model_spec({"model": "deep_linear", "depth": 3, "width": 4}, attrs)
    assert relu.matrices() == ["E", "W1", "W2", "U", "UW"]
    assert deep.matrices() == ["W1", "W2", "W3", "A"]
    for spec in (relu, deep):
        p = {k: v.double() for k, v in _params(spec).items()}
        mats = spec.matrix_tensors(p)
        assert list(mats) == spec.matrices()
        e2e = mats[spec.end_to_end_name]
        assert e2e.dtype == torch.float64 and e2e.shape[1:] == (5, spec.linear_input_dim)


def _params(spec):
    return init_params(spec, [0, 1], dtype=torch.float64)


def test_design_md_metric_table_matches_the_declarations():
    text = (REPO / "docs" / "design.md").read_text()
    m = re.search(r"<!-- metric-table:start -->\n(.*?)\n<!-- metric-table:end -->", text, re.S)
    assert m, "docs/design.md lacks the generated metric table markers"
    assert m.group(1).strip() == cat.markdown_table().strip(), (
        "docs/design.md's metric table drifted from train/metric_catalog.py; paste "
        "`python -c 'from twoclocks.train.metric_catalog import markdown_table as t; print(t())'`"
    )


def test_store_layout_comes_from_the_declarations(tmp_path):
    data = make_modular(op="add", modulus=7, train_fraction=0.5, split="unordered", split_seed=0)
    cell = dict(TINY_RELU_CELL, steps=3, log_dense_steps=3, snapshot_count=2, seeds=[0])
    ds = ts.open_trajectory(train_cell(cell, data, tmp_path / "t" / "trajectory.zarr"))
    spec = model_spec(cell, data.attrs)
    declared = cat.metrics_for(spec)
    metric_vars = [v for v in ds.data_vars if v != "diverged_step" and not v.startswith("snap_")]
    assert sorted(metric_vars) == sorted(m.name for m in declared)
    assert ds.attrs["model"] == "relu_embed" and ts.end_to_end_matrix(ds) == "UW"
    del ds.attrs["end_to_end_matrix"]  # older stores: the end-to-end map is the last matrix
    assert ts.end_to_end_matrix(ds) == spec.end_to_end_name == "UW"
    for m in declared:
        assert ds[m.name].attrs == {"long_name": m.long_name, "units": m.units}
        assert ds[m.name].dims == ("seed", "step", *([m.dim] if m.dim else []))


# --- a toy third model, defined only in this file ---------------------------------------------


@dataclass(frozen=True)
class ToyTanhSpec(ModelSpec):
    """One-hot token pairs -> tanh hidden layer -> linear head (blocks V, O)."""

    kind = "toy_tanh"
    config_keys = ("toy_width",)
    end_to_end_name = "OV"

    toy_width: int = 4

    @classmethod
    def from_params(cls, params, common):
        return cls(toy_width=int(params["toy_width"]), **common)

    def blocks(self):
        return ["V", "O"]

    def init_member(self, gen, scale):
        d = self.linear_input_dim
        v = uniform(gen, (self.toy_width, d), d**-0.5) * scale
        o = uniform(gen, (self.num_classes, self.toy_width), self.toy_width**-0.5) * scale
        return {"V": v, "O": o}

    def encode_inputs(self, x, dtype):
        return one_hot_pairs(x, int(self.vocab_size), dtype)

    def forward(self, params, x):
        m = params["V"].shape[0]
        pre = torch.bmm(x.expand(m, *x.shape), params["V"].transpose(1, 2))
        h = torch.tanh(pre)
        return Forward(torch.bmm(h, params["O"].transpose(1, 2)), lambda: x, [pre], h)

    def end_to_end_factors(self, params):
        return [params["V"], params["O"]]

    @classmethod
    def extra_metrics(cls):
        def saturation(c) -> Tensor:
            return (c.pre.abs() > 2.0).double().flatten(1).mean(1)

        return [cat.Metric("tanh_saturation", "fraction of |pre-activation| > 2", saturation)]

    def reference(self):
        return ToyTanhNet(self)


class ToyTanhNet(nn.Module):
    def __init__(self, spec: ToyTanhSpec):
        super().__init__()
        self.spec = spec
        self.v = nn.Linear(spec.linear_input_dim, spec.toy_width, bias=False)
        self.o = nn.Linear(spec.toy_width, spec.num_classes, bias=False)

    def block_params(self):
        return {"V": self.v.weight, "O": self.o.weight}

    def forward(self, x):
        h = self.spec.encode_inputs(x, self.v.weight.dtype)
        return self.o(torch.tanh(self.v(h)))


@pytest.fixture
def toy_model():
    register(ToyTanhSpec)
    yield ToyTanhSpec
    MODELS.pop(ToyTanhSpec.kind)


def test_a_toy_model_added_through_the_registry_trains(toy_model, tmp_path):
    data = make_modular(op="add", modulus=7, train_fraction=0.6, split="ordered", split_seed=0)
    relu_keys = model_class("relu_embed").config_keys
    cell = {k: v for k, v in TINY_RELU_CELL.items() if k not in relu_keys}
    cell.update(model="toy_tanh", toy_width=6, steps=30, lr=0.05, weight_decay=0.0, seeds=[0, 1])
    cell.update(log_dense_steps=5, log_every_steps=5, snapshot_count=3)
    out = train_cell(cell, data, tmp_path / "toy" / "trajectory.zarr")
    ds = ts.open_trajectory(out).load()
    assert list(ds["block"].values) == ["V", "O"]
    assert list(ds["matrix"].values) == ["V", "O", "OV"]
    assert ds.sizes["sv"] == min(7, 14)
    for name in ("tanh_saturation", "fourier_gap", "gate_flip_fraction", "delta_norm"):
        assert (name in ds) == (name == "tanh_saturation"), name
    sat = ds["tanh_saturation"].values
    assert np.isfinite(sat).all() and ((sat >= 0) & (sat <= 1)).all()
    loss = ds["train_loss"].values
    assert np.isfinite(loss).all() and (loss[:, -1] < loss[:, 0]).all()
    # the logged end-to-end spectrum is the product O V of the last snapshot
    o = torch.as_tensor(ds["snap_O"].values[:, -1]).double()
    v = torch.as_tensor(ds["snap_V"].values[:, -1]).double()
    want = tm.singular_values(o @ v).numpy()  # float32 run: Gram eigenvalues, ~1e-8 s_max
    np.testing.assert_allclose(
        ds["singular_values"].values[:, -1], want, rtol=1e-5, atol=1e-6 * want.max()
    )
    ts.validate_store(out, _layout_of(ds))
    # the plain reference computes the stacked model's function
    spec = model_spec(cell, data.attrs)
    p = init_params(spec, [3, 4], dtype=torch.float64)
    x = torch.as_tensor(data["x_test"].values)
    stacked = spec.forward(p, spec.encode_inputs(x, torch.float64)).logits
    ref = spec.reference_of_member(p, 1)
    torch.testing.assert_close(ref(x), stacked[1], rtol=1e-12, atol=1e-12)


def _schema_with_the_toy_model(tmp_path) -> Path:
    """The shipped schema plus the toy model's entry: its name and its one key."""
    schema = config.load_schema()
    cell = schema["$defs"]["cell"]["properties"]
    cell["model"]["enum"].append("toy_tanh")
    cell["toy_width"] = {"type": "integer", "minimum": 1, "default": 4}
    schema["$defs"]["cell_key"]["enum"].append("toy_width")
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    return path


def test_a_toy_model_is_its_module_plus_its_schema_entry(toy_model, tmp_path):
    """config.py needs no edit: keys, block names and checks come from the registered class."""
    schema = _schema_with_the_toy_model(tmp_path)
    study = {
        "study": "toy",
        "seeds": [0],
        "base": {"model": "toy_tanh", "modulus": 7, "steps": 10},
        "grids": {"g": {"axes": {"toy_width": [3, 5]}}},
        "logging": {"snapshot_count": 2},
    }
    cells = config.load_config(study, schema_path=schema).cells
    assert [c.params["toy_width"] for c in cells] == [3, 5]
    assert [c.id for c in cells] == ["g/toy_width=3", "g/toy_width=5"]
    for key in ("embed_dim", "depth", "hidden_width"):  # other models' keys stay out
        assert key not in cells[0].params
    assert config.model_blocks(cells[0].params) == ["V", "O"]
    frozen = {**study, "base": {**study["base"], "frozen_blocks": ["V", "E"]}}
    with pytest.raises(config.ConfigError, match=r"frozen_blocks names \['E'\].*\['V', 'O'\]"):
        config.load_config(frozen, schema_path=schema)
    teacher = {**study, "base": {**study["base"], "task": "teacher"}}
    config.load_config(teacher, schema_path=schema)  # the toy does not declare token_inputs_only
    bad = {**study, "grids": {"g": {"axes": {"depth": [2]}}}}
    with pytest.raises(config.ConfigError, match=r"axes.depth: does not apply .*'toy_tanh'"):
        config.load_config(bad, schema_path=schema)


def test_model_checks_come_from_the_model_class(toy_model, tmp_path, monkeypatch):
    """A model's `check_params` and `token_inputs_only` reach the config's one error message."""
    schema = _schema_with_the_toy_model(tmp_path)
    monkeypatch.setattr(
        ToyTanhSpec, "check_params", classmethod(lambda cls, p: [f"toy_width {p['toy_width']}"])
    )
    monkeypatch.setattr(ToyTanhSpec, "token_inputs_only", True)
    study = {
        "study": "toy",
        "seeds": [0],
        "base": {"model": "toy_tanh", "task": "teacher", "steps": 10},
        "grids": {"g": {"axes": {"toy_width": [3]}}},
        "logging": {"snapshot_count": 2},
    }
    with pytest.raises(config.ConfigError) as err:
        config.load_config(study, schema_path=schema)
    assert "cell g/toy_width=3: toy_width 3" in str(err.value)
    assert "'toy_tanh' needs token inputs" in str(err.value)


def _layout_of(ds):
    """A StoreLayout matching a store's own coordinates and metric variables."""
    metrics = {
        n: (next((d for d in ds[n].dims if d not in ("seed", "step")), None), "", "")
        for n in ds.data_vars
        if n != "diverged_step" and not n.startswith("snap_")
    }
    snaps = {n[5:]: tuple(ds[n].shape[2:]) for n in ds.data_vars if n.startswith("snap_")}
    return ts.StoreLayout(
        seeds=[int(s) for s in ds["seed"].values],
        steps=ds["step"].values,
        tau=ds["tau"].values,
        blocks=list(ds["block"].values),
        matrices=list(ds["matrix"].values),
        sv_count=ds.sizes["sv"],
        checkpoint_steps=ds["checkpoint_step"].values,
        metrics=metrics,
        snapshots=snaps,
    )


def test_task_registry_matches_the_schema_and_owns_dataset_generation():
    from twoclocks.data.io import build_dataset, data_params
    from twoclocks.data.tasks import TASKS, task

    assert set(TASKS) == set(_schema_enum("task"))
    schema = config.load_schema()["$defs"]
    props, axes = set(schema["cell"]["properties"]), set(schema["cell_key"]["enum"])
    for t in TASKS.values():
        assert set(t.config_keys + t.extra_keys) <= props & axes, t.name
    with pytest.raises(ValueError, match=r"unknown task 'parity'.*modular, teacher"):
        task("parity")
    with pytest.raises(ValueError, match="registered tasks"):
        build_dataset({"task": "parity"})
    # Dispatch goes through the registry: the dataset of a cell is its task's generator output.
    cell = config.load_config(REPO / "config" / "test.yaml").cells[0].params
    spec = data_params(cell)
    assert tuple(spec) == ("task", *task(cell["task"]).config_keys)
    made = task(cell["task"]).make(**{k: v for k, v in spec.items() if k != "task"})
    assert build_dataset(spec).identical(made)
    assert cell["dataset_id"] == task(cell["task"]).dataset_id(cell)
