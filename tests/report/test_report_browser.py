"""The report page in a real headless chromium: no console errors, curves of runs and of a seed group (band), the x-axis switch."""

from __future__ import annotations

import json
import math

import pytest

from seedrl.cli import main
from tests.report.browser import chromium, console_problems, keep_screenshot  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def _run(path, config: str, rows: list[dict]):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(config + "gamma: 0.99\n")  # one key equal in every run
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    game = lambda scale: [{"frames": 100 * i, "updates": i, "elapsed_s": 0.5 * i + 7, "episode_return": scale * i,
                           "loss": 1 / (i + 1), "fps": 200.0 + i % 7, "policy_lag": i % 3, "inference_batch": 8.0}
                          for i in range(300)]
    lm = [{"frames": 16 * i, "updates": i, "elapsed_s": float(i), "reward": 1 - math.exp(-i / 30), "kl": i / 50,
           "loss": 0.1} for i in range(120)]
    runs = [_run(d / "fast", "name: fast\nseed: 0\nlr: 0.01\n", game(2.0)),
            _run(d / "fast1", "name: fast\nseed: 1\nlr: 0.01\n", game(4.0)),
            _run(d / "slow", "name: slow\nseed: 0\nlr: 0.001\n", game(0.5)),
            _run(d / "bond", "name: bond\nalgo: bond\nseed: 0\n", lm)]
    front = [{"n": n, "reward": 1 - 1 / n, "kl_estimate": math.log(n) - (n - 1) / n, "kl_bound": math.log(n) - (n - 1) / n}
             for n in (1, 2, 4, 8)]
    (d / "bond" / "bon_frontier.json").write_text(json.dumps({"rows": front}))
    out = d / "report.html"
    assert main(["report", *runs, "--out", str(out)]) == 0
    return out


def test_page_opens_without_console_errors_and_draws_two_runs(chromium, page, tmp_path_factory):
    chromium.get(page.as_uri())
    assert console_problems(chromium) == []
    charts = chromium.execute_script(
        "return seedrl.charts.curves.map(function (u) { return [u.seedrlKey, u.series.slice(1).map(function (s) {"
        " return s.label; })]; })")
    by_key = dict(charts)
    band = "fast (mean of 2 seeds, min/max band)"
    assert by_key["episode_return"] == [band, band + " min", band + " max", "slow"]
    # known values: at frames = 29900 (row 299) fast's seeds return 2 * 299 and 4 * 299, slow 0.5 * 299
    at = chromium.execute_script(
        "var u = seedrl.charts.curves.filter(function (u) { return u.seedrlKey === 'episode_return'; })[0];"
        "var i = u.data[0].indexOf(29900); return [u.data[1][i], u.data[2][i], u.data[3][i], u.data[4][i],"
        " u.bands.map(function (b) { return b.series; })];")
    assert at == [3 * 299, 2 * 299, 4 * 299, 149.5, [[3, 2]]]
    legend = chromium.execute_script(
        "var u = seedrl.charts.curves.filter(function (u) { return u.seedrlKey === 'episode_return'; })[0];"
        "return Array.prototype.filter.call(u.root.querySelectorAll('.u-legend .u-series'),"
        " function (r) { return r.style.display !== 'none'; }).length;")
    assert legend == 3  # the x value, the group's mean, slow: the band's min and max stay out
    # throughput panel and language panel with the Best-of-N front
    keys = chromium.execute_script("return seedrl.charts.throughput.map(function (u) { return u.seedrlKey; })")
    assert keys == ["fps", "policy_lag", "inference_batch"]
    assert len(chromium.find_elements("css selector", "#front-svg circle.bon-point")) == 4
    assert len(chromium.find_elements("css selector", "#front-svg polyline.run-path")) == 1
    keep_screenshot(chromium, tmp_path_factory, "report.png")


def test_x_axis_switch_redraws_on_wall_time(chromium, page):
    chromium.get(page.as_uri())
    first_x = "return seedrl.charts.curves[0].data[0].slice(0, 2);"  # episode_return of fast and slow
    assert chromium.execute_script(first_x) == [0, 100]  # frames
    chromium.find_element("css selector", 'input[name="xaxis"][value="elapsed_s"]').click()
    assert chromium.execute_script("return document.getElementById('charts-curves').dataset.xaxis") == "elapsed_s"
    assert chromium.execute_script(first_x) == [7, 7.5]  # elapsed_s = 0.5 i + 7
    chromium.find_element("css selector", 'input[name="xaxis"][value="updates"]').click()
    assert chromium.execute_script("return seedrl.charts.throughput[0].axes[0].label") == "updates"
    assert console_problems(chromium) == []


def test_config_diff_toggle_hides_equal_keys(chromium, page):
    chromium.get(page.as_uri())
    rows = lambda: [r.get_attribute("data-key") for r in chromium.find_elements("css selector", "#cfg-table tr[data-key]")
                    if r.is_displayed()]
    assert rows() == ["name", "seed", "lr", "algo"]  # only the differing keys at first
    chromium.find_element("id", "cfg-only-diff").click()
    assert rows() == ["name", "seed", "lr", "gamma", "algo"]
    assert chromium.find_element("css selector", '#cfg-table tr[data-key="lr"]').get_attribute("class") == "differs"
