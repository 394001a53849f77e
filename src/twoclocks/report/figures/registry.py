"""The figure registry: every figure registers under its file stem with a caption.

A figure is a function decorated with ``@figure(name, caption, **options)`` in a module of this
package (one module per family). Its parameters name the inputs it reads, any of ``study``
(the trajectories), ``clocks``, ``fits``, ``max_points``, ``claim_settings`` (the config's
``claims`` section: which matrix, levels and ratio the claims judge) and ``measures`` (the replay
stage's table, None when not given); ``options`` are fixed keyword
arguments (one function may register twice, e.g. Fig. 2 for E and for U). The caption says what
the plot shows and its units, never a verdict (claims judge; figures show). The report draws the
figures in registration order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import altair as alt
import pandas as pd

INPUTS = ("study", "clocks", "fits", "max_points", "claim_settings", "measures")


@dataclass(frozen=True)
class Figure:
    """One registered figure: file stem, caption, the function drawing it and its options."""

    name: str
    caption: str
    make: Callable[..., alt.TopLevelMixin]
    options: dict[str, Any] = field(default_factory=dict)

    def draw(self, inputs: dict[str, Any]) -> alt.TopLevelMixin:
        """The chart from the inputs its function names (see `INPUTS`) and its options."""
        params = inspect.signature(self.make).parameters
        return self.make(**{k: v for k, v in inputs.items() if k in params}, **self.options)


FIGURES: dict[str, Figure] = {}


def figure(name: str, caption: str, **options: Any) -> Callable:
    """Register the decorated function as figure `name` (its file stem) with `caption`."""

    def register(make: Callable) -> Callable:
        if not caption or not caption.strip():
            raise ValueError(f"figure {name!r} needs a caption: what the plot shows, its units")
        if name in FIGURES and FIGURES[name].make is not make:
            raise ValueError(f"figure {name!r} is registered twice")
        params = inspect.signature(make).parameters
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ValueError(f"figure {name!r}: {make.__name__} takes no {unknown}")
        FIGURES[name] = Figure(name, caption.strip(), make, dict(options))
        return make

    return register


def figure_named(name: str) -> Figure:
    """The registered figure `name`; a KeyError lists the registered names."""
    try:
        return FIGURES[name]
    except KeyError:
        raise KeyError(
            f"unknown figure {name!r}; registered figures: {', '.join(FIGURES)}"
        ) from None


def caption(name: str) -> str:
    """The caption of the registered figure `name`."""
    return figure_named(name).caption


def build_figures(
    study: Any,
    clocks: pd.DataFrame | None,
    fits: dict | None,
    max_points: int | None = None,
    claim_settings: dict | None = None,
    measures: pd.DataFrame | None = None,
) -> tuple[dict[str, alt.TopLevelMixin], list[str]]:
    """All figures this study supports, keyed by file stem, and notes on the skipped ones.

    `max_points`: log points per line after thinning (config `report.max_points_per_line`;
    default its schema default).
    """
    from twoclocks.report.figures.common import MAX_POINTS, FigureSkipped

    inputs = {
        "study": study,
        "clocks": clocks if clocks is not None else pd.DataFrame(),
        "fits": fits,
        "max_points": MAX_POINTS if max_points is None else max_points,
        "claim_settings": claim_settings,
        "measures": measures,
    }
    charts, notes = {}, []
    for name, fig in FIGURES.items():
        try:
            charts[name] = fig.draw(inputs)
        except FigureSkipped as err:
            notes.append(f"{name}: skipped ({err})")
        except KeyError as err:
            notes.append(f"{name}: skipped (missing {err})")
    return charts, notes
