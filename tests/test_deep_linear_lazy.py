"""Deep linear networks in the lazy regime (issue 13): the n < d teacher task, orthogonal init with
per-layer scales, the spurious energy ||A P_perp||_F^2 and its representation clock; the
lazy-rich knob on the scale-free spurious fraction and the depth / balance claim (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from twoclocks.analyze import claims as C
from twoclocks.analyze.claims import dln_lazy_rich as K
from twoclocks.analyze.clocks import extract_clocks, structural_gaps
from twoclocks.config import ConfigError, load_config
from twoclocks.data.io import build_dataset, data_params
from twoclocks.train import metric_catalog as cat
from twoclocks.train.engine import train_cell
from twoclocks.train.models import DeepLinearSpec, init_params, model_spec
from twoclocks.train.models.base import linear_bound, uniform
from twoclocks.train.models.deep_linear import (
    input_complement_projector,
    orthogonal,
    spurious_energy,
)
from twoclocks.train.store import open_trajectory


def _config(**base) -> dict:
    cell = dict(
        task="teacher",
        model="deep_linear",
        input_dim=12,
        num_classes=4,
        teacher_rank=2,
        train_size=8,
        test_size=64,
        width=12,
        depth=2,
        init_scheme="orthogonal",
        balanced_init=False,
        steps=10,
    )
    cell.update(base)
    return dict(
        study="t",
        seeds=[0],
        device="cpu",
        logging=dict(log_dense_steps=5, log_every_steps=5, snapshot_count=2),
        base=cell,
        grids={"g": {"axes": {"weight_decay": [0.1]}}},
    )


def _spec(train_size: int = 5, input_dim: int = 9, **kw) -> DeepLinearSpec:
    return DeepLinearSpec(
        num_classes=3,
        input_kind="dense",
        input_dim=input_dim,
        depth=kw.pop("depth", 3),
        width=kw.pop("width", 7),
        spurious_inputs=train_size < input_dim,
        **kw,
    )


# --- config: n < d, init keys ------------------------------------------------------------------
def test_teacher_task_allows_fewer_samples_than_dimensions():
    study = load_config(_config())
    (cell,) = study.cells
    assert cell.params["train_size"] < cell.params["input_dim"]
    assert cell.params["init_scheme"] == "orthogonal"
    data = build_dataset(data_params(cell.params))
    assert data.sizes["train"] == 8 and data.sizes["feature"] == 12


def test_layer_init_scales_must_match_depth():
    with pytest.raises(ConfigError) as err:
        load_config(_config(layer_init_scales=[1.0, 2.0, 3.0]))
    msg = str(err.value)
    assert "layer_init_scales has 3 value(s) for depth = 2" in msg
    assert "one scale per layer" in msg


def test_unknown_init_scheme_names_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(_config(init_scheme="xavier"))
    assert "init_scheme = 'xavier' is not allowed" in str(err.value)
    assert "orthogonal" in str(err.value)


def test_init_keys_at_their_defaults_leave_the_cell_hash_unchanged():
    """Existing studies keep their params and hash: the new keys are omitted at the default."""
    plain = load_config(_config(init_scheme="uniform")).cells[0].params
    base = _config()
    del base["base"]["init_scheme"]
    implicit = load_config(base).cells[0].params
    assert "init_scheme" not in plain and "layer_init_scales" not in plain
    assert plain["cell_hash"] == implicit["cell_hash"]
    ortho = load_config(_config()).cells[0].params
    assert ortho["cell_hash"] != plain["cell_hash"]


# --- init ----------------------------------------------------------------------------------------
def test_orthogonal_init_has_unit_singular_values_times_the_scales():
    spec = _spec(init_scheme="orthogonal", layer_init_scales=(1.0, 0.5, 2.0))
    p = init_params(spec, [0, 1], [1.0, 0.3], dtype=torch.float64)
    for k, layer in enumerate((1.0, 0.5, 2.0), 1):
        s = torch.linalg.svdvals(p[f"W{k}"])  # (M, min dims)
        torch.testing.assert_close(s[0], torch.full_like(s[0], 1.0 * layer), rtol=1e-12, atol=0)
        torch.testing.assert_close(s[1], torch.full_like(s[1], 0.3 * layer), rtol=1e-12, atol=0)
    other = init_params(spec, [2], 1.0, dtype=torch.float64)
    assert not torch.equal(other["W1"][0], p["W1"][0])


def test_orthogonal_rectangular_shapes():
    g = torch.Generator().manual_seed(0)
    for shape in ((3, 7), (7, 3), (5, 5)):
        q = orthogonal(g, shape)
        assert q.shape == shape
        eye = torch.eye(min(shape), dtype=torch.float64)
        gram = q @ q.T if shape[0] <= shape[1] else q.T @ q
        torch.testing.assert_close(gram, eye, rtol=0, atol=1e-14)


def test_default_init_draws_what_it_drew_before_the_new_keys():
    """uniform, no layer scales: nn.Linear's U(-1/sqrt(fan_in), ..) times init_scale, bitwise."""
    spec = _spec()
    got = spec.init_member(torch.Generator().manual_seed(3), 0.7)
    g = torch.Generator().manual_seed(3)
    dims = [9, 7, 7, 3]
    for k in range(1, 4):
        want = uniform(g, (dims[k], dims[k - 1]), linear_bound(dims[k - 1])) * 0.7
        assert torch.equal(got[f"W{k}"], want)


