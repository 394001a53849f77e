"""The energy law and its KL exponent read one objective for every model (issue #22.6):
F = CE + wd/2 sum_b ||W_b||^2 from logged variables, with its own logged gradient
(`grad_norm_energy`), F's asymptote taken from the energy law's profile."""

from __future__ import annotations

import numpy as np
import xarray as xr

from twoclocks.analyze.law_stage import cell_laws, param_energy
from twoclocks.analyze.laws import kl_exponent
from twoclocks.train.schedule import log_steps

THETA, WD, F_INF = 0.75, 0.1, 2.0


def _deep_linear_store() -> tuple[xr.Dataset, dict]:
    """GD deep linear cell: F - F_inf = CE + A (1 + t/d)^-2, ||grad F|| = (F - F_inf)^THETA, and
    a Schatten energy that is NOT F (a transient imbalance): only F pairs with the gradient."""
    rng = np.random.default_rng(1)
    steps = log_steps(6000, 100, 20)
    t = steps.astype(float)[None, :]
    s = np.exp(0.05 * rng.standard_normal((3, 1)))
    ce = 4.0 * np.exp(-t / (100 * s))
    tail = 3.0 * (1 + t / (200 * s)) ** -2.0  # fell 99.9%: F_inf identified
    sq = 2 / WD * (F_INF + tail)
    f_gap = ce + tail
    gf = f_gap**THETA * np.exp(0.002 * rng.standard_normal(f_gap.shape))
    schatten = sq / 2 * (1 + 0.5 * np.exp(-t / 3000))  # balanced only at the end
    dims = ("seed", "step")
    ds = xr.Dataset(
        {"train_loss": (dims, ce), "sqnorm_total": (dims, sq), "schatten_energy": (dims, schatten),
         "grad_norm": (dims + ("block",), (gf / 2)[..., None]),
         "grad_norm_energy": (dims + ("block",), gf[..., None])},
        coords={"seed": [0, 1, 2], "step": steps, "block": ["W1"]},
    )  # fmt: skip
    params = {
        "model": "deep_linear",
        "depth": 2,
        "weight_decay": WD,
        "optimizer": "sgd",
        "steps": 6000,
        "log_dense_steps": 100,
        "log_every_steps": 20,
        "dtype": "float64",
    }
    return ds, params  # fmt: skip


def test_param_energy_is_ce_plus_half_wd_sqnorm_for_every_model():
    ds, params = _deep_linear_store()
    f = param_energy(ds, params)
    np.testing.assert_allclose(f, ds["train_loss"] + WD / 2 * ds["sqnorm_total"])
    assert param_energy(ds[["train_loss"]], params) is None


def test_deep_linear_energy_law_and_theta_use_f_and_its_own_gradient():
    ds, params = _deep_linear_store()
    rec = cell_laws(ds, None, {"eps_star": 1e-2}, params, "dln")["clocks"]["rep_energy"]
    assert rec["quantity"].startswith("F = CE")
    kl = rec["kl"]
    assert kl["status"] == "ok", kl
    assert "grad_norm_energy" in kl["energy"]
    # F's asymptote comes from the energy law's profile of F (about 2), not from the Schatten
    # energy's (about F_INF / WD = 20) nor 0
    lo = min(a for a, _ in kl["f_inf"])
    hi = max(b for _, b in kl["f_inf"])
    assert F_INF * 0.98 < lo <= hi < F_INF * 1.02, kl["f_inf"]
    np.testing.assert_allclose(lo, min(rec["g_inf_low"]))
    # theta is reported over that range: it moves fast with F_inf when F - F_inf is small
    assert kl["theta_range"][0] <= kl["theta"] <= kl["theta_range"][1]
    # at the true asymptote the logged pair (F, grad_norm_energy) gives the true theta
    steps = ds["step"].to_numpy().astype(float)
    sq, ce = ds["sqnorm_total"].to_numpy()[0], ds["train_loss"].to_numpy()[0]
    gf, gc = ds["grad_norm_energy"].to_numpy()[0, :, 0], ds["grad_norm"].to_numpy()[0, :, 0]
    out = kl_exponent(steps, ce, sq, gf, gc, WD, "sgd", 460.0, F_INF)
    assert abs(out.theta - THETA) < 0.01, out
