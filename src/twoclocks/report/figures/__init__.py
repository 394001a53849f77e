"""Altair figures of a study: the paper's Figs. 1-3, clock laws and mechanism diagnostics.

One module per family of figures (``curves``: Figs. 1 and 3; ``fourier``: Fig. 2; ``clocks``;
``mechanism``; ``deep_linear``; ``reduction``: the frozen-gate run against the gate drift),
each figure registered with its file stem and caption (``registry.figure``); ``common`` holds
the shared data shaping, ``render`` the writers. Each figure function returns an ``alt.Chart``
(or layered/concatenated chart) or raises ``FigureSkipped`` when the study lacks its inputs.
Adding a figure is one decorated function (docs/design.md, "Extending twoclocks").
"""

from __future__ import annotations

# the families register their figures on import, in this order: the report's
# isort: off
from twoclocks.report.figures import curves, fourier, clocks, mechanism, deep_linear, reduction

# isort: on
from twoclocks.report.figures.clocks import (
    fig_cls_clock,
    fig_depth_clocks,
    fig_rep_clock,
    fig_separation_ratio,
)
from twoclocks.report.figures.common import (
    FLOOR,
    HEATMAP_COLUMNS,
    HEIGHT,
    MAX_POINTS,
    MAX_ROWS,
    WIDTH,
    FigureSkipped,
    _bands,
    _deep,
    _relu,
    log_domain,
    thin_indices,
)
from twoclocks.report.figures.curves import fig_loss, fig_loss_srank
from twoclocks.report.figures.deep_linear import fig_deep_lazy, fig_schatten, fig_singular_values
from twoclocks.report.figures.fourier import (
    additive_order,
    fig_fourier_spectra,
    fig_generator_heatmap,
    fig_key_frequencies,
    fourier_spectrum,
    generator_order,
    key_frequency_phases,
    primitive_root,
)
from twoclocks.report.figures.mechanism import fig_gates, fig_grad_bounds
from twoclocks.report.figures.registry import (
    FIGURES,
    Figure,
    build_figures,
    caption,
    figure,
    figure_named,
)
from twoclocks.report.figures.render import chart_html, js_bundle, save_chart, spec_json, stable_svg

__all__ = [
    "FIGURES",
    "FLOOR",
    "HEATMAP_COLUMNS",
    "HEIGHT",
    "MAX_POINTS",
    "MAX_ROWS",
    "WIDTH",
    "Figure",
    "FigureSkipped",
    "additive_order",
    "build_figures",
    "caption",
    "chart_html",
    "clocks",
    "curves",
    "deep_linear",
    "fig_cls_clock",
    "fig_deep_lazy",
    "fig_depth_clocks",
    "fig_fourier_spectra",
    "fig_gates",
    "fig_generator_heatmap",
    "fig_key_frequencies",
    "fig_grad_bounds",
    "fig_loss",
    "fig_loss_srank",
    "fig_rep_clock",
    "fig_schatten",
    "fig_separation_ratio",
    "fig_singular_values",
    "figure",
    "figure_named",
    "fourier",
    "fourier_spectrum",
    "generator_order",
    "key_frequency_phases",
    "js_bundle",
    "log_domain",
    "mechanism",
    "primitive_root",
    "reduction",
    "save_chart",
    "spec_json",
    "stable_svg",
    "thin_indices",
    "_bands",
    "_deep",
    "_relu",
]
