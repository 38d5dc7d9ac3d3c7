"""``seedrl play`` in a real headless chromium: key presses drive CartPole, the dataset holds exactly them.

Turn by turn is deterministic: the recorded actions equal the keys sent, the flags say how each episode
ended (Escape, the tab closed: truncated; the pole falling: terminal) and the observations equal a replay of
the same seed and actions. A server killed with SIGKILL mid-episode keeps every episode finished before."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from tests.play.play_helpers import cartpole_session, play_process, replay, served
from tests.report.browser import chromium, console_problems, keep_screenshot  # noqa: F401 (fixture)
from seedrl.data import open_dataset
from seedrl.data.stats import validate

pytestmark = pytest.mark.browser
WAIT_S = 30  # an upper bound for replies on a loaded machine, not a timing assertion


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait  # here: without selenium the fixture skips

    WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def _status(driver) -> dict:
    return driver.execute_script("var d = document.getElementById('status').dataset;"
                                 " return {status: d.status, t: +d.t, episodes: +d.episodes};")


def _press(driver, *codes: str):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    names = {"ArrowLeft": Keys.ARROW_LEFT, "ArrowRight": Keys.ARROW_RIGHT, "Escape": Keys.ESCAPE, "Enter": Keys.ENTER}
    chain = ActionChains(driver)
    for code in codes:
        chain.key_down(names[code]).key_up(names[code])
    chain.perform()


def _play_turns(driver, codes, start_t: int = 0):
    """Press ``codes`` one by one (the page queues them in order) and wait for the last reply."""
    _press(driver, *codes)
    _wait(driver, lambda d: _status(d)["t"] == start_t + len(codes), f"step {start_t + len(codes)}")


def _until_terminal(driver, code: str) -> int:
    """Press ``code`` turn by turn until the episode ends; returns the number of presses."""
    episodes, n = _status(driver)["episodes"], 0
    while _status(driver)["episodes"] == episodes:
        n += 1
        _press(driver, code)
        _wait(driver, lambda d: _status(d)["t"] == n or _status(d)["episodes"] > episodes, f"press {n}'s reply")
        assert n < 200
    return n


def _open(driver, url):
    driver.get(url)
    _wait(driver, lambda d: _status(d)["status"] == "ready", "the page's first state")


def _check_episode(ep, seed: int, actions, terminal: bool):
    assert ep.columns["action"][:-1].tolist() == list(actions)
    assert ep.columns["is_first"].tolist() == [True] + [False] * len(actions)
    assert ep.columns["is_last"].tolist() == [False] * len(actions) + [True]
    assert ep.columns["is_terminal"].tolist() == [False] * len(actions) + [terminal]
    obs, rewards, terminated = replay("CartPole-v1", seed, actions)
    assert terminated == terminal
    np.testing.assert_array_equal(ep.columns["observation"], obs)  # the final observation included
    np.testing.assert_array_equal(ep.columns["reward"][:-1], rewards)


def test_key_presses_drive_cartpole_turn_by_turn(chromium, tmp_path, tmp_path_factory):
    console_problems(chromium)
    session = cartpole_session(tmp_path / "ds", player="tester", seed=5)
    keys = ["ArrowRight", "ArrowLeft", "ArrowLeft", "Enter", "ArrowRight"]  # Enter: one turn of the default action
    with served(session) as url:
        _open(chromium, url + "/")
        assert chromium.find_element("id", "frame").get_attribute("src").startswith("data:image/png;base64,")
        _play_turns(chromium, keys)
        keep_screenshot(chromium, tmp_path_factory, "play.png")
        _press(chromium, "Escape")
        _wait(chromium, lambda d: _status(d)["episodes"] == 1, "the escaped episode saved")
        assert "ended by escape" in chromium.find_element("id", "last").text
        presses = _until_terminal(chromium, "ArrowRight")
        assert "ended by terminal" in chromium.find_element("id", "last").text
        assert console_problems(chromium) == []
        chromium.get("about:blank")
    ds = open_dataset(tmp_path / "ds")
    assert validate(ds) == []
    first, second = ds
    _check_episode(first, 5, [1, 0, 0, 0, 1], terminal=False)
    _check_episode(second, 6, [1] * presses, terminal=True)
    assert [e.metadata["ended_by"] for e in ds] == ["escape", "terminal"]
    assert {e.metadata["player_id"] for e in ds} == {"tester"}


def test_closing_the_tab_ends_the_episode_as_truncated(chromium, tmp_path):
    session = cartpole_session(tmp_path / "ds", seed=0)
    with served(session) as url:
        home = chromium.current_window_handle
        chromium.switch_to.new_window("tab")
        _open(chromium, url + "/")
        _play_turns(chromium, ["ArrowLeft", "ArrowRight", "ArrowLeft"])
        chromium.close()  # the page's pagehide beacon ends the episode
        chromium.switch_to.window(home)
        _wait(chromium, lambda d: len(session.saved) == 1, "the closed tab's episode saved")
    (ep,) = open_dataset(tmp_path / "ds")
    _check_episode(ep, 0, [0, 1, 0], terminal=False)
    assert ep.metadata["ended_by"] == "closed"


def test_fixed_frame_rate_plays_the_held_key_then_the_default(chromium, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    session = cartpole_session(tmp_path / "ds", fps=20)
    with served(session) as url:
        _open(chromium, url + "/")
        ActionChains(chromium).key_down(Keys.ARROW_RIGHT).perform()
        _wait(chromium, lambda d: _status(d)["t"] >= 2 or _status(d)["episodes"] == 1, "two steps with the key held")
        ActionChains(chromium).key_up(Keys.ARROW_RIGHT).perform()
        _wait(chromium, lambda d: _status(d)["t"] >= 6 or _status(d)["episodes"] == 1, "steps with no key held")
        if _status(chromium)["status"] == "playing":  # losing focus pauses the game
            chromium.execute_script("window.dispatchEvent(new Event('blur'));")
            assert chromium.find_element("id", "error").text.startswith("paused (the page lost focus)")
        _press(chromium, "Escape")
        _wait(chromium, lambda d: _status(d)["episodes"] == 1, "the episode saved")
        chromium.get("about:blank")
    (ep,) = open_dataset(tmp_path / "ds")
    actions = ep.columns["action"][:-1].tolist()
    first_zero = actions.index(0) if 0 in actions else len(actions)
    assert actions[0] == 1 and first_zero >= 2 and set(actions[first_zero:]) <= {0}  # held: 1s; released: 0s
    assert ep.metadata["mode"] == "fps" and ep.metadata["fps"] == 20.0


@pytest.mark.serial
def test_server_killed_mid_episode_keeps_every_finished_episode(chromium, tmp_path):
    ds_path = tmp_path / "ds"
    with play_process("CartPole-v1", "--record", str(ds_path), "--turns", "--seed", "20", "--player", "k") as (proc, url):
        _open(chromium, url + "/")
        _play_turns(chromium, ["ArrowLeft", "ArrowRight"])
        _press(chromium, "Escape")
        _wait(chromium, lambda d: _status(d)["episodes"] == 1, "episode 1 saved")
        presses = _until_terminal(chromium, "ArrowLeft")
        _play_turns(chromium, ["ArrowRight", "ArrowRight"])  # episode 3, in progress
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
        chromium.get("about:blank")
    ds = open_dataset(ds_path)
    assert validate(ds) == []
    assert len(ds) == 2  # the episode in progress is the only one lost
    _check_episode(ds[0], 20, [0, 1], terminal=False)
    _check_episode(ds[1], 21, [0] * presses, terminal=True)
