"""Clock extraction on synthetic trajectories with known truth (twoclocks.analyze.clocks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from twoclocks.analyze.clocks import (
    ce_floor,
    extract_clocks,
    is_deep_linear,
    model_kind,
    stable_crossing,
    structural_gaps,
)

LR = 1e-3


def synthetic_trajectory(
    train_loss: np.ndarray,
    steps: np.ndarray,
    *,
    model: str = "relu_embed",
    dtype: str = "float64",
    diverged_step: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
    srank: np.ndarray | None = None,
    weight_decay: float = 0.0,
) -> xr.Dataset:
    """Trajectory Dataset in the design.md layout; train_loss (seed, step)."""
    n_seeds = train_loss.shape[0]
    dims = ("seed", "step")
    data = {"train_loss": (dims, train_loss)}
    for name, v in (extra or {}).items():
        data[name] = (dims, np.broadcast_to(v, train_loss.shape).copy())
    coords = {
        "seed": np.arange(n_seeds, dtype=np.int64),
        "step": steps.astype(np.int64),
        "tau": (dims, np.broadcast_to(LR * steps, train_loss.shape).astype(np.float64)),
    }
    if srank is not None:
        matrix = "A" if model == "deep_linear" else "UW"
        data["srank"] = (("seed", "step", "matrix"), srank[..., None])
        coords["matrix"] = [matrix]
    if diverged_step is None:
        diverged_step = np.full(n_seeds, -1)
    data["diverged_step"] = (("seed",), np.asarray(diverged_step, dtype=np.int64))
    cell = {
        "study": "syn",
        "grid": "g",
        "cell_id": "relu/wd=1.0",
        "cell_hash": "abc123abc123",
        "model": model,
        "task": "modular",
        "dtype": dtype,
        "lr": LR,
        "weight_decay": weight_decay,
        "depth": 3,
        "steps": int(steps[-1]),
    }
    return xr.Dataset(data, coords=coords, attrs={"cell": json.dumps(cell), "dtype": dtype})


def test_exponential_tail_interpolates_exactly():
    """Log-linear interpolation is exact for an exponential tail, in steps and in tau."""
    steps = np.arange(0, 3001, 50)
    rate, c = 0.004, 2.0
    loss = c * np.exp(-rate * steps)[None]
    ds = synthetic_trajectory(loss, steps)
    df = extract_clocks(ds, {"eps": [1e-1, 1e-2, 1e-3]}, {"weight_decay": 1.0})
    cls = df[df["clock"] == "cls"].sort_values("level", ascending=False)
    truth = np.log(c / cls["level"].to_numpy()) / rate
    np.testing.assert_allclose(cls["step"], truth, rtol=1e-9)
    np.testing.assert_allclose(cls["tau"], LR * truth, rtol=1e-9)
    assert not cls["censored"].any() and not cls["diverged"].any()
    assert (df["weight_decay"] == 1.0).all() and (df["cell_id"] == "relu/wd=1.0").all()
    assert {"study", "grid", "cell_hash", "dtype", "below_floor"} <= set(df.columns)


def test_a_list_valued_axis_is_one_label():
    """layer_init_scales / frozen_blocks label a cell with a list: one column value, as in the
    cell id (it used to be spread over the rows and fail)."""
    steps = np.arange(0, 3001, 50)
    ds = synthetic_trajectory(2.0 * np.exp(-0.004 * steps)[None], steps)
    axes = {"layer_init_scales": [1.0, 0.5, 0.25], "weight_decay": 1.0}
    df = extract_clocks(ds, {"eps": [1e-1, 1e-2, 1e-3]}, axes)  # 3 rows: a 3-list would spread
    assert len(df) == 3 and (df["layer_init_scales"] == "1.0-0.5-0.25").all()


@settings(max_examples=40, deadline=None)
@given(
    base=st.floats(-6, -1),
    spike_at=st.integers(5, 40),
    spike_len=st.integers(1, 4),
    window=st.integers(2, 6),
)
def test_touch_and_bounce_not_counted(base, spike_at, spike_len, window):
    """A dip below eps lasting fewer logs than the window is ignored; the stable one counts."""
    steps = np.arange(0, 1000, 10)
    eps = 10.0**base
    loss = np.full(len(steps), 10 * eps)
    loss[spike_at : spike_at + min(spike_len, window - 1)] = eps / 10  # touches, bounces back
    settle = 70
    loss[settle:] = eps / 100
    step, _ = stable_crossing(loss[None], steps, LR * steps[None], np.array([eps]), window)
    assert step[0, 0] > steps[settle - 1] and step[0, 0] <= steps[settle]


def test_window_past_end_is_censored():
    steps = np.arange(0, 100, 10)
    loss = np.linspace(1.0, 0.1, len(steps))
    loss[-2:] = 1e-4  # crosses, but the run ends inside the stability window
    step, tau = stable_crossing(loss[None], steps, steps[None], np.array([1e-3]), 3)
    assert np.isnan(step).all() and np.isnan(tau).all()
    step, _ = stable_crossing(loss[None], steps, steps[None], np.array([1e-3]), 2)
    assert np.isfinite(step).all()


def test_censored_and_diverged_flags():
    steps = np.arange(0, 2001, 20)
    fast = np.exp(-0.01 * steps)
    slow = np.maximum(np.exp(-0.001 * steps), 0.2)  # floor at 0.2: never reaches 0.1
    loss = np.stack([fast, slow, fast])
    loss[2, 50:] = np.nan  # diverged member: metrics NaN after divergence
    ds = synthetic_trajectory(loss, steps, diverged_step=np.array([-1, -1, 1000]))
    df = extract_clocks(ds, {"eps": [1e-1, 1e-3]}, {})
    cls = df[df["clock"] == "cls"].set_index(["seed", "level"])
    assert not cls.loc[0, "censored"].any() and cls.loc[0, "step"].notna().all()
    assert cls.loc[1, "censored"].all() and cls.loc[1, "step"].isna().all()
    assert cls.loc[1, "quantity_min"].iloc[0] == pytest.approx(0.2)
    assert cls.loc[2, "diverged"].all() and not cls.loc[2, "censored"].any()
    assert cls.loc[2, "step"].isna().all() and cls.loc[2, "tau"].isna().all()


def test_below_floor_flag_float32():
    steps = np.arange(0, 500, 10)
    loss = np.exp(-0.05 * steps)[None]
    ds = synthetic_trajectory(loss, steps, dtype="float32")
    df = extract_clocks(ds, {"eps": [1e-3, 1e-6, 1e-9]}, {})
    flags = df[df["clock"] == "cls"].set_index("level")["below_floor"]
    assert flags[1e-9] and not flags[1e-6] and not flags[1e-3]
    assert ce_floor("float32") == pytest.approx(1.19e-7, rel=1e-2)
    ds64 = synthetic_trajectory(loss, steps, dtype="float64")
    assert not extract_clocks(ds64, {"eps": [1e-9]}, {})["below_floor"].any()


def test_structural_gaps_are_raw_with_their_bounds():
    """Gaps come raw with their structural bound; energy = train CE + wd/2 * sqnorm_total."""
    steps = np.arange(0, 1001, 10)
    t = steps.astype(float)
    loss = np.exp(-0.01 * t)[None]
    srank = (1 + 35 * np.exp(-t / 300))[None]
    sq = (50 + 100 * np.exp(-t / 200))[None]
    fourier = (0.8 * np.exp(-t / 400))[None]
    ds = synthetic_trajectory(
        loss,
        steps,
        srank=srank,
        weight_decay=0.5,
        extra={"sqnorm_total": sq, "fourier_gap": fourier, "separation_gap": 2 * fourier},
    )
    gaps = structural_gaps(ds, {})
    assert {k: v[1] for k, v in gaps.items()} == {
        "rep_srank": 1.0,
        "rep_energy": 0.0,
        "rep_fourier": 0.0,
        "rep_sep": 0.0,
    }
    np.testing.assert_allclose(gaps["rep_srank"][0].values, srank)
    np.testing.assert_allclose(gaps["rep_energy"][0].values, loss + 0.25 * sq)
    np.testing.assert_allclose(gaps["rep_sep"][0].values, 2 * fourier)


def test_gap_normalised_at_t_cls_against_its_asymptote():
    """srank = 4 + 30 exp(-t/300): measured from its asymptote 4 (not the bound 1) and
    normalised at T_cls(eps_star); T_rep(eta) = T_cls + 300 log(1/eta) exactly."""
    steps = np.arange(0, 6001, 10)
    t = steps.astype(float)
    loss = 2.0 * np.exp(-0.01 * t)[None]  # T_cls(1e-3) = 100 log(2000)
    srank = (4 + 30 * np.exp(-t / 300))[None]
    ds = synthetic_trajectory(loss, steps, srank=srank)
    df = extract_clocks(ds, {"eta": [0.5, 0.1, 0.01], "eps_star": 1e-3}, {})
    rep = df[df["clock"] == "rep_srank"].set_index("level")
    t_cls = 100 * np.log(2000)
    assert rep["t_cls_ref"].iloc[0] == pytest.approx(t_cls, rel=1e-9)
    assert rep["g_inf"].iloc[0] == pytest.approx(4.0, abs=1e-6)
    for eta in (0.5, 0.1, 0.01):
        assert rep.loc[eta, "step"] == pytest.approx(t_cls + 300 * np.log(1 / eta), rel=1e-3)
    assert not rep["pre_fit"].any() and rep["tail_law"].iloc[0] == "exp"


def test_model_kind_and_end_to_end_matrix_come_from_the_store():
    """The store's `model` / `end_to_end_matrix` attrs decide; params (and, for stores of other
    code, `depth` without `embed_dim`) only when the store names neither."""
    steps = np.arange(0, 101, 10)
    loss = np.linspace(1, 0.1, len(steps))[None]
    ds = synthetic_trajectory(loss, steps, srank=np.linspace(9, 2, len(steps))[None])
    assert model_kind(ds) == "relu_embed" and not is_deep_linear(ds)
    assert model_kind(ds.assign_attrs(model="toy_tanh")) == "toy_tanh"
    assert model_kind({"depth": 2, "width": 4}) == "deep_linear"
    assert model_kind({"depth": 2, "embed_dim": 4}) == "relu_embed"
    # srank's default matrix is the store's end-to-end map, whatever its name.
    two = xr.concat([ds["srank"], 2 * ds["srank"]], dim="matrix").assign_coords(matrix=["M", "W"])
    ds2 = ds.drop_vars(["srank", "matrix"]).assign(srank=two)
    np.testing.assert_allclose(structural_gaps(ds2, {})["rep_srank"][0], 2 * ds["srank"][..., 0])
    named = ds2.assign_attrs(end_to_end_matrix="M")
    np.testing.assert_allclose(structural_gaps(named, {})["rep_srank"][0], ds["srank"][..., 0])


def test_claims_and_figures_select_cells_by_the_stores_model():
    """A third model is named as itself in the cell table and is not counted as a relu cell."""
    from twoclocks.analyze import claims
    from twoclocks.report import figures

    steps = np.arange(0, 101, 10)
    loss = np.linspace(1, 0.1, len(steps))[None]

    def named(ds: xr.Dataset, cid: str) -> xr.Dataset:
        return ds.assign_attrs(cell=json.dumps(dict(json.loads(ds.attrs["cell"]), cell_id=cid)))

    relu = named(synthetic_trajectory(loss, steps), "a")
    toy = named(synthetic_trajectory(loss, steps, model="toy_tanh"), "b")
    toy.attrs["model"] = "toy_tanh"
    deep = named(synthetic_trajectory(loss, steps, model="deep_linear"), "c")
    study = {"a": relu, "b": toy, "c": deep}
    table = claims.cell_table(study).set_index("cell_id")["model"].to_dict()
    assert table == {"a": "relu_embed", "b": "toy_tanh", "c": "deep_linear"}
    assert [cid for cid, _ in claims._relu_runs(study)] == ["a"]
    assert [c[0] for c in figures._relu(study)] == ["a"]
    assert [c[0] for c in figures._deep(study)] == ["c"]


def test_deep_linear_energy_uses_schatten():
    steps = np.arange(0, 101, 10)
    loss = np.linspace(1, 0.1, len(steps))[None]
    sch = np.linspace(2, 1, len(steps))[None]
    ds = synthetic_trajectory(
        loss, steps, model="deep_linear", weight_decay=0.1, extra={"schatten_energy": sch}
    )
    e = loss + 0.1 * 3 / 2 * sch
    np.testing.assert_allclose(structural_gaps(ds, {})["rep_energy"][0].values, e)


def test_generalisation_and_gate_clocks():
    steps = np.arange(0, 1001, 10)
    acc = np.clip(steps / 500.0, 0, 1)[None]  # crosses 0.99 at step 495
    flips = np.where(steps < 300, 0.1, 0.0)[None].astype(float)
    flips[0, 0] = np.nan
    test_loss = np.exp(-0.01 * steps)[None]
    ds = synthetic_trajectory(
        test_loss,
        steps,
        extra={"test_acc": acc, "gate_flip_fraction": flips, "test_loss": test_loss},
    )
    df = extract_clocks(ds, {"test_loss_level": 1e-2}, {}).set_index("clock")
    assert df.loc["gen_acc", "level"] == 0.99
    assert df.loc["gen_acc", "step"] == pytest.approx(495.0)
    assert df.loc["gen_acc", "quantity_min"] == pytest.approx(1.0)
    assert 290 < df.loc["gate", "step"] <= 300
    assert df.loc["gen_loss", "step"] == pytest.approx(100 * np.log(100), rel=1e-9)


def test_unknown_and_removed_settings_rejected():
    steps = np.arange(0, 10)
    ds = synthetic_trajectory(np.ones((1, 10)), steps)
    with pytest.raises(ValueError, match="unknown"):
        extract_clocks(ds, {"epsilon": [0.1]}, {})
    with pytest.raises(ValueError, match="removed analysis settings: t_kl_rule"):
        extract_clocks(ds, {"t_kl_rule": "onset"}, {})


def test_startup_blip_is_flagged_pre_fit_and_never_used():
    """A dip and recovery before T_cls is kept as a pre_fit row; the clock fires after T_cls."""
    steps = np.arange(0, 4001, 10)
    t = steps.astype(float)
    srank = 2 + 10 * np.exp(-np.maximum(t - 500, 0) / 600)
    srank[(t >= 20) & (t <= 120)] = 2.05  # the blip, longer than the stability window
    loss = np.exp(-0.02 * t)[None]  # T_cls(1e-3) = 50 log(1000) ~ 345
    ds = synthetic_trajectory(loss, steps, srank=srank[None, :])
    clocks = extract_clocks(ds, {"eta": [0.5, 0.2, 0.1]}, {})
    rep = clocks[clocks["clock"] == "rep_srank"]
    early, main = rep[rep["pre_fit"]], rep[~rep["pre_fit"]]
    assert len(early) == 3 and (early["step"] < 130).all()
    assert (main["step"] > main["t_cls_ref"]).all() and not main["censored"].any()


def test_levels_near_an_unfitted_or_uncertain_asymptote_are_unresolved():
    """Too short a post-fit window: no tail fit, the asymptote is only the bound, and no level
    counts; with a fit, levels within 2 standard errors of the asymptote do not count."""
    steps = np.arange(0, 400, 10)
    t = steps.astype(float)
    loss = 2.0 * np.exp(-0.03 * t)[None]  # T_cls(1e-3) ~ 253: 14 logs after it
    srank = (4 + 30 * np.exp(-t / 300))[None]
    ds = synthetic_trajectory(loss, steps, srank=srank)
    rep = extract_clocks(ds, {"eta": [0.5, 0.1]}, {})
    rep = rep[rep["clock"] == "rep_srank"]
    assert (rep["g_inf_source"] == "bound").all() and rep["unresolved"].all()
    assert (rep["g_inf"] == 1.0).all()
    steps = np.arange(0, 6001, 10)
    t = steps.astype(float)
    rng = np.random.default_rng(0)
    srank = (4 + 30 * np.exp(-t / 300) * np.exp(0.02 * rng.standard_normal(t.shape)))[None]
    ds = synthetic_trajectory(2.0 * np.exp(-0.01 * t)[None], steps, srank=srank)
    eta = [0.5, 0.1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    rep = extract_clocks(ds, {"eta": eta}, {})
    rep = rep[rep["clock"] == "rep_srank"]
    se_rel = rep["g_inf_se"] / (rep["g_ref"] - rep["g_inf"])
    assert (rep["unresolved"] == (rep["level"] <= 2 * se_rel)).all()
    assert rep["unresolved"].any() and not rep["unresolved"].all()


def _adam_spike_run(steps: np.ndarray) -> np.ndarray:
    """Two members of issue 26's default-study shape: train CE decays to ~1e-7 by step 1,000;
    member 0 spikes back to 1e-3 for three logs at 2,500 (Adam near the float32 floor),
    member 1 stays down. The spike is far past T_cls's 5-log window."""
    ce = np.maximum(np.exp(-0.016 * steps), 1e-7)
    spiky = ce.copy()
    spiky[(steps >= 2500) & (steps < 2560)] = 1e-3
    return np.stack([spiky, ce])


