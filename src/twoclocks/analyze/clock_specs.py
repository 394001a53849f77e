"""Every clock declared once: its quantity, levels, reference level and which fits apply.

A clock is a :class:`ClockSpec` registered here (docs/design.md "Extending twoclocks"). The
clock lists (`clock_names`), the gaps of `clocks.structural_gaps`, the rows of
`clocks.extract_clocks`, the default reference levels of the settings, the store inputs the
study-directory runner checks (`clock_inputs`) and the loops of `fits.fit_clocks` all derive
from the registry; the schema's `analysis.reference_levels` lists the same names (a test
compares). Three kinds:

- ``classifier``: the train CE under each `eps` (eq. 2.1); its crossing of `eps_star` starts
  the representation clocks. Exactly one, `cls`.
- ``gap``: a representation gap G(t) >= its structural lower bound (eq. 2.2), measured against
  its asymptote G_inf (fitted per member after T_cls(eps_star), `tails.fit_tail`) and
  normalised there: g = (G - G_inf) / (G(T_cls) - G_inf); crossings of each `eta` after T_cls.
  `zero` says whether the gap's zero is known by construction (a projection's energy on
  directions the solution has none on) or must be fitted (docs/science.md 7).
- ``threshold``: a store variable crossing one or a few levels (accuracy, test CE, gate flips).

This module also declares the clocks table's columns (design.md "Clocks table").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from twoclocks.analyze.quantities import regularised_energy, srank_gap

KINDS = ("classifier", "gap", "threshold")
# fits a clock may take: `law` (T(level), fits.fit_law), `tail` (the gap's tail shape,
# tails.fit_tail_summary), `ratio` (T_clock / T_cls, fits.fit_separation_ratio), `scaling`
# (across cells, fits.fit_scaling), `kl` (Kurdyka-Lojasiewicz exponent of an energy, kl.fit_kl)
FIT_KINDS = ("law", "tail", "ratio", "scaling", "kl")
ZEROS = ("known", "fitted")
# how a fired clock relapses (`clocks.relapsed`): "factor" = the quantity rises above
# relapse_factor x level at a later log (CE, test CE); "margin" = it falls below level -
# relapse_margin (accuracy); "" = not defined (gaps, gate flips)
RELAPSE_RULES = ("", "factor", "margin")

Quantity = Callable[[xr.Dataset, dict, dict], "xr.DataArray | None"]


@dataclass(frozen=True)
class ClockSpec:
    """One clock. `quantity(ds, settings, cell)` gives its raw quantity (seed, step), None when
    the store lacks it; by default the store variable `inputs[0]`.

    name: the `clock` column's value. kind: one of KINDS. inputs: the store variables it reads
    (`describe`: how the study-directory note names them; `inputs_by_model`: they depend on the
    model, so the runner checks them per cell). levels_key: the analysis setting with its levels
    (a number or a list). reference_level: default level of the ratio and scaling fits. fits:
    the subset of FIT_KINDS that applies. above: crossed when the quantity rises to the level
    (accuracy) instead of falling to it. log_interp: interpolate crossings in log(quantity).
    ce_floor: levels under the training dtype's CE floor are flagged `below_floor`. relapse:
    one of RELAPSE_RULES, how a fired clock is seen to leave its level later. Gaps only:
    lower_bound (the raw gap's structural bound, where the asymptote search starts) and zero
    (ZEROS: known by construction or fitted).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    levels_key: str
    reference_level: float
    fits: frozenset[str]
    describe: str = ""
    quantity: Quantity | None = None
    inputs_by_model: bool = False
    above: bool = False
    log_interp: bool = True
    ce_floor: bool = False
    lower_bound: float = 0.0
    zero: str = ""
    relapse: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} not in {KINDS}")
        if not self.inputs:
            problems.append("no input variables")
        if unknown := set(self.fits) - set(FIT_KINDS):
            problems.append(f"unknown fits {sorted(unknown)}; choose from {FIT_KINDS}")
        gap_only = {"tail", "kl"} & set(self.fits)
        if self.kind == "gap" and self.zero not in ZEROS:
            problems.append(f"a gap declares its zero: one of {ZEROS}, got {self.zero!r}")
        if self.kind != "gap" and (gap_only or self.zero):
            problems.append(f"tail/kl fits and zero apply to gaps only, not a {self.kind}")
        if self.relapse not in RELAPSE_RULES:
            problems.append(f"relapse {self.relapse!r} not in {RELAPSE_RULES}")
        if self.relapse == "margin" and not self.above:
            problems.append("a margin relapse applies to a clock crossed from below (above=True)")
        if self.kind == "classifier" and "ratio" in self.fits:
            problems.append("the classifier clock is the ratio's denominator, not a ratio")
        if not self.reference_level >= 0:
            problems.append(f"reference_level must be >= 0, got {self.reference_level!r}")
        if problems:
            raise ValueError(f"clock {self.name!r}: " + "; ".join(problems))

    @property
    def normalisation(self) -> str:
        """How the quantity becomes the level's scale (design.md "Clocks: definitions")."""
        if self.kind == "gap":
            return "(G - G_inf) / (G(T_cls(eps_star)) - G_inf), G_inf fitted per member"
        return "none (levels in the quantity's units)"

    @property
    def censoring(self) -> str:
        """When a row is censored (diverged members are flagged `diverged`, never censored)."""
        rule = "no stable crossing within the record"
        if self.kind == "gap":
            rule += ", or T_cls(eps_star) never fired (no normalisation)"
        return rule

    def raw(self, ds: xr.Dataset, settings: dict, cell: dict) -> xr.DataArray | None:
        """The raw quantity of this clock in the store (any dim order), None when absent."""
        if self.quantity is not None:
            return self.quantity(ds, settings, cell)
        return ds[self.inputs[0]] if self.inputs[0] in ds else None

    def levels(self, settings: dict) -> np.ndarray:
        """The clock's levels from the resolved settings, in the quantity's units."""
        return np.atleast_1d(np.asarray(settings[self.levels_key], dtype=float))


