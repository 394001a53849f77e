"""Config validation: every bad input fails with a message naming key, value and fix."""

import copy

import pytest

from twoclocks.config import ConfigError, load_config

BASE = {
    "study": "unit",
    "seeds": [0, 1],
    "grids": {"relu": {"axes": {"weight_decay": [0.5, 1.0]}}},
}


def with_changes(**changes):
    cfg = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return cfg


def rejects(cfg, *fragments):
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in:\n{msg}"
    return msg


def test_valid_config_expands_cells_with_readable_ids_and_stable_hashes():
    study = load_config(BASE)
    assert [c.id for c in study.cells] == ["relu/wd=0.5", "relu/wd=1.0"]
    again = load_config(copy.deepcopy(BASE))
    assert [c.hash for c in study.cells] == [c.hash for c in again.cells]
    assert len({c.hash for c in study.cells}) == 2
    cell = study.cells[0]
    assert cell.params["weight_decay"] == 0.5 and cell.params["seeds"] == [0, 1]
    assert cell.axes == {"weight_decay": 0.5}
    assert "depth" not in cell.params  # keys of other models are not carried
    # the study name is not part of the run's identity, so equal cells share a hash
    other = load_config({**copy.deepcopy(BASE), "study": "other"})
    assert other.cells[0].hash == cell.hash


def test_cartesian_product_and_extra_cells():
    cfg = with_changes(
        grids__relu__axes={"weight_decay": [0.5, 1.0], "train_fraction": [0.3, 0.5]},
        extra_cells=[{"grid": "relu", "set": {"lr": 0.003}}],
    )
    study = load_config(cfg)
    assert len(study.cells) == 5
    assert study.cells[1].id == "relu/wd=0.5/frac=0.5"
    assert study.cells[-1].id == "relu/lr=0.003"
    assert len(study.datasets) == 2


def test_unknown_top_level_key():
    rejects(with_changes(foo=1), "unknown key(s) 'foo'", "allowed keys")


def test_unknown_cell_key_in_base():
    rejects(with_changes(base={"weight_dekay": 1.0}), "base", "'weight_dekay'", "allowed keys")


def test_unknown_axis_key():
    rejects(with_changes(grids__relu__axes={"dropout": [0.1]}), "key 'dropout' is not allowed")


def test_wrong_type():
    rejects(with_changes(base={"lr": "fast"}), "base.lr = 'fast'", "wrong type", "number")


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_train_fraction_outside_open_interval(value):
    cfg = with_changes(grids__relu__axes={"train_fraction": [0.3, value]})
    rejects(cfg, f"grids.relu.axes.train_fraction[1] = {value!r}", "out of range")


def test_modulus_below_two():
    rejects(with_changes(base={"modulus": 1}), "base.modulus = 1", "must be >= 2")


@pytest.mark.parametrize("op", ["mul", "div"])
def test_mul_div_need_prime_modulus(op):
    rejects(with_changes(base={"op": op, "modulus": 12, "combine": "concat"}), op, "prime modulus")


def test_sum_combine_with_non_commutative_op():
    rejects(with_changes(base={"op": "sub"}), "not commutative", "combine: concat")


@pytest.mark.parametrize(
    ("levels", "fragment"),
    [([1e-2, 0.0], "non-positive"), ([1e-3, 1e-2], "not strictly decreasing")],
)
@pytest.mark.parametrize("key", ["eps", "eta"])
def test_level_grids(key, levels, fragment):
    rejects(with_changes(analysis={key: levels}), f"analysis.{key}", fragment)


def test_empty_grids():
    rejects(with_changes(grids={}), "grids is empty")


def test_empty_axis():
    rejects(with_changes(grids__relu__axes={"weight_decay": []}), "weight_decay is empty")


def test_duplicate_seeds():
    rejects(with_changes(seeds=[0, 1, 1]), "seeds = [0, 1, 1]", "duplicate seed(s) [1]")


def test_unknown_model_kind():
    rejects(with_changes(base={"model": "mlp"}), "base.model = 'mlp'", "relu_embed")


def test_depth_below_one():
    cfg = with_changes(grids={"lin": {"set": {"model": "deep_linear"}, "axes": {"depth": [0, 2]}}})
    rejects(cfg, "grids.lin.axes.depth[0] = 0", "must be >= 1")


def test_axis_that_does_not_apply_to_the_model():
    rejects(with_changes(grids__relu__axes={"depth": [2]}), "does not apply", "relu_embed")


def test_cell_id_collision():
    cfg = with_changes(extra_cells=[{"grid": "relu", "set": {"weight_decay": 0.5}}])
    rejects(cfg, "'relu/wd=0.5' collides")


def test_extra_cell_in_unknown_grid():
    cfg = with_changes(extra_cells=[{"grid": "nope", "set": {"lr": 0.1}}])
    rejects(cfg, "extra_cells[0].grid = 'nope'", "allowed: relu")