def test_train_ce_spike_after_t_cls_is_a_relapse():
    steps = np.arange(0, 5001, 20)
    ds = synthetic_trajectory(_adam_spike_run(steps), steps)
    df = extract_clocks(ds, {"eps": [1e-3, 1e-5]}, {})
    cls = df[df["clock"] == "cls"].set_index(["seed", "level"])
    # the window clock fires the same for both members (App. F.4, unchanged) ...
    assert cls.loc[(0, 1e-5), "step"] == pytest.approx(cls.loc[(1, 1e-5), "step"])
    assert not cls["censored"].any()
    # ... but member 0 left 1e-5 by more than relapse_factor (10) after it fired
    assert cls.loc[(0, 1e-5), "relapse"]
    assert cls.loc[(0, 1e-5), "relapse_step"] == 2500.0
    assert not cls.loc[(1, 1e-5), "relapse"]
    assert np.isnan(cls.loc[(1, 1e-5), "relapse_step"])
    # 1e-3 is reached by the spike, not exceeded by a factor 10: no relapse at that level
    assert not cls.loc[(0, 1e-3), "relapse"]
    # the factor is a setting: at factor 1000 the spike to 1e-3 is not a relapse of 1e-5
    strict = extract_clocks(ds, {"eps": [1e-5], "relapse_factor": 1000.0}, {})
    assert not strict.loc[strict["clock"] == "cls", "relapse"].any()


