"""The play server's HTTP endpoints (what the page calls), without a browser; and the CLI's refusals."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

import pytest

from tests.play.play_helpers import cartpole_session, play_process, served
from seedrl.cli import main
from seedrl.data import open_dataset


def call(url, body=None, raw=None, headers=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_endpoints_step_end_and_refuse_bad_requests(tmp_path):
    with served(cartpole_session(tmp_path / "ds", player="p1")) as url:
        status, page = call(url + "/")
        assert status == 200 and b"seedrl play: <code>CartPole-v1</code>" in page
        settings = json.loads(page.split(b'type="application/json">')[1].split(b"</script>")[0])
        assert settings["keys"] == ["ArrowLeft", "ArrowRight"] and settings["mode"] == "turns"
        status, body = call(url + "/api/state")
        state = json.loads(body)
        assert status == 200 and state["status"] == "ready" and state["frame"].startswith("data:image/png;base64,")
        for keys, action in ((["ArrowRight"], 1), ([], 0)):
            status, body = call(url + "/api/step", {"keys": keys})
            assert status == 200 and json.loads(body)["action"] == action
        status, body = call(url + "/api/step", {"keys": "ArrowLeft"})
        assert (status, json.loads(body)) == (400, {"error": "keys: 'ArrowLeft' is not a list of key names"})
        assert call(url + "/api/step", raw=b"[1]")[0] == 400
        assert json.loads(call(url + "/api/step", raw=b"{nope")[1])["error"].startswith("request body: not valid JSON")
        assert json.loads(call(url + "/api/end", {"reason": "bored"})[1])["error"].startswith("reason: 'bored' is not one of")
        assert call(url + "/api/nothing")[0] == 404 and call(url + "/api/nothing", {})[0] == 404
        port = url.rsplit(":", 1)[1]
        for headers, field in (({"Origin": "http://evil.example"}, "Origin: 'http://evil.example'"),
                               ({"Host": f"evil.example:{port}"}, f"Host: 'evil.example:{port}'")):
            status, body = call(url + "/api/step", {"keys": ["ArrowLeft"]}, headers=headers)
            assert status == 403 and json.loads(body)["error"].startswith(field)  # and nothing was played
        status, body = call(url + "/api/end", raw=b'{"reason": "closed"}',  # what sendBeacon posts (text/plain)
                            headers={"Origin": f"http://127.0.0.1:{port}"})
        assert status == 200 and json.loads(body)["last"]["ended_by"] == "closed"
    (ep,) = open_dataset(tmp_path / "ds")
    assert ep.columns["action"].tolist() == [1, 0, 0] and ep.metadata["player_id"] == "p1"


@pytest.mark.parametrize("argv, message", [
    (["NoSuchEnv-v0"], "ENV_OR_CONFIG='NoSuchEnv-v0': not a registered Gymnasium environment"),
    (["seedrl/Counting-v0"], "'seedrl/Counting-v0' has no 'rgb_array' rendering"),
    (["CartPole-v1", "--keys", '{"Escape": 0}'], "key map keys.Escape: 'Escape' is reserved"),
    (["CartPole-v1", "--fps", "0"], "--fps: 0 is not in (0, 240]"),
    (["CartPole-v1", "--port", "70000"], "--port: 70000 is not a port number"),
])
def test_cli_refusals_are_one_line(argv, message, tmp_path, capsys):
    assert main(["play", *argv, "--record", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("seedrl: error:") and err.count("\n") == 1
    assert not (tmp_path / "ds" / "dataset.json").exists()


@pytest.mark.serial
def test_sigterm_stops_cleanly_and_writes_the_episode_in_progress(tmp_path):
    with play_process("CartPole-v1", "--record", str(tmp_path / "ds"), "--turns") as (proc, url):
        for keys in (["ArrowRight"], ["ArrowRight"], []):
            assert call(url + "/api/step", {"keys": keys})[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stderr.read()
    (ep,) = open_dataset(tmp_path / "ds")
    assert ep.columns["action"].tolist() == [1, 1, 0, 0] and ep.metadata["ended_by"] == "server_stop"
    assert not ep.columns["is_terminal"].any() and ep.columns["is_last"][-1]


def test_a_port_in_use_is_refused_before_the_dataset_is_created(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["play", "CartPole-v1", "--record", str(tmp_path / "ds"), "--port", str(port)]) == 2
    assert f"--port: {port} cannot be opened on 127.0.0.1" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
