"""The served page in a real headless chromium: it redraws curves and lists new episodes while rows are appended
to ``metrics.jsonl``, and while a short CartPole run trains; episode details load on demand; no console errors."""

from __future__ import annotations

import json
import threading

import pytest

from tests.report.browser import chromium, console_problems  # noqa: F401 (fixture)
from tests.report.episode_sets import game_dataset
from tests.report.serving import served

pytestmark = pytest.mark.browser
WAIT_S = 60  # an upper bound for the page's 2 s polls on a loaded machine, not a timing assertion

POINTS = ("var k = arguments[0], u = (seedrl.charts.curves || []).filter(function (u) { return u.seedrlKey === k; })[0];"
          " return u ? u.data[0].length : 0;")
CLICK = "var r = document.querySelector(arguments[0]); if (!r) return false; r.click(); return true;"


def _append(path, start: int, stop: int):
    with open(path / "metrics.jsonl", "a") as fh:
        for i in range(start, stop):
            fh.write(json.dumps({"frames": 10 * i, "updates": i, "elapsed_s": 0.1 * i, "loss": 1.0 / (i + 1)}) + "\n")


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait  # here: without selenium the fixture skips

    WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def _list(driver, sid="episodes-0"):
    """The listed ids, read in one script (the list is redrawn as episodes arrive)."""
    return driver.execute_script(f"return Array.prototype.map.call(document.querySelectorAll('#{sid}-list tr[data-id]'),"
                                 " function (r) { return r.getAttribute('data-id'); })")


def test_served_page_follows_appended_rows_and_episodes(chromium, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: live\nseed: 0\n")
    _append(run, 0, 5)
    game_dataset(run / "episodes", episodes=1)
    console_problems(chromium)  # reading the log empties it: only this test's entries count below
    with served([str(run)]) as url:
        chromium.get(url)
        assert chromium.execute_script(POINTS, "loss") == 5
        assert _list(chromium) == ["g0"]
        _append(run, 5, 12)
        _wait(chromium, lambda d: d.execute_script(POINTS, "loss") == 12, "the loss curve to get 12 points")
        assert chromium.find_element("id", "live-status").get_attribute("data-rows") == "12"
        game_dataset(run / "episodes", episodes=2, start=1)
        _wait(chromium, lambda d: _list(d) == ["g0", "g1", "g2"], "episodes g1 and g2 in the list")
        assert chromium.execute_script(CLICK, '#episodes-0-list tr[data-id="g2"]')  # not inline: fetched
        _wait(chromium, lambda d: d.find_element("id", "episodes-0-detail").get_attribute("data-id") == "g2",
              "the detail of g2")
        assert "6 steps · return -4.5" in chromium.find_element("css selector", "#episodes-0-detail h3").text
        assert console_problems(chromium) == []
        chromium.get("about:blank")  # stop polling before the server goes


def _lines(path) -> int:
    try:
        return sum(1 for _ in open(path))
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_served_page_updates_while_cartpole_trains(chromium, tmp_path):
    """The run pauses itself (on_update) twice: once its first metric row is written (the page opens then), and
    once more rows follow (the page must show them while the run is still going); then it finishes."""
    from seedrl.config import load_config
    from seedrl.runtime.config import TrainConfig
    from seedrl.runtime.loop import train

    cfg = load_config(TrainConfig, {
        "name": "cp", "out_dir": str(tmp_path), "total_frames": 10_000_000,
        "env": {"kind": "gym", "id": "CartPole-v1", "num_envs": 2}, "model": {"torso": "mlp", "hidden": [16]},
        "runtime": {"num_actors": 1, "unroll_length": 10, "batch_size": 4, "torch_threads": 1},
        "log": {"progress": False, "tensorboard": False, "every_s": 0.05, "checkpoint_every": 1000},
        "record": {"rate": 1.0}})
    metrics = cfg.run_dir / "metrics.jsonl"
    reached = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]
    seen = {"rows": 0}
    conditions = [lambda: _lines(metrics) >= 1, lambda: _lines(metrics) > seen["rows"]]

    def gate(row, backend):
        for i, cond in enumerate(conditions):
            if not reached[i].is_set() and (i == 0 or release[0].is_set()) and cond():
                reached[i].set()
                release[i].wait(timeout=300)

    result = {}
    trainer = threading.Thread(target=lambda: result.update(r=train(cfg, max_updates=60, on_update=gate)))
    trainer.start()
    try:
        assert reached[0].wait(timeout=300), "the run wrote no metric row"
        console_problems(chromium)
        with served([str(cfg.run_dir)]) as url:
            chromium.get(url)
            seen["rows"] = int(chromium.find_element("id", "live-status").get_attribute("data-rows"))
            assert seen["rows"] >= 1
            key, points = chromium.execute_script("var u = seedrl.charts.curves[0]; return [u.seedrlKey, u.data[0].length];")
            release[0].set()
            assert reached[1].wait(timeout=300), "the run wrote no further row"
            assert trainer.is_alive()  # paused mid-run: what the page shows next arrived while it trains
            _wait(chromium, lambda d: int(d.find_element("id", "live-status").get_attribute("data-rows")) > seen["rows"],
                  "the page to count the new rows")
            _wait(chromium, lambda d: d.execute_script(POINTS, key) > points, f"the {key} curve to grow")
            release[1].set()
            trainer.join(timeout=300)
            # the run's recorded episodes appear (a new section: the page reloads itself) or join the list
            # found and clicked in one script: the list may be redrawn between a find_element and its click
            _wait(chromium, lambda d: d.execute_script(CLICK, "#episodes-0-list tr[data-id]"),
                  "recorded CartPole episodes in the list")
            _wait(chromium, lambda d: d.find_elements("css selector", '#episodes-0-detail td[data-f="observation"]'),
                  "an episode's detail")
            assert console_problems(chromium) == []
            chromium.get("about:blank")
    finally:
        for e in release:
            e.set()
        trainer.join(timeout=300)
    assert result["r"].updates == 60