def test_test_accuracy_falling_after_t_gen_is_a_relapse():
    steps = np.arange(0, 3001, 10)
    acc = np.clip(steps / 1000.0, 0, 1)
    falls = np.where(steps > 2000, 0.627, acc)  # wd 0.5 seed 1 of issue 26
    wobbles = np.where(steps > 2000, 0.97, acc)  # within relapse_margin (0.05) of 0.99
    ce = np.exp(-0.01 * steps)[None].repeat(3, 0)
    ds = synthetic_trajectory(ce, steps, extra={"test_acc": np.stack([acc, falls, wobbles])})
    gen = extract_clocks(ds, {}, {}).query("clock == 'gen_acc'").set_index("seed")
    assert gen["step"].to_numpy() == pytest.approx([990.0] * 3)
    assert gen["relapse"].tolist() == [False, True, False]
    assert gen.loc[1, "relapse_step"] == 2010.0


def test_relapse_never_flags_censored_diverged_or_gap_rows():
    steps = np.arange(0, 3001, 20)
    loss = _adam_spike_run(steps)
    loss[1, 300 // 20 :] = 1.0  # member 1 never gets below 1e-3 after step 300
    srank = 1.0 + 3.0 * np.exp(-steps / 400.0)[None].repeat(2, 0)
    ds = synthetic_trajectory(loss, steps, srank=srank, diverged_step=[-1, -1])
    df = extract_clocks(ds, {"eps": [1e-5]}, {})
    assert not df.loc[df["censored"], "relapse"].any()
    assert not df.loc[df["clock"] == "rep_srank", "relapse"].any()
    ds = synthetic_trajectory(_adam_spike_run(steps), steps, diverged_step=[2600, -1])
    df = extract_clocks(ds, {"eps": [1e-5]}, {})
    assert not df.loc[df["diverged"], "relapse"].any()
    assert df["relapse"].dtype == bool


def test_a_list_valued_treatment_is_a_cell_table_column_so_ablations_are_not_pooled():
    """frozen_blocks [E] (the freeze-E ablation) is a column ("" where absent): claims that group
    cells by every other varying axis (wd_earlier, plateau_wd_scaling) keep it apart."""
    from twoclocks.analyze import claims

    steps = np.arange(0, 101, 10)
    loss = np.linspace(1, 0.1, len(steps))[None]

    def cell(cid: str, **extra) -> xr.Dataset:
        ds = synthetic_trajectory(loss, steps)
        return ds.assign_attrs(cell=json.dumps(dict(json.loads(ds.attrs["cell"]), cell_id=cid,
                                                    **extra)))  # fmt: skip

    study = {"a": cell("a", weight_decay=0.5, betas=[0.9, 0.98]),
             "b": cell("b", weight_decay=1.0, betas=[0.9, 0.98]),
             "f": cell("f", weight_decay=1.0, betas=[0.9, 0.98], frozen_blocks=["E"])}  # fmt: skip
    table = claims.cell_table(study).set_index("cell_id")
    assert table["frozen_blocks"].to_dict() == {"a": "", "b": "", "f": "E"}
    assert "frozen_blocks=E" in table.loc["f", "label"]
    assert "frozen_blocks" not in table.loc["b", "label"] and table["betas"].nunique() == 1
    groups = table.groupby(["frozen_blocks"]).groups
    assert sorted(map(sorted, groups.values())) == [["a", "b"], ["f"]]
