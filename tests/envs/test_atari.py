"""Atari preprocessing on ale-py, its episodic-life semantics, and agreement with EnvPool."""

import dataclasses
import importlib.util

import numpy as np
import pytest

pytest.importorskip("ale_py")

from seedrl.envs import EnvConfig, GymnasiumBatch, make_env, make_env_batch  # noqa: E402
from seedrl.envs.atari import AtariEnv, atari_game, envpool_task_id, resize_area  # noqa: E402


def test_game_names():
    for name in ("Pong", "ALE/Pong-v5", "Pong-v5", "PongNoFrameskip-v4", "pong"):
        assert atari_game(name) == "pong"
    assert atari_game("ALE/SpaceInvaders-v5") == "space_invaders"
    assert envpool_task_id("space_invaders") == "SpaceInvaders-v5"
    with pytest.raises(ValueError):
        atari_game("NotAGame")


def test_resize_area_is_exact_area_averaging():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(8, 6), dtype=np.uint8)
    blocks = img.reshape(4, 2, 3, 2).astype(float).mean(axis=(1, 3))
    np.testing.assert_array_equal(resize_area(img, 4, 3), np.floor(blocks + 0.5).astype(np.uint8))
    const = np.full((210, 160), 77, np.uint8)
    np.testing.assert_array_equal(resize_area(const, 84, 84), 77)
    rgb = rng.integers(0, 256, size=(210, 160, 3), dtype=np.uint8)
    out = resize_area(rgb, 84, 84)
    assert out.shape == (84, 84, 3)
    np.testing.assert_array_equal(out[..., 1], resize_area(np.ascontiguousarray(rgb[..., 1]), 84, 84))


def test_defaults_shape_sticky_noops_and_action_set():
    env = make_env(EnvConfig(kind="atari", id="Pong"))
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 6  # minimal action set
    assert env.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.frame_skip == 4 and env.max_steps == 108_000 // 4 and not env.episodic_life
    noops = set()
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        assert (obs == obs[:1]).all()  # a reset fills the stack with its first frame
        assert 1 <= info["noops"] <= 30 and env.ale.getEpisodeFrameNumber() == info["noops"]
        noops.add(info["noops"])
    assert len(noops) > 1
    env.close()
    no_noop = AtariEnv("Pong", noop_max=0)
    no_noop.reset(seed=0)
    assert no_noop.last_noops == 0 and no_noop.ale.getEpisodeFrameNumber() == 0


def test_frame_stack_shifts_new_frame_into_last_channel():
    env = AtariEnv("Pong", frame_skip=1, sticky_action_prob=0.0)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(40):
        new, *_ = env.step(rng.integers(env.action_space.n))
        np.testing.assert_array_equal(new[:-1], obs[1:])
        np.testing.assert_array_equal(new[-1], resize_area(env.ale.getScreenGrayscale(), 84, 84))
        obs = new
    colour = AtariEnv("Pong", grayscale=False, frame_stack=2, resize=42)
    obs, _ = colour.reset(seed=0)
    new, *_ = colour.step(0)
    assert obs.shape == new.shape == (6, 42, 42)
    np.testing.assert_array_equal(new[:3], obs[3:])


def test_seeded_runs_repeat_and_time_limit_truncates():
    def run(seed):
        env = AtariEnv("Pong", max_episode_frames=40)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for t in range(10):
            obs, r, term, trunc, info = env.step(t % 6)
            out.append(obs)
        return np.stack(out), term, trunc, info

    a, term, trunc, info = run(3)
    b, *_ = run(3)
    np.testing.assert_array_equal(a, b)
    assert trunc and not term and info["real_done"]  # 10 agent steps x 4 frames = 40


def play_breakout(episodic_life, seed=5, max_steps=3000):
    """One full game of Breakout with a fixed random policy: (rewards, terminated flags, episodes)."""
    batch = GymnasiumBatch([lambda: AtariEnv("Breakout", episodic_life=episodic_life)], seed=seed)
    obs = batch.reset()
    rng = np.random.default_rng(0)
    rewards, terms = [], []
    for _ in range(max_steps):
        res = batch.step(rng.integers(4, size=1))
        rewards.append(res.reward[0])
        terms.append(res.terminated[0])
        if res.terminated[0] and not res.episodes:  # lost a life: the game continues from the same screen
            np.testing.assert_array_equal(res.obs[0], res.final_obs[0])
        if res.episodes:
            return np.array(rewards), np.array(terms), res.episodes
        obs = res.obs
    raise AssertionError("Breakout game did not end")


