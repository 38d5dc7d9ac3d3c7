"""The page builder: sections, safe JSON embedding, assets inlined (no network)."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings, strategies as st

from seedrl.report.html.page import Section, build_page, embed_json


def _data_of(page: str, sid: str):
    m = re.search(rf'<script type="application/json" id="data-{sid}">(.*?)</script>', page, re.S)
    assert m, sid
    return json.loads(m.group(1))


def test_sections_in_order_with_their_data_and_toc():
    page = build_page([Section("a", "First <A>", "<p>one</p>", {"x": [1, 2]}),
                       Section("b", "Second", "<p>two</p>", {"y": "z"}, script="window.ranB = 1;")], "T & t")
    assert page.index('id="a"') < page.index('id="b"')
    assert "<title>T &amp; t</title>" in page and "First &lt;A&gt;" in page
    assert '<a href="#a">' in page and '<a href="#b">' in page
    assert _data_of(page, "a") == {"x": [1, 2]} and _data_of(page, "b") == {"y": "z"}
    assert "window.ranB = 1;" in page


def test_self_contained_no_external_urls():
    page = build_page([Section("a", "A", "", {})], "t")
    assert "uPlot" in page and "window.seedrl" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page


def test_script_close_in_data_cannot_break_out():
    nasty = {"s": "</script><script>alert(1)</script><!-- \u2028 & >", "k</script>": 1}
    page = build_page([Section("a", "A", "", nasty)], "t")
    body = re.search(r'id="data-a">(.*?)</script>', page, re.S).group(1)
    assert "<" not in body and ">" not in body
    assert json.loads(body) == nasty


def test_nan_and_inf_become_null():
    assert json.loads(embed_json({"a": [1.0, math.nan, math.inf], "b": -math.inf})) == {"a": [1.0, None, None], "b": None}


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False, allow_infinity=False),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4), max_leaves=20))
@settings(max_examples=150, deadline=None)
def test_embed_json_round_trips_and_never_holds_angle_brackets(value):
    text = embed_json({"v": value})
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == {"v": value}


def test_bad_or_duplicate_ids_are_one_line_errors():
    with pytest.raises(ValueError, match=r"Section.id: '1x'"):
        Section("1x", "t", "")
    with pytest.raises(ValueError, match=r"Section.id: 'a' is used by more than one"):
        build_page([Section("a", "t", ""), Section("a", "u", "")], "t")


def test_browser_tests_skip_with_a_reason_without_chromium(monkeypatch):
    import shutil

    from tests.report import browser

    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert browser.skip_reason() == "/nonexistent/chromium is absent (apt-get install chromium chromium-driver)"
