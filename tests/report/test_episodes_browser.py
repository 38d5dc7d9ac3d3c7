"""The episode browser in a real headless chromium: a known game episode (frames, scrubber, action, reward,
observation) and a known language episode (prompt, completion, reward, log-prob heat map) render with the right
values; filter, sort and search change the list; no console errors; a screenshot is kept."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from seedrl.cli import main
from tests.report.browser import chromium, console_problems, keep_screenshot  # noqa: F401 (fixture)
from tests.report.episode_sets import COMPLETIONS, PROMPTS, game_dataset, game_frame, language_dataset

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    d = tmp_path_factory.mktemp("episodes")
    game_dataset(d / "game")
    language_dataset(d / "lm")
    out = d / "episodes.html"
    assert main(["report", "--data", str(d / "game"), "--data", str(d / "lm"), "--episodes", "2",
                 "--out", str(out), "--title", "episode browser"]) == 0
    return out


def _rows(driver, sid):
    return [r.get_attribute("data-id") for r in driver.find_elements("css selector", f"#{sid}-list tr[data-id]")]


def _cell(driver, sid, key):
    return driver.find_element("css selector", f'#{sid}-detail td[data-f="{key}"]').text


def _scrub(driver, sid, t):
    driver.execute_script(f"var s = document.getElementById('{sid}-scrub'); s.value = {t};"
                          "s.dispatchEvent(new Event('input'));")


def _png(uri: str) -> np.ndarray:
    from PIL import Image

    head, b64 = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_game_episode_frames_scrubber_and_values(chromium, page, tmp_path_factory):
    chromium.get(page.as_uri())
    sid = "episodes-0"
    assert _rows(chromium, sid) == ["g0", "g1", "g2"]
    assert chromium.find_element("id", f"{sid}-detail").get_attribute("data-id") == "g0"  # the first, shown at once
    chromium.find_element("css selector", f'#{sid}-list tr[data-id="g1"]').click()
    assert "episode g1 · 5 steps · return 0" in chromium.find_element("css selector", f"#{sid}-detail h3").text
    _scrub(chromium, sid, 3)
    # episode 1, step 3: action (3 + 1) % 3, reward 0.5*3 - 1, return so far sum_{t<=3} (0.5 t - 1), state (3, -1)
    assert [_cell(chromium, sid, k) for k in ("step", "action", "reward", "return", "observation/state")] == \
        ["3 / 4", "1", "0.5", "-1", "[3, -1]"]
    img = chromium.find_element("css selector", f'#{sid}-detail img.ep-frame[data-path="observation/pixels"]')
    assert img.get_attribute("data-step") == "3"
    np.testing.assert_array_equal(_png(img.get_attribute("src")), game_frame(1, 3))
    assert chromium.execute_script(f"return seedrl.charts['{sid}'][0].series.map(function (s) {{ return s.label; }})") \
        == ["step", "reward", "observation/state[0]", "observation/state[1]"]
    assert console_problems(chromium) == []
    keep_screenshot(chromium, tmp_path_factory, "episodes_game.png")


def test_detail_past_the_inline_ones_says_how_to_get_it(chromium, page):
    chromium.get(page.as_uri())
    chromium.find_element("css selector", '#episodes-0-list tr[data-id="g2"]').click()
    assert "seedrl report --serve" in chromium.find_element("id", "episodes-0-detail").text


def test_filter_sort_and_search_change_the_list(chromium, page):
    chromium.get(page.as_uri())
    sid = "episodes-0"
    chromium.find_element("id", f"{sid}-min").send_keys("0")  # returns 3, 0, -4.5: g2 goes
    assert _rows(chromium, sid) == ["g0", "g1"]
    assert chromium.find_element("id", f"{sid}-count").text.startswith("2 of 3 episodes match")
    chromium.find_element("css selector", f'#{sid}-sort option[value="return:asc"]').click()
    assert _rows(chromium, sid) == ["g1", "g0"]
    chromium.find_element("id", f"{sid}-search").send_keys("actor-1")  # metadata agent_id
    assert _rows(chromium, sid) == ["g1"]
    chromium.find_element("id", "episodes-1-search").send_keys("PRIME")  # prompt text, any case
    assert _rows(chromium, "episodes-1") == ["lm1"]
    chromium.find_element("css selector", "#episodes-1-sort option[value='return:desc']").click()
    chromium.find_element("id", "episodes-1-search").clear()
    chromium.execute_script("document.getElementById('episodes-1-search').dispatchEvent(new Event('input'))")
    assert _rows(chromium, "episodes-1") == ["lm0", "lm1", "lm2"]  # rewards 1, 0.25, -0.5
    assert console_problems(chromium) == []


def test_language_episode_prompt_completion_reward_and_heat_map(chromium, page, tmp_path_factory):
    chromium.get(page.as_uri())
    sid = "episodes-1"
    chromium.find_element("css selector", f'#{sid}-list tr[data-id="lm0"]').click()
    detail = chromium.find_element("id", f"{sid}-detail")
    assert detail.find_element("css selector", "pre.ep-prompt").text == PROMPTS[0]
    assert detail.find_element("css selector", "pre.ep-completion").text == COMPLETIONS[0]
    assert detail.find_element("css selector", "b.ep-reward").text == "1"
    spans = detail.find_elements("css selector", ".ep-heat span.tok")
    assert "".join(s.text or " " for s in spans) == COMPLETIONS[0]  # one character per token
    lps = [float(s.get_attribute("data-lp")) for s in spans]
    np.testing.assert_allclose(lps, -0.25 * np.arange(len(COMPLETIONS[0])))
    assert [s.get_attribute("data-token") for s in spans[:3]] == ["100", "101", "102"]
    # colour = hue 120 p: token 0 has p = 1 (green), the last exp(-2.5) (red-ish)
    colours = chromium.execute_script("return Array.prototype.map.call(arguments[0], function (s) {"
                                      " return getComputedStyle(s).backgroundColor; })", [spans[0], spans[-1]])
    assert colours[0] != colours[1]
    assert spans[2].get_attribute("title") == "token 102: log p = -0.5"
    assert console_problems(chromium) == []
    chromium.find_element("id", sid).location_once_scrolled_into_view
    keep_screenshot(chromium, tmp_path_factory, "episodes_language.png")
