"""One self-contained HTML document assembled from sections.

A :class:`Section` is ``(id, title, html, data)``: ``html`` is the section's
markup (it goes inside ``<section id="...">``), ``data`` a JSON-able dict
embedded as ``<script type="application/json" id="data-<id>">`` that the
section's own script reads with ``seedrl.data("<id>")``. ``script`` (optional)
is the section's JavaScript, run after the page's shared assets (uPlot and the
``seedrl`` helpers) are loaded.

The page works opened from disk with no network: the chart library (uPlot,
MIT, vendored from npm into ``assets/``), its CSS and every script are inlined.

Safe embedding: JSON inside a ``<script>`` element ends at the first
``</script`` whatever the JSON quoting, so :func:`embed_json` escapes ``<``,
``>`` and ``&`` as ``\\u003c`` ... (still valid JSON, parsed back to the same
strings) and also U+2028/U+2029. NaN and infinities are not JSON: they become
``null``.
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"
# series colours (the same list as page.js's seedrl.color)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass
class Section:
    """One panel of the page: ``id`` (letters, digits, ``-``/``_``), a heading, its markup, its data and script."""

    id: str
    title: str
    html: str
    data: dict = field(default_factory=dict)
    script: str = ""

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"Section.id: {self.id!r} is not a letter followed by letters, digits, '-' or '_'")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(data: Any) -> str:
    """``data`` as JSON safe inside a ``<script>`` element (no ``</script>``, no ``<!--``); NaN/inf -> null."""
    text = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False, default=_default)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _finite(value.tolist())
    return str(value)


def asset(name: str) -> str:
    """The text of a vendored asset (``uPlot.iife.min.js``, ``uPlot.min.css``, ``page.js``, ``episodes.js``,
    ``annotate.js``, ``page.css``)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def _inline_script(code: str) -> str:
    # a literal "</script" inside code would end the element: split it (only strings can hold it)
    return "<script>\n" + code.replace("</script", "<\\/script") + "\n</script>"


def build_page(sections: list[Section], title: str) -> str:
    """The whole document: head (inlined CSS), a table of contents, each section, data, then scripts."""
    ids = [s.id for s in sections]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"Section.id: {dup[0]!r} is used by more than one section")
    esc = _html.escape
    toc = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    body = []
    for s in sections:
        body.append(f'<section id="{s.id}" class="panel"><h2>{esc(s.title)}</h2>\n{s.html}\n</section>')
    data = "".join(
        f'<script type="application/json" id="data-{s.id}">{embed_json(s.data)}</script>\n' for s in sections
    )
    scripts = "\n".join(_inline_script(f"(function(){{\n{s.script}\n}})();") for s in sections if s.script)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{esc(title)}</title>\n"
        f"<style>\n{asset('uPlot.min.css')}\n{asset('page.css')}\n</style>\n</head><body>\n"
        f"<header><h1>{esc(title)}</h1><nav>{toc}</nav></header>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n"
        + data
        + _inline_script(asset("uPlot.iife.min.js"))
        + "\n"
        + _inline_script(asset("page.js"))
        + "\n"
        + _inline_script(asset("episodes.js"))
        + "\n"
        + _inline_script(asset("annotate.js"))
        + "\n"
        + scripts
        + "\n</body></html>\n"
    )