CLOCK_SPECS: dict[str, ClockSpec] = {}


def register(spec: ClockSpec) -> ClockSpec:
    """Add a clock to the registry (after the built-ins, in registration order)."""
    if spec.name in CLOCK_SPECS:
        raise ValueError(f"clock {spec.name!r} is already declared")
    if spec.kind == "classifier" and clock_names(kind="classifier"):
        raise ValueError(f"clock {spec.name!r}: there is one classifier clock, `cls`")
    CLOCK_SPECS[spec.name] = spec
    return spec


def clock_spec(name: str) -> ClockSpec:
    """The declared clock called ``name``; a ValueError lists the declared ones."""
    try:
        return CLOCK_SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown clock {name!r}; declared clocks: {', '.join(CLOCK_SPECS)}"
        ) from None


def clock_names(kind: str | None = None, fit: str | None = None) -> tuple[str, ...]:
    """Declared clock names in registration order, of one kind and/or taking one fit."""
    return tuple(
        s.name
        for s in CLOCK_SPECS.values()
        if (kind is None or s.kind == kind) and (fit is None or fit in s.fits)
    )


def takes_fit(clock: str, fit: str) -> bool:
    """Whether a declared clock takes a fit (False for undeclared names)."""
    return clock in CLOCK_SPECS and fit in CLOCK_SPECS[clock].fits


def default_reference_levels() -> dict[str, float]:
    """Every declared clock's default reference level (settings `reference_levels`)."""
    return {s.name: s.reference_level for s in CLOCK_SPECS.values()}


def clock_inputs() -> dict[str, tuple[tuple[str, ...], str]]:
    """clock -> (store variables, note text) for the clocks a store may lack: every clock but
    the classifier (its `train_loss` is required) and those whose inputs depend on the model."""
    return {
        s.name: (s.inputs, s.describe or ", ".join(f"`{v}`" for v in s.inputs))
        for s in CLOCK_SPECS.values()
        if s.kind != "classifier" and not s.inputs_by_model
    }


def _srank(ds: xr.Dataset, settings: dict, cell: dict) -> xr.DataArray | None:
    return srank_gap(ds, settings)


def _energy(ds: xr.Dataset, settings: dict, cell: dict) -> xr.DataArray | None:
    return regularised_energy(ds, cell)