# --- spurious energy -----------------------------------------------------------------------------
def test_projector_and_spurious_energy_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9))
    a = rng.standard_normal((2, 3, 9))
    want_p = np.eye(9) - np.linalg.pinv(x) @ x
    got_p = input_complement_projector(torch.as_tensor(x))
    np.testing.assert_allclose(got_p.numpy(), want_p, rtol=0, atol=1e-13)
    assert np.linalg.matrix_rank(want_p) == 5
    want_e = np.array([np.linalg.norm(a[i] @ want_p, "fro") ** 2 for i in range(2)])
    got_e = spurious_energy(torch.as_tensor(a), got_p)
    np.testing.assert_allclose(got_e.numpy(), want_e, rtol=1e-12)
    # computed once per inputs tensor
    xt = torch.as_tensor(x)
    assert input_complement_projector(xt) is input_complement_projector(xt)


def test_projector_is_zero_when_the_inputs_span_the_space():
    x = torch.as_tensor(np.random.default_rng(1).standard_normal((20, 6)))
    torch.testing.assert_close(
        input_complement_projector(x), torch.zeros(6, 6, dtype=torch.float64), rtol=0, atol=1e-14
    )


def test_spurious_energy_is_logged_only_for_dense_inputs_with_n_below_d():
    assert "spurious_energy" in cat.names_for(_spec(train_size=5, input_dim=9))
    assert "spurious_energy" not in cat.names_for(_spec(train_size=20, input_dim=9))
    study = load_config(_config(train_size=30))
    data = build_dataset(data_params(study.cells[0].params))
    spec = model_spec(study.cells[0].params, dict(data.attrs), input_dim=12)
    assert not spec.spurious_inputs


def test_spurious_energy_stays_zero_under_gd_from_an_init_in_the_span_of_the_inputs():
    """W1's rows in span(X): A P_perp = 0 at init, and GD with weight decay keeps it there (the
    loss gradient of W1 is a combination of the inputs)."""
    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.standard_normal((5, 9)))
    y = torch.as_tensor(rng.integers(0, 3, 5))
    spec = _spec(init_scheme="orthogonal")
    p = init_params(spec, [0, 1], 1.0, dtype=torch.float64)
    proj = input_complement_projector(x)
    assert (spurious_energy(spec.end_to_end(p), proj) > 0.1).all()  # a generic init has some
    p["W1"] = torch.as_tensor(rng.standard_normal((2, 7, 5))) @ x / 3.0  # rows in span(X)
    for _ in range(20):
        p = {k: v.detach().requires_grad_(True) for k, v in p.items()}
        logits = spec.forward(p, x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), y.repeat(2))
        loss.backward()
        p = {k: v - 0.05 * (v.grad + 1e-2 * v) for k, v in p.items()}
    energy = spurious_energy(spec.end_to_end(p), proj)
    scale = spec.end_to_end(p).square().sum(dim=(1, 2))
    assert (scale > 0.1).all()
    assert (energy <= 1e-26 * scale).all(), energy