def test_episodic_life_terminates_per_life_but_reports_whole_games():
    rewards_on, terms_on, episodes_on = play_breakout(episodic_life=True)
    rewards_off, terms_off, episodes_off = play_breakout(episodic_life=False)
    np.testing.assert_array_equal(rewards_on, rewards_off)  # the emulator runs the same game
    assert terms_off.sum() == 1 and terms_on.sum() == 5  # Breakout has 5 lives
    assert episodes_on == episodes_off
    (_, ret, length), = episodes_on
    assert ret == rewards_on.sum() and length == len(rewards_on)


needs_envpool = pytest.mark.skipif(importlib.util.find_spec("envpool") is None, reason="envpool not installed")


@needs_envpool
def test_preprocessing_matches_envpool_frame_for_frame():
    # No randomness on either side (no sticky actions, exactly one no-op): same emulator run.
    import envpool

    pool = envpool.make_gymnasium("Breakout-v5", num_envs=1, seed=0, repeat_action_probability=0.0,
                                  noop_max=1, use_fire_reset=False, reward_clip=False)
    pool_obs, _ = pool.reset()
    env = AtariEnv("Breakout", sticky_action_prob=0.0, noop_max=1)
    obs, _ = env.reset(seed=0)
    assert np.abs(obs.astype(int) - pool_obs[0]).max() <= 1
    rng = np.random.default_rng(0)
    for step in range(150):
        action = int(rng.integers(4))
        pool_obs, pool_r, pool_term, _, _ = pool.step(np.array([action]))
        obs, r, term, _, _ = env.step(action)
        assert r == pool_r[0] and term == pool_term[0]
        if term:
            break
        assert np.abs(obs.astype(int) - pool_obs[0]).max() <= 1  # rounding of the area resize
    assert step == 149  # compared the whole run


@needs_envpool
def test_envpool_and_gymnasium_batches_have_the_same_format():
    batches = [make_env_batch(EnvConfig(kind="atari", id="Pong", backend=b, envpool_threads=1), num_envs=2, seed=0)
               for b in ("gymnasium", "envpool")]
    results = []
    for batch in batches:
        assert batch.observation_space == batches[0].observation_space
        assert batch.action_space == batches[0].action_space
        obs = batch.reset()
        res = batch.step(np.array([0, 1]))
        assert obs.shape == res.obs.shape == (2, 4, 84, 84) and res.obs.dtype == np.uint8
        results.append(res)
        batch.close()
    for field in ("reward", "terminated", "truncated"):
        assert getattr(results[0], field).dtype == getattr(results[1], field).dtype


@needs_envpool
def test_envpool_episodic_life_reports_whole_games():
    cfg = EnvConfig(kind="atari", id="Breakout", backend="envpool", episodic_life=True, envpool_threads=1)
    batch = make_env_batch(cfg, num_envs=1, seed=0)
    batch.reset()
    rng = np.random.default_rng(0)
    total, steps, terms = 0.0, 0, 0
    for _ in range(3000):
        res = batch.step(rng.integers(4, size=1))
        total += res.reward[0]
        steps += 1
        terms += res.terminated[0]
        if res.episodes:
            break
    assert res.episodes == [(0, total, steps)]
    assert terms == 5
    batch.close()


@needs_envpool
def test_batches_of_both_backends_match_env_by_env_with_threads():
    # Several environments and EnvPool worker threads: results come back in any order and every
    # environment must get its own action (the one-environment test above cannot see a mix-up).
    n = 3
    cfg = EnvConfig(kind="atari", id="Pong", sticky_action_prob=0.0, noop_max=1)
    pool = make_env_batch(dataclasses.replace(cfg, backend="envpool", envpool_threads=2), n, seed=0)
    ale = make_env_batch(dataclasses.replace(cfg, backend="gymnasium"), n, seed=0)
    assert np.abs(pool.reset().astype(int) - ale.reset()).max() <= 1
    rng = np.random.default_rng(1)
    for _ in range(120):
        actions = rng.integers(6, size=n)
        a, b = pool.step(actions), ale.step(actions)
        np.testing.assert_array_equal(a.reward, b.reward)
        assert np.abs(a.obs.astype(int) - b.obs).max() <= 1
    pool.close()
    ale.close()


def test_pong_minimal_action_set():
    env = AtariEnv("Pong")
    assert env.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    env.close()
