"""Annotating in a real headless chromium: a label, a rating, a note and a step tag added through the served
page are read back with the Python API, filter the page's list and ``seedrl data filter --label``, travel in
TFDS / HF exports, and show again after a reload; a server error is shown on the page; the segments' bytes never
change. A page on disk shows the annotations read-only."""

from __future__ import annotations

import json

import pytest

from seedrl.cli import main
from seedrl.data import open_dataset
from seedrl.data.annotations import Annotations, EpisodeAnnotations
from tests.report.browser import chromium, console_problems, keep_screenshot  # noqa: F401 (fixture)
from tests.report.episode_sets import game_dataset
from tests.report.serving import served
from tests.report.test_annotate_serve import segment_hashes

pytestmark = pytest.mark.browser
WAIT_S = 60  # an upper bound for a save or a 2 s poll on a loaded machine, not a timing assertion
SID = "episodes-0"


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait  # here: without selenium the fixture skips

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def _rows(driver):
    return driver.execute_script(f"return Array.prototype.map.call(document.querySelectorAll('#{SID}-list tr[data-id]'),"
                                 " function (r) { return r.getAttribute('data-id'); })")


def _ann_cells(driver) -> dict:
    """Episode id -> the list's annotations cell (the 5th column)."""
    return driver.execute_script(f"var out = {{}}; document.querySelectorAll('#{SID}-list tr[data-id]').forEach("
                                 "function (r) { out[r.getAttribute('data-id')] = r.children[4].textContent; });"
                                 " return out;")


def _shown(driver) -> dict:
    """What the detail's annotation box shows."""
    return driver.execute_script(
        f"var box = document.getElementById('{SID}-ann'), all = function (s, f) {{"
        " return Array.prototype.map.call(box.querySelectorAll(s), f); };"
        " return {labels: all('.ann-chip', function (c) { return c.getAttribute('data-label'); }),"
        " rating: box.querySelector('[data-rating]').getAttribute('data-rating'),"
        " notes: all('.ann-note', function (n) { return n.firstChild.textContent; }),"
        " tags: all('.ann-tag', function (t) { return t.getAttribute('data-step') + ':' + t.getAttribute('data-tag'); })};")


def _select(driver, episode_id):
    driver.find_element("css selector", f'#{SID}-list tr[data-id="{episode_id}"]').click()
    _wait(driver, lambda d: d.find_element("id", f"{SID}-detail").get_attribute("data-id") == episode_id
          and d.find_elements("id", f"{SID}-ann"), f"the detail of {episode_id}")


def _type_and_add(driver, key, text):
    box = driver.find_element("id", f"{SID}-ann-{key}")
    box.clear()
    box.send_keys(text)
    driver.find_element("id", f"{SID}-ann-{key}-add").click()


def _scrub(driver, t):
    driver.execute_script(f"var s = document.getElementById('{SID}-scrub'); s.value = {t};"
                          "s.dispatchEvent(new Event('input'));")