def test_repeated_axis_value():
    rejects(with_changes(grids__relu__axes={"weight_decay": [1.0, 1.0]}), "repeats a value")


def test_all_problems_reported_at_once():
    cfg = with_changes(seeds=[3, 3], analysis={"eps": [1e-3, 1e-1]})
    msg = rejects(cfg, "2 problem(s)")
    assert "duplicate seed" in msg and "strictly decreasing" in msg


def test_missing_file_and_bad_yaml(tmp_path):
    rejects(str(tmp_path / "absent.yaml"), "no such config file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    rejects(str(bad), "not valid YAML")


def test_schema_analysis_keys_match_the_clock_defaults():
    """The schema and the analysis code must not drift apart (PyPSA-style drift check)."""
    from twoclocks.analyze.clocks import DEFAULT_SETTINGS
    from twoclocks.config import load_schema

    schema_keys = set(load_schema()["properties"]["analysis"]["properties"])
    assert schema_keys == set(DEFAULT_SETTINGS)


def test_shipped_configs_are_valid_and_study_names_unique():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "config").glob("*.yaml"))
    names = [load_config(str(p)).name for p in configs]
    assert len(names) == len(set(names)) >= 3


def test_stack_axes_group_cells_into_one_train_job():
    cfg = with_changes(
        stack_axes=["weight_decay"],
        grids__relu__axes={"weight_decay": [0.5, 1.0], "train_fraction": [0.3, 0.5]},
    )
    study = load_config(cfg)
    assert {g: [c.id for c in cs] for g, cs in study.groups.items()} == {
        "relu/frac=0.3": ["relu/wd=0.5/frac=0.3", "relu/wd=1.0/frac=0.3"],
        "relu/frac=0.5": ["relu/wd=0.5/frac=0.5", "relu/wd=1.0/frac=0.5"],
    }
    # stacking changes neither a cell's identity nor its hash
    plain = load_config(with_changes(grids__relu__axes=cfg["grids"]["relu"]["axes"]))
    assert [c.hash for c in plain.cells] == [c.hash for c in study.cells]
    assert all(len(cs) == 1 for cs in plain.groups.values())


def test_stack_grids_merges_groups_of_different_grids_with_the_same_shapes():
    grids = {
        "relu": {"axes": {"weight_decay": [0.5, 1.0]}},
        "relu_wd0": {"axes": {"weight_decay": [0.0]}},  # same model: joins relu's job
        "wide": {"set": {"hidden_width": 32}, "axes": {"weight_decay": [0.0]}},  # other shapes
    }
    extra = [{"grid": "relu", "set": {"weight_decay": 0.3}}]
    cfg = with_changes(stack_axes=["weight_decay"], grids=grids, extra_cells=extra)
    apart = load_config(cfg)
    assert len(apart.groups) == 4  # default: one job per grid (and per extra cell)
    study = load_config(dict(cfg, stack_grids=True))
    assert {g: [c.id for c in cs] for g, cs in study.groups.items()} == {
        "relu+relu_wd0": ["relu/wd=0.5", "relu/wd=1.0", "relu_wd0/wd=0.0"],
        "wide": ["wide/wd=0.0"],
        "relu/wd=0.3": ["relu/wd=0.3"],
    }
    # merging jobs changes neither a cell's identity nor its hash
    assert [c.hash for c in apart.cells] == [c.hash for c in study.cells]
    # a grid whose non-stacked axes differ stays apart
    cfg = with_changes(
        stack_axes=["weight_decay"],
        stack_grids=True,
        grids={
            "a": {"axes": {"weight_decay": [0.5], "lr": [1e-3, 2e-3]}},
            "b": {"axes": {"weight_decay": [1.0], "lr": [1e-3]}},
        },
    )
    assert {g: len(cs) for g, cs in load_config(cfg).groups.items()} == {
        "a/lr=0.001+b": 2,
        "a/lr=0.002": 1,
    }


def test_stack_axes_only_hyperparameters():
    rejects(with_changes(stack_axes=["train_fraction"]), "stack_axes[0] = 'train_fraction'")


def test_empty_split_is_rejected():
    cfg = with_changes(base={"modulus": 2, "train_fraction": 0.1, "fourier_keep": 1})
    rejects(cfg, "leaves the train split empty")


def test_int_and_float_spellings_are_one_value():
    rejects(with_changes(grids__relu__axes={"weight_decay": [1, 1.0]}), "repeats a value")
    study = load_config(with_changes(grids__relu__axes={"weight_decay": [1]}))
    assert study.cells[0].id == "relu/wd=1.0"
    assert study.cells[0].hash == load_config(BASE).cells[1].hash


def test_float_seeds_become_ints():
    assert load_config(with_changes(seeds=[0.0, 1.0])).cells[0].params["seeds"] == [0, 1]