# --- the clock on a tiny lazy run ----------------------------------------------------------------
@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_rep_spurious_fires_after_the_classifier_clock(tmp_path):
    """Tiny lazy run (orthogonal x1, n = 16 < d = 24, AdamW wd 0.3): train CE reaches 1e-3 within
    a few hundred steps; the spurious energy then decays through weight decay, far later."""
    cfg = _config(
        input_dim=24,
        num_classes=6,
        train_size=16,
        test_size=64,
        width=24,
        lr=0.01,
        steps=3000,
        dtype="float64",
    )
    cfg["seeds"] = [0, 1]
    cfg["logging"] = dict(log_dense_steps=20, log_every_steps=25, snapshot_count=2)
    cfg["grids"]["g"]["axes"]["weight_decay"] = [0.3]
    (cell,) = load_config(cfg).cells
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = build_dataset(data_params(cell.params))
        path = train_cell(cell.params, data, tmp_path / "t.zarr", progress=False)
    finally:
        torch.set_num_threads(threads)
    ds = open_trajectory(path).load()
    assert "rep_spurious" in structural_gaps(ds)
    se = ds["spurious_energy"].values
    assert (se[:, 0] > 1.0).all() and (se[:, -1] < 0.05 * se.max(axis=1)).all()
    settings = dict(eps=[0.1, 1e-2, 1e-3], eps_star=1e-3, eta=[0.5, 0.2, 0.1])
    table = extract_clocks(ds, settings, {})
    rep = table[(table.clock == "rep_spurious") & ~table.pre_fit & (table.level == 0.1)]
    cls = table[(table.clock == "cls") & (table.level == 1e-3)]
    assert len(rep) == 2 and not rep.censored.any() and not rep.unresolved.any()
    t_cls = cls.set_index("seed")["step"]
    t_rep = rep.set_index("seed")["step"]
    assert (t_cls < 500).all()
    assert (t_rep > 5 * t_cls).all(), (t_rep, t_cls)
    assert json.loads(ds.attrs["cell"])["init_scheme"] == "orthogonal"


# --- the lazy-rich knob (dln_lazy_rich) and depth / balance (dln_depth_rate), issue 23 ---------
LR, WD = 0.5, 0.001
RATE = -2 * np.log1p(-LR * WD)  # 2 wd lr per step
T_CLS = 100.0


def _knob_store(cid: str, s_cls: float, rate: float, depth: int = 3, gap: float = 0.3,
                bump: bool = False, steps_end: int = 8000) -> xr.Dataset:  # fmt: skip
    """Two GD seeds whose spurious fraction is S(t) = s_cls exp(-rate (t - T_cls)) after T_cls
    (||A||^2 = 4 from two singular values), with a relative balancedness gap `gap`; `bump`
    puts S back above 1e-3 once, after T_cls (a plateau)."""
    steps = np.arange(0, steps_end + 1, 50).astype(float)
    frac = s_cls * np.exp(-rate * np.maximum(steps - T_CLS, 0.0))
    if bump:
        frac[(steps > 1000) & (steps < 1200)] = 5e-3
    frac = np.repeat(frac[None], 2, axis=0)
    sv = np.broadcast_to(np.array([np.sqrt(3.0), 1.0]), (2, len(steps), 2))
    schatten = np.full((2, len(steps)), 1.0)
    cell = {"cell_id": cid, "model": "deep_linear", "depth": depth, "weight_decay": WD,
            "lr": LR, "optimizer": "sgd", "momentum": 0.0, "init_scheme": "orthogonal"}  # fmt: skip
    total = depth * schatten / (1 - gap)  # sum ||W||^2 such that the relative gap is `gap`
    return xr.Dataset(
        {
            "spurious_energy": (("seed", "step"), 4.0 * frac),
            "singular_values": (("seed", "step", "sv"), sv.copy()),
            "schatten_energy": (("seed", "step"), schatten),
            "balancedness_gap": (("seed", "step"), total - depth * schatten),
        },
        coords={"seed": [0, 1], "step": steps},
        attrs={"cell": json.dumps(cell), "model": "deep_linear"},
    )