def test_annotate_through_the_served_page(chromium, tmp_path, tmp_path_factory):
    data = game_dataset(tmp_path / "game")  # g0, g1, g2: 4, 5, 6 steps
    before = segment_hashes(data)
    console_problems(chromium)  # reading the log empties it: only this test's entries count below
    with served(["--data", str(data)]) as url:
        chromium.get(url)
        _select(chromium, "g1")
        _type_and_add(chromium, "label", "good")
        _wait(chromium, lambda d: _shown(d)["labels"] == ["good"], "the label chip")
        _type_and_add(chromium, "label", "slow")
        _wait(chromium, lambda d: _shown(d)["labels"] == ["good", "slow"], "the second label")
        chromium.find_element("css selector", f'#{SID}-ann .ann-chip[data-label="slow"] .ann-x').click()  # remove
        _wait(chromium, lambda d: _shown(d)["labels"] == ["good"], "the label removed")
        chromium.find_element("css selector", f'#{SID}-ann-rating option[value="4"]').click()
        _wait(chromium, lambda d: _shown(d)["rating"] == "4", "the rating")
        _type_and_add(chromium, "note", "recovers well")
        _wait(chromium, lambda d: _shown(d)["notes"] == ["recovers well"], "the note")
        _scrub(chromium, 3)  # the tag goes to the scrubber's step
        assert chromium.find_element("id", f"{SID}-ann-step").get_attribute("value") == "3"
        _type_and_add(chromium, "tag", "mistake here")
        _wait(chromium, lambda d: _shown(d)["tags"] == ["3:mistake here"], "the step tag")
        cell = f'#{SID}-detail td[data-f="tags"]'
        assert chromium.find_element("css selector", cell).text == "mistake here"  # at step 3, shown in the table
        _scrub(chromium, 2)
        assert chromium.find_element("css selector", cell).text == ""
        # a value the server refuses: its message on the page, nothing saved
        chromium.find_element("id", f"{SID}-ann-step").clear()
        chromium.find_element("id", f"{SID}-ann-step").send_keys("9")
        _type_and_add(chromium, "tag", "late")
        _wait(chromium, lambda d: d.find_element("id", f"{SID}-ann-error").text, "the error message")
        assert chromium.find_element("id", f"{SID}-ann-error").text == "step 9: episode 'g1' has steps 0..4"
        assert chromium.find_element("id", f"{SID}-ann-tag").get_attribute("value") == "late"  # kept to fix
        # chromium logs the refused request (and nothing else so far)
        assert [("400 (Bad Request)" in p["message"], p["source"]) for p in console_problems(chromium)] == \
            [(True, "network")]

        want = EpisodeAnnotations(["good"], 4.0, ["recovers well"], {3: ["mistake here"]})
        assert Annotations(data).all() == {"g1": want}  # read back with the Python API
        assert _ann_cells(chromium)["g1"] == "good · ★4 · 1 note · 1 tagged step"

        # another writer labels g2: the page's poll shows it; filter the list by label
        Annotations(data).label("g2", "good")
        _wait(chromium, lambda d: _ann_cells(d)["g2"] == "good", "g2's label from the poll")
        chromium.find_element("css selector", f'#{SID}-label option[value="good"]').click()
        assert _rows(chromium) == ["g1", "g2"]
        chromium.find_element("css selector", f'#{SID}-label option[value=""]').click()
        assert _rows(chromium) == ["g0", "g1", "g2"]

        chromium.refresh()  # a new page load shows what was saved
        _wait(chromium, lambda d: _rows(d) == ["g0", "g1", "g2"], "the list after reload")
        assert _ann_cells(chromium) == {"g0": "", "g1": "good · ★4 · 1 note · 1 tagged step", "g2": "good"}
        _select(chromium, "g1")
        assert _shown(chromium) == {"labels": ["good"], "rating": "4", "notes": ["recovers well"],
                                    "tags": ["3:mistake here"]}
        _scrub(chromium, 3)
        assert chromium.find_element("css selector", cell).text == "mistake here"
        assert console_problems(chromium) == []
        chromium.find_element("id", SID).location_once_scrolled_into_view
        keep_screenshot(chromium, tmp_path_factory, "report_annotate.png")
        chromium.get("about:blank")  # stop polling before the server goes
    assert segment_hashes(data) == before  # the page never rewrote a segment

    out = tmp_path / "good"
    assert main(["data", "filter", str(data), str(out), "--label", "good"]) == 0
    assert open_dataset(out).episode_ids == ["g1", "g2"]
    formats = ["tfds"]
    try:
        import datasets  # noqa: F401
        formats.append("hf")
    except ImportError:
        pass
    for fmt in formats:
        exported, back = tmp_path / fmt, tmp_path / f"{fmt}_back"
        assert main(["data", "convert", str(data), str(exported), "--to", fmt]) == 0
        assert main(["data", "convert", str(exported), str(back), "--from", fmt]) == 0
        meta = {str(ep.metadata["episode_id"]): ep.metadata for ep in open_dataset(back)}
        assert json.loads(meta["g1"]["annotations"]) == want.to_json(), fmt
        assert meta["g0"]["annotations"] == "{}"


def test_a_page_on_disk_shows_annotations_read_only(chromium, tmp_path):
    data = game_dataset(tmp_path / "game")
    notes = Annotations(data)
    notes.label("g0", "good")
    notes.rate("g0", 2.5)
    notes.tag("g0", 1, "slip")
    notes.label("g2", "bad")
    out = tmp_path / "page.html"
    assert main(["report", "--data", str(data), "--out", str(out)]) == 0
    chromium.get(out.as_uri())
    assert chromium.find_element("id", f"{SID}-detail").get_attribute("data-id") == "g0"
    assert _shown(chromium) == {"labels": ["good"], "rating": "2.5", "notes": [], "tags": ["1:slip"]}
    assert chromium.find_elements("css selector", f"#{SID}-ann input, #{SID}-ann select, #{SID}-ann button") == []
    assert "read-only" in chromium.find_element("id", f"{SID}-ann").text
    _scrub(chromium, 1)
    assert chromium.find_element("css selector", f'#{SID}-detail td[data-f="tags"]').text == "slip"
    chromium.find_element("css selector", f'#{SID}-label option[value="bad"]').click()
    assert _rows(chromium) == ["g2"]
    chromium.find_element("css selector", f'#{SID}-label option[value=""]').click()
    chromium.find_element("id", f"{SID}-search").send_keys("SLIP")  # the search box matches tags and notes too
    assert _rows(chromium) == ["g0"]
    assert console_problems(chromium) == []