_REP_FITS = frozenset({"law", "tail", "ratio", "scaling"})
_THRESHOLD_FITS = frozenset({"ratio", "scaling"})
_BUILT_IN = (
    ClockSpec("cls", "classifier", ("train_loss",), "eps", 1e-3, frozenset({"law", "scaling"}),
              ce_floor=True, relapse="factor"),
    # srank = ||M||_F^2 / ||M||_2^2 (eq. 2.3) of `srank_matrix`, >= 1; its limit is the rank
    # of the solution's map, a fitted asymptote
    ClockSpec("rep_srank", "gap", ("srank",), "eta", 0.1, _REP_FITS, quantity=_srank,
              describe="stable rank `srank` (seed, step, matrix)", lower_bound=1.0,
              zero="fitted"),
    # E = CE + weight-decay penalty (`quantities.regularised_energy`); E_inf is fitted
    ClockSpec("rep_energy", "gap", ("train_loss", "sqnorm_total", "schatten_energy"), "eta",
              0.1, _REP_FITS | {"kl"}, quantity=_energy, inputs_by_model=True,
              describe="`sqnorm_total` (relu) or `schatten_energy` (deep linear)",
              zero="fitted"),
    # embedding energy outside the key frequencies (App. F.5 S_rule): 0 by construction
    ClockSpec("rep_fourier", "gap", ("fourier_gap",), "eta", 0.1, _REP_FITS, zero="known"),
    # class-separation gap of the last hidden layer (S_sep): 0 only at full collapse
    ClockSpec("rep_sep", "gap", ("separation_gap",), "eta", 0.1, _REP_FITS, zero="fitted"),
    # ||A P_perp||_F^2 (deep linear, teacher with n < d): energy on directions no train input
    # spans, which only weight decay removes; 0 by construction (docs/science.md 6)
    ClockSpec("rep_spurious", "gap", ("spurious_energy",), "eta", 0.1, _REP_FITS, zero="known",
              describe="`spurious_energy` (deep linear, teacher, n < d)"),
    ClockSpec("gen_acc", "threshold", ("test_acc",), "acc_threshold", 0.99, _THRESHOLD_FITS,
              above=True, log_interp=False, relapse="margin"),
    ClockSpec("gen_loss", "threshold", ("test_loss",), "test_loss_level", 1e-2, _THRESHOLD_FITS,
              ce_floor=True, relapse="factor"),
    ClockSpec("gate", "threshold", ("gate_flip_fraction",), "gate_flip_threshold", 1e-3,
              _THRESHOLD_FITS, log_interp=False),
)  # fmt: skip
for _spec in _BUILT_IN:
    register(_spec)

# the built-in clocks (later registrations extend clock_names(), not these snapshots)
CLOCKS = clock_names()
REP_CLOCKS = clock_names(kind="gap")
LAW_CLOCKS = clock_names(fit="law")

# ------------------------------------------------------------------ the clocks table's columns

IDENTITY_COLUMNS = ("study", "grid", "cell_id", "cell_hash")
# per-member tail fit of a gap (tails.fit_tail): asymptote and tail law
TAIL_FIELDS = (
    "g_inf",
    "g_inf_se",
    "g_inf_source",
    "tail_law",
    "tail_delta_aic",
    "tail_timescale",
    "tail_exponent",
    "tail_t0",
    "tail_n",
)
# per-member Kurdyka-Lojasiewicz exponent of an energy gap (kl.fit_kl), and `kl_note` (why not)
KL_FIELDS = ("kl_theta", "kl_theta_se", "kl_n")
TEXT_COLUMNS = ("g_inf_source", "tail_law", "kl_note")
FLAG_COLUMNS = ("censored", "below_floor", "diverged", "pre_fit", "unresolved", "relapse")
CLOCK_COLUMNS = (
    "seed",
    "clock",
    "level",
    "step",
    "tau",
    "censored",
    "below_floor",
    "diverged",
    "dtype",
    "quantity_min",
    "pre_fit",
    "unresolved",
    "relapse",
    "relapse_step",
    "t_cls_ref",
    "raw_level",
    "g_ref",
    *TAIL_FIELDS,
    *KL_FIELDS,
    "kl_note",
)
# a normalised-gap level counts only if it lies more than this many standard errors of the
# fitted asymptote above it (se relative to G(T_cls) - G_inf)
RESOLVE_SE = 2.0