def _knob_clocks(study: dict, t_cls: float = T_CLS):
    """rep_spurious rows carrying T_cls and each member's tail fit, per cell of `study`."""
    rows = []
    for cid, ds in study.items():
        cell = json.loads(ds.attrs["cell"])
        for seed in (0, 1):
            rows.append({"study": "s", "grid": "g", "cell_id": cid, "cell_hash": "0" * 12,
                         "seed": seed, "clock": "rep_spurious", "level": 0.1,
                         "step": 1000.0, "censored": False, "pre_fit": False,
                         "unresolved": False, "below_floor": False, "diverged": False,
                         "t_cls_ref": t_cls, "g_ref": 1.0, "tail_law": "exp",
                         "tail_timescale": 1 / RATE,
                         **{k: cell[k] for k in ("depth", "weight_decay", "lr", "optimizer",
                                                 "momentum", "init_scheme")}})  # fmt: skip
    return pd.DataFrame(rows)


def _judge(study: dict, claim: str, settings=None, **kw) -> dict:
    got = C.evaluate_claims(study, _knob_clocks(study, **kw), None, settings or {})
    return next(c for c in got if c["id"] == claim)


def test_knob_member_measures_the_time_s_stays_below_the_level():
    steps = np.arange(0.0, 1001.0, 10.0)
    s = 0.1 * np.exp(-0.01 * steps)
    s[50] = 0.2  # a late excursion above the level resets T_rep
    got = K.knob_member(steps, s, 20.0, 1e-3)
    assert got["status"] == "fired" and got["dt"] == 510.0 - 20.0 and got["tol"] == 10.0
    assert np.isclose(got["s_cls"], 0.1 * np.exp(-0.2))
    assert K.knob_member(steps, np.full_like(steps, 0.5), 20.0, 1e-3)["status"] == "censored"


def test_lazy_rich_passes_when_both_regimes_follow_the_prediction():
    study = {"lazy": _knob_store("lazy", 0.1, RATE), "rich": _knob_store("rich", 1e-4, RATE)}
    got = _judge(study, "dln_lazy_rich")
    assert got["verdict"] == "PASS", got["evidence"]
    lazy = got["details"]["per_cell"]["lazy"]
    assert np.isclose(lazy["dt_hi"], np.log(0.1 / 1e-3) / RATE)
    assert np.isclose(lazy["dt_lo"], lazy["dt_hi"] / 3)
    assert abs(lazy["dt"] - lazy["dt_hi"]) <= 50  # one logging interval
    assert got["details"]["per_cell"]["rich"]["dt"] <= 50  # no plateau


def test_lazy_rich_fails_on_a_plateau_below_the_level_or_a_too_slow_decay():
    rich_bump = {"lazy": _knob_store("lazy", 0.1, RATE),
                 "rich": _knob_store("rich", 1e-4, RATE, bump=True)}  # fmt: skip
    assert _judge(rich_bump, "dln_lazy_rich")["verdict"] == "FAIL"
    slow = {"lazy": _knob_store("lazy", 0.1, RATE / 2), "rich": _knob_store("rich", 1e-4, RATE)}
    got = _judge(slow, "dln_lazy_rich")
    assert got["verdict"] == "FAIL" and "MISSED" in got["evidence"]
    # a decay L = 3 times faster is the balanced bound: inside the band
    fast = {"lazy": _knob_store("lazy", 0.1, 3 * RATE), "rich": _knob_store("rich", 1e-4, RATE)}
    assert _judge(fast, "dln_lazy_rich")["verdict"] == "PASS"


