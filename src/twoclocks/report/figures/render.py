"""Writing charts: self-contained offline HTML (the cached vega bundle), PNG and SVG."""

from __future__ import annotations

import functools
from pathlib import Path

import altair as alt
import vl_convert as vlc


@functools.cache
def js_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one offline script (vl-convert), safe inside <script>."""
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert()).replace(
        "</script", "<\\/script"
    )


def spec_json(chart: alt.TopLevelMixin) -> str:
    """The chart's Vega-Lite spec as deterministic JSON, safe to embed in HTML."""
    import json

    return json.dumps(chart.to_dict(), sort_keys=True).replace("</", "<\\/")


def chart_html(chart: alt.TopLevelMixin, title: str = "figure") -> str:
    """A self-contained offline page for one chart (what altair's `save(inline=True)` writes)."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        f"{title}</title>\n<script>{js_bundle()}</script></head>\n<body>"
        '<div id="vis"></div>\n<script>vegaEmbed("#vis", '
        f'{spec_json(chart)}, {{"actions": false}}).catch(console.error);</script>'
        "\n</body></html>\n"
    )


def save_chart(chart: alt.TopLevelMixin, base_path: str | Path) -> list[Path]:
    """Write base.html (self-contained, offline), base.png and base.svg; return the paths.

    HTML inlines the cached vl-convert bundle (as `save(inline=True)` does, without rebuilding
    the bundle per chart); PNG and SVG come from vl-convert, deterministic for the same spec.
    """
    base = Path(base_path)
    base.parent.mkdir(parents=True, exist_ok=True)
    spec = chart.to_dict()
    paths = [base.with_suffix(".html"), base.with_suffix(".png"), base.with_suffix(".svg")]
    paths[0].write_text(chart_html(chart, base.name), encoding="utf-8")
    from altair.utils._importers import vl_version_for_vl_convert

    vl = vl_version_for_vl_convert()
    paths[1].write_bytes(vlc.vegalite_to_png(spec, vl_version=vl, scale=2))
    paths[2].write_text(stable_svg(vlc.vegalite_to_svg(spec, vl_version=vl)), encoding="utf-8")
    return paths


def stable_svg(svg: str) -> str:
    """Renumber Vega's process-global gradient ids (colour-scale legends) from 0 in order of
    appearance, so the same spec gives a byte-identical SVG however many charts came before."""
    import re

    ids: dict[str, str] = {}
    return re.sub(
        r"gradient_\d+", lambda m: ids.setdefault(m.group(0), f"gradient_{len(ids)}"), svg
    )
