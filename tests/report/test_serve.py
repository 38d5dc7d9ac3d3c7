"""``seedrl report --serve``: the JSON endpoints, caching, errors, and a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np

from seedrl.cli import main
from tests.report.episode_sets import game_dataset, game_episode
from tests.report.serving import get_json, served


def _run_dir(path, rows: int):
    path.mkdir()
    (path / "config.yaml").write_text("name: live\nseed: 0\n")
    _append(path, 0, rows)
    game_dataset(path / "episodes", episodes=2)
    return path


def _append(path, start: int, stop: int):
    with open(path / "metrics.jsonl", "a") as fh:
        for i in range(start, stop):
            fh.write(json.dumps({"frames": 10 * i, "updates": i, "elapsed_s": 0.1 * i, "loss": 1.0 / (i + 1)}) + "\n")


def test_metrics_endpoint_sends_curves_only_when_rows_arrive(tmp_path):
    run = _run_dir(tmp_path / "run", 5)
    with served([str(run)]) as url:
        status, first = get_json(url + "api/metrics?since=0")
        assert status == 200 and first["rows"] == 5
        assert first["section_ids"] == ["runs", "config", "curves", "episodes-0"]
        loss = [c for c in first["sections"]["curves"]["charts"] if c["key"] == "loss"][0]["series"][0]
        assert loss["y"] == [1.0, 0.5, round(1 / 3, 7), 0.25, 0.2] and loss["x"]["frames"] == [0, 10, 20, 30, 40]
        assert get_json(url + "api/metrics?since=5")[1] == {"rows": 5, "section_ids": first["section_ids"]}
        _append(run, 5, 8)
        _, later = get_json(url + "api/metrics?since=5")
        assert later["rows"] == 8
        assert [c for c in later["sections"]["curves"]["charts"] if c["key"] == "loss"][0]["series"][0]["x"]["frames"] \
            == [10 * i for i in range(8)]
        with urllib.request.urlopen(url, timeout=30) as r:
            page = r.read().decode()
        assert "seedrl.live(8, 2000)" in page and 'id="episodes-0"' in page


def test_episode_endpoints_list_new_episodes_and_load_details(tmp_path):
    run = _run_dir(tmp_path / "run", 3)
    with served([str(run)]) as url:
        status, listing = get_json(url + "api/episodes?source=0")
        assert status == 200 and listing["total"] == 2 and [e["id"] for e in listing["episodes"]] == ["g0", "g1"]
        game_dataset(run / "episodes", episodes=1, start=2)  # a new writer appends while the server runs
        _, more = get_json(url + "api/episodes?source=0&since=2")
        assert more["total"] == 3 and [e["id"] for e in more["episodes"]] == ["g2"]
        assert more["episodes"][0]["return"] == -4.5 and more["episodes"][0]["steps"] == 6
        _, detail = get_json(url + "api/episode/g2?source=0")
        assert detail["reward"] == [float(s["reward"]) for s in game_episode(2)]
        assert detail["action"]["action"] == [(t + 2) % 3 for t in range(6)]
        assert len(detail["frames"]["observation/pixels"]) == 6


def test_bad_requests_are_json_errors_naming_the_field(tmp_path):
    run = _run_dir(tmp_path / "run", 3)
    with served([str(run)]) as url:
        assert get_json(url + "api/metrics?since=x") == (400, {"error": "since: 'x' is not a whole number"})
        status, body = get_json(url + "api/episode/nope?source=0")
        assert status == 404 and "no episode with id 'nope'" in body["error"]
        status, body = get_json(url + "api/episodes?source=3")
        assert status == 404 and body["error"] == "source: 3 is not one of the 1 browsed datasets"
        assert get_json(url + "api/other")[0] == 404


def test_bad_input_is_one_line_before_serving(tmp_path, capsys):
    assert main(["report", "--data", str(tmp_path), "--serve", "--port", "0"]) == 2
    assert "--data: " in capsys.readouterr().err
    assert main(["report", str(_run_dir(tmp_path / "run", 1)), "--serve", "--port", "70000"]) == 2
    assert "--port: 70000 is not a port number" in capsys.readouterr().err


def test_ctrl_c_stops_the_server_cleanly(tmp_path):
    run = _run_dir(tmp_path / "run", 3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONFAULTHANDLER": "1"}
    # a job started in the background (``cmd &`` without job control, nohup) inherits SIGINT ignored, and a
    # Python started with SIGINT ignored keeps ignoring it: give the server the disposition a terminal gives it
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from seedrl.cli import main; sys.exit(main())", "report", str(run), "--serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stderr.readline()
        assert "serving the report of" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        assert get_json(url + "api/metrics?since=3")[1]["rows"] == 3
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # show where it hangs: faulthandler prints every thread's stack on SIGABRT
            proc.send_signal(signal.SIGABRT)
            proc.wait(10)
            raise AssertionError("the server ignored SIGINT for 60 s; its threads:\n" + proc.stderr.read()) from None
        assert code == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_followed_metrics_equal_a_fresh_read_through_torn_lines_and_replacement(tmp_path):
    from seedrl.cli import build_parser
    from seedrl.report.html.rundata import read_columns
    from seedrl.report.html.serve import ReportState

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: f\n")
    state = ReportState(build_parser().parse_args(["report", str(run), "--serve"]))
    metrics = run / "metrics.jsonl"
    pieces = ['{"frames": 0, "loss": 1}\n{"frames": 1, "lo', 'ss": 2, "kl": 0.5}\n', '{"frames": 2, "time": 3}\n',
              '{"frames": 3, "loss": "x"}\n{"frames": 4, "time": 4.5, "loss": 5}\n']
    for piece in pieces:
        with open(metrics, "a") as fh:
            fh.write(piece)
        state.run_sections()
        followed = state._runs[str(run)].run.columns
        whole = read_columns(metrics)
        assert list(followed) == list(whole)
        for k in whole:  # the torn line waits for its end; then every column equals a fresh read's
            np.testing.assert_array_equal(followed[k], whole[k])
    np.testing.assert_array_equal(state._runs[str(run)].run.columns["elapsed_s"], [np.nan, np.nan, 0, np.nan, 1.5])
    metrics.unlink()  # a new file (another inode), shorter: read from its start
    metrics.write_text('{"frames": 7, "loss": 9}\n')
    rows, _ = state.run_sections()
    assert rows == 1 and state._runs[str(run)].run.columns["loss"].tolist() == [9]