def test_lazy_rich_needs_both_sides_and_counts_censored_members():
    only_lazy = {"lazy": _knob_store("lazy", 0.1, RATE)}
    got = _judge(only_lazy, "dln_lazy_rich")
    assert got["verdict"] == "INCONCLUSIVE" and "only lazy cells" in got["evidence"]
    # a run that ends inside the predicted window: excluded and counted, not a miss
    short = {"lazy": _knob_store("lazy", 0.1, RATE, steps_end=2000),
             "rich": _knob_store("rich", 1e-4, RATE)}  # fmt: skip
    got = _judge(short, "dln_lazy_rich")
    assert (
        got["verdict"] == "INCONCLUSIVE"
        and "2 still above eta at a last log inside" in (got["evidence"])
    )
    # still above the level long after the predicted window: a miss
    stuck = {"lazy": _knob_store("lazy", 0.1, RATE / 10), "rich": _knob_store("rich", 1e-4, RATE)}
    got = _judge(stuck, "dln_lazy_rich")
    assert got["verdict"] == "FAIL" and got["details"]["late_members"] == 2
    # no T_cls: nothing judged, counted
    got = _judge(only_lazy, "dln_lazy_rich", t_cls=np.nan)
    assert got["verdict"] == "INCONCLUSIVE" and "2 members without T_cls" in got["evidence"]


def test_depth_rate_scores_the_p_2_over_l_reading_only_on_balanced_cells():
    balanced = {f"d{L}": _knob_store(f"d{L}", 0.1, L * RATE, depth=L, gap=0.0) for L in (2, 3)}
    got = _judge(balanced, "dln_depth_rate")  # rate L x 2 wd lr
    assert got["verdict"] == "PASS", got["evidence"]
    assert np.isclose(next(iter(got["details"]["depth_slopes"].values())), 1.0)
    first_layer = {f"d{L}": _knob_store(f"d{L}", 0.1, RATE, depth=L, gap=0.0) for L in (2, 3)}
    got = _judge(first_layer, "dln_depth_rate")  # rate 2 wd lr at every depth
    assert got["verdict"] == "FAIL"
    assert np.isclose(next(iter(got["details"]["depth_slopes"].values())), 0.0, atol=1e-6)
    unbalanced = {f"d{L}": _knob_store(f"d{L}", 0.1, RATE, depth=L, gap=0.3) for L in (2, 3)}
    got = _judge(unbalanced, "dln_depth_rate")
    assert got["verdict"] == "INCONCLUSIVE" and "not scored" in got["evidence"]
    assert np.isclose(got["details"]["per_cell"]["d3"]["gap_rep"], 0.3)


def test_shipped_grids_put_deep_linear_cells_in_the_theorys_regime():
    """The default study has a lazy plain-GD cell and a small-init control on an n < d teacher;
    config/deep_linear.yaml's knob spans init 0.01-1 under GD with >= 5 e-folds of 2 wd lr."""
    repo = Path(__file__).resolve().parents[1]
    default = [c.params for c in load_config(repo / "config" / "config.yaml").cells
               if c.params["model"] == "deep_linear"]  # fmt: skip
    knob = [c.params for c in load_config(repo / "config" / "deep_linear.yaml").cells
            if c.params["grid"] == "knob_gd"]  # fmt: skip
    for p in default + knob:
        assert p["optimizer"] == "sgd" and p["momentum"] == 0.0 and p["weight_decay"] > 0
        assert p["task"] == "teacher" and p["train_size"] < p["input_dim"]
    assert sorted(p["init_scale"] for p in default) == [0.1, 1.0]
    assert sorted(p["init_scale"] for p in knob) == [0.01, 0.03, 0.1, 0.3, 1.0]
    assert all(p["steps"] * 2 * p["weight_decay"] * p["lr"] >= 5 for p in knob)
