"""The play session without a browser: keys -> actions, how episodes end, metadata, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.play.play_helpers import FakeClock, cartpole_session, replay
from seedrl.data import open_dataset
from seedrl.data.errors import SpecError
from seedrl.data.recording import RecordEpisodes
from seedrl.data.stats import validate
from seedrl.errors import EnvironmentSpecError
from seedrl.play.envs import env_config, make_play_env

import gymnasium as gym


def _episodes(path):
    ds = open_dataset(path)
    assert validate(ds) == []
    return list(ds)


def test_turns_record_the_keys_actions_and_escape_truncates(tmp_path):
    keys = [["ArrowRight"], ["ArrowLeft"], [], ["ArrowLeft", "ArrowRight"], ["ArrowRight"]]
    s = cartpole_session(tmp_path / "ds", player="ann", seed=7)
    assert s.view()["status"] == "ready"
    for i, held in enumerate(keys):
        v = s.step(held)
        assert v["status"] == "playing" and v["t"] == i + 1
    v = s.end("escape")
    assert v["status"] == "ready" and v["last"]["ended_by"] == "escape" and v["last"]["steps"] == 6
    s.close()
    (ep,) = _episodes(tmp_path / "ds")
    # no key: the default action 0; both arrows: ArrowLeft (first listed of two equal-size entries)
    np.testing.assert_array_equal(ep.columns["action"], [1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(ep.columns["is_first"], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(ep.columns["is_last"], [0, 0, 0, 0, 0, 1])
    assert not ep.columns["is_terminal"].any()  # truncated: is_last without is_terminal
    obs, rewards, _ = replay("CartPole-v1", 7, [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(ep.columns["observation"], obs)  # the final step holds the final observation
    np.testing.assert_array_equal(ep.columns["reward"][:-1], rewards)
    np.testing.assert_array_equal(ep.columns["discount"], [1, 1, 1, 1, 1, 0])  # the final step's are zeros
    assert ep.columns["reward"].dtype == np.float64 and ep.columns["action"].dtype == np.int64


def test_env_terminal_ends_the_episode_as_terminal_and_the_next_starts_ready(tmp_path):
    s = cartpole_session(tmp_path / "ds", seed=3)
    n = 0
    while True:
        n += 1
        v = s.step(["ArrowRight"])
        if v["status"] == "ready":
            break
    assert v["last"] == {"id": v["last"]["id"], "steps": n + 1, "return": float(n), "ended_by": "terminal"}
    s.step(["ArrowLeft"])
    s.close()  # the episode in progress is written as truncated
    first, second = _episodes(tmp_path / "ds")
    assert first.columns["is_terminal"][-1] and first.columns["is_last"][-1]
    assert first.columns["discount"][-2] == 0.0  # the terminal transition's discount
    obs, _, terminated = replay("CartPole-v1", 3, [1] * n)
    assert terminated
    np.testing.assert_array_equal(first.columns["observation"], obs)
    assert first.metadata["seed"] == 3 and second.metadata["seed"] == 4  # episode k: seed + k
    assert second.metadata["ended_by"] == "server_stop" and not second.columns["is_terminal"].any()
    np.testing.assert_array_equal(second.columns["action"], [0, 0])


def test_time_limit_is_truncation(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: x\nenv:\n  kind: gym\n  id: CartPole-v1\n  max_episode_steps: 3\n  seed: 11\n")
    s = cartpole_session(tmp_path / "ds", env=str(cfg))
    views = [s.step(["ArrowLeft"]) for _ in range(3)]
    assert views[-1]["status"] == "ready" and views[-1]["last"]["ended_by"] == "time_limit"
    s.close()
    (ep,) = _episodes(tmp_path / "ds")
    assert ep.columns["is_last"][-1] and not ep.columns["is_terminal"].any() and len(ep) == 4
    assert ep.metadata["seed"] == 11  # the config's env.seed


def test_metadata_and_dataset_config(tmp_path):
    clock = FakeClock(100.0)
    s = cartpole_session(tmp_path / "ds", player="bob", fps=12, clock=clock)
    s.step([])
    s.step(["ArrowRight"])
    s.end("closed")
    s.end("escape")  # nothing in progress: nothing written
    s.close()
    (ep,) = _episodes(tmp_path / "ds")
    m = ep.metadata
    assert {k: m[k] for k in ("env_id", "seed", "player_id", "mode", "fps", "ended_by")} == {
        "env_id": "CartPole-v1", "seed": 0, "player_id": "bob", "mode": "fps", "fps": 12.0, "ended_by": "closed"}
    assert m["started_at"] == 101.5 and m["ended_at"] == 103.0  # the first action's reading, then the end's
    assert json.loads(m["key_map"]) == {"keys": {"ArrowLeft": 0, "ArrowRight": 1}, "default": 0}
    config = json.loads((tmp_path / "ds" / "dataset.json").read_text())["config"]
    assert config["key_map"] == json.loads(m["key_map"]) and config["mode"] == "fps" and config["fps"] == 12.0
    assert config["env"]["id"] == "CartPole-v1" and config["recorded_by"] == "seedrl play"


def test_an_unplayed_episode_writes_nothing_and_sessions_append(tmp_path):
    cartpole_session(tmp_path / "ds").close()
    assert not (tmp_path / "ds" / "dataset.json").exists()
    for player in ("a", "b"):
        s = cartpole_session(tmp_path / "ds", player=player)
        s.step([])
        s.close()
    assert [e.metadata["player_id"] for e in _episodes(tmp_path / "ds")] == ["a", "b"]


def test_a_dataset_with_another_spec_or_metadata_is_refused_before_playing(tmp_path):
    s = cartpole_session(tmp_path / "acrobot", env="Acrobot-v1")
    s.step([])
    s.close()
    with pytest.raises(SpecError, match=r"spec differs from the dataset being appended to .*observation"):
        cartpole_session(tmp_path / "acrobot")
    with RecordEpisodes(gym.make("CartPole-v1"), str(tmp_path / "agent")) as env:  # an agent's CartPole episodes
        env.reset(seed=0)
        env.step(np.int64(0))
        env.reset()
    with pytest.raises(SpecError, match=r"--record .*agent: this dataset's episodes were not recorded by `seedrl play` "
                                        r"\(episode metadata key 'ended_at' is not in this dataset's metadata"):
        cartpole_session(tmp_path / "agent")


def test_environment_errors_are_clear(tmp_path):
    with pytest.raises(EnvironmentSpecError, match=r"ENV_OR_CONFIG='NoSuchEnv-v0': not a registered Gymnasium"):
        env_config("NoSuchEnv-v0")
    with pytest.raises(EnvironmentSpecError, match=r"'seedrl/Counting-v0' has no 'rgb_array' rendering"):
        make_play_env(env_config("seedrl/Counting-v0"))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\n")
    with pytest.raises(EnvironmentSpecError, match=r"bad.yaml' has no 'env:' section"):
        env_config(str(cfg))
    cfg.write_text("env:\n  kind: gym\n  id: CartPole-v1\n  frame_skip: 0\n")
    with pytest.raises(Exception, match=r"bad.yaml: env.*frame_skip"):
        env_config(str(cfg))


def test_closed_session_refuses_steps(tmp_path):
    s = cartpole_session(tmp_path / "ds")
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.step([])
    with pytest.raises(ValueError, match="reason: 'bye' is not one of"):
        s.end("bye")


def test_atari_shows_native_frames_and_records_the_agents_observations(tmp_path):
    pytest.importorskip("ale_py")
    from seedrl.play.keys import default_key_map
    from seedrl.play.session import PlaySession

    cfg = tmp_path / "pong.yaml"
    cfg.write_text("env:\n  kind: atari\n  id: Pong\n  backend: gymnasium\n  noop_max: 0\n  sticky_action_prob: 0.0\n")
    play_env = make_play_env(env_config(str(cfg)))
    assert play_env.frame().shape == (210, 160, 3)  # the emulator's own screen, not the 84x84 observation
    key_map = default_key_map(play_env.env.action_space, play_env.meanings)
    s = PlaySession(play_env, tmp_path / "ds", key_map, player="p")
    for held in (["Space"], ["ArrowLeft"], ["ArrowRight", "Space"], []):
        s.step(held)
    s.close()
    (ep,) = _episodes(tmp_path / "ds")
    assert ep.columns["action"][:-1].tolist() == [1, 3, 4, 0]  # FIRE, LEFT, RIGHTFIRE, NOOP
    assert ep.columns["observation"].shape == (5, 4, 84, 84) and ep.columns["observation"].dtype == np.uint8
    assert ep.metadata["env_id"] == "Pong" and ep.metadata["ended_by"] == "server_stop"


def test_continuous_actions_from_a_given_map(tmp_path):
    from seedrl.play.keys import load_key_map
    from seedrl.play.session import PlaySession

    play_env = make_play_env(env_config("MountainCarContinuous-v0"))
    key_map = load_key_map('{"keys": {"ArrowLeft": [-1.0], "ArrowRight": [1.0]}, "default": [0.0]}',
                           play_env.env.action_space)
    s = PlaySession(play_env, tmp_path / "ds", key_map, seed=2)
    for held in (["ArrowRight"], [], ["ArrowLeft"]):
        s.step(held)
    s.end("escape")
    s.close()
    (ep,) = _episodes(tmp_path / "ds")
    assert ep.columns["action"].dtype == np.float32
    np.testing.assert_array_equal(ep.columns["action"][:, 0], [1.0, 0.0, -1.0, 0.0])


def test_an_env_that_cannot_draw_is_refused_before_playing(monkeypatch):
    def broken(self):
        raise gym.error.DependencyNotInstalled("pygame is not installed")

    monkeypatch.setattr(gym.wrappers.PassiveEnvChecker, "render", broken)
    with pytest.raises(EnvironmentSpecError, match=r"'CartPole-v1' cannot draw its frames: DependencyNotInstalled: "
                                                   r"pygame is not installed"):
        make_play_env(env_config("CartPole-v1"))
