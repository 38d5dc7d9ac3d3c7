"""Inference on the actors (runtime.inference: actors): on-policy unrolls, weight versions, crashes, config, learning."""

from __future__ import annotations

import queue
import threading
import time

import pytest
import torch
import yaml

from seedrl.agents.impala import policy_outputs
from seedrl.config import ConfigError, load_config
from seedrl.runtime.actor import ActorSpec
from seedrl.runtime.actor_inference import ActorInference, LocalPolicy
from seedrl.runtime.algorithms import game_algo
from seedrl.runtime.config import R2D2TrainConfig, TrainConfig
from seedrl.runtime.loop import build_layout, probe_spaces
from seedrl.runtime.policies import SamplingHead
from seedrl.runtime.weights import SharedWeights

T = 5


def _cfg(tmp_path, *over):
    base = yaml.safe_load(open("configs/cartpole_impala.yaml"))
    return load_config(TrainConfig, base, [f"out_dir={tmp_path}", "name=t", "env.backend=gymnasium", "env.num_envs=4",
                                           "runtime.num_actors=1", "runtime.batch_timeout_ms=0",
                                           "runtime.queue_unrolls=4", "runtime.inference=actors", *over])


class _Actors:
    """An ActorInference with its serving thread, on a network the test holds."""

    def __init__(self, cfg, num_actors: int = 1, queue_size: int = 4):
        self.spaces = probe_spaces(cfg)
        self.model = game_algo(cfg.algo).build_model(cfg, *self.spaces).eval()
        self.weights = SharedWeights(self.model, version=3)
        self.unrolls: queue.Queue = queue.Queue(maxsize=queue_size)
        policy = LocalPolicy(cfg.algo, cfg, *self.spaces, self.weights, SamplingHead(), T, 1)
        env = cfg.env
        self.backend = ActorInference(build_layout(cfg, *self.spaces), num_actors,
                                      lambda a, r: ActorSpec(a, env, env.num_envs, 100 * a + 7 * r),
                                      policy=policy, unrolls=self.unrolls, max_restarts=3)
        self.stop = threading.Event()

    def __enter__(self):
        self.backend.start()
        self.thread = threading.Thread(target=self.backend.serve, args=(self.stop,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.backend.stop()
        self.weights.close()

    def get(self):
        return self.unrolls.get(timeout=60)


def test_unrolls_are_on_policy_for_the_posted_weights_and_stamped_with_their_version(tmp_path):
    cfg = _cfg(tmp_path)
    with _Actors(cfg) as actors:
        first = actors.get()
        assert first.arrays["obs"].shape[:2] == (T + 1, 4) and first.actor_id == 0
        assert set(first.arrays["version"].ravel()) == {3}
        # the behaviour log-probs are the network's own at the recorded observations and actions: rho = 1
        out = policy_outputs(actors.model, first)
        torch.testing.assert_close(out.behaviour_logp, out.target_logp.detach(), rtol=0, atol=1e-5)
        # new weights: the actor picks them up and acts (and stamps) with them
        with torch.no_grad():
            for p in actors.model.parameters():
                p.add_(0.5 * torch.randn_like(p))
        actors.weights.post(actors.model, 9)
        deadline = time.monotonic() + 60
        while True:
            unroll = actors.get()
            if set(unroll.arrays["version"][1:].ravel()) == {9}:
                break
            assert time.monotonic() < deadline, "the actor never acted with version 9"
        out = policy_outputs(actors.model, unroll)
        torch.testing.assert_close(out.behaviour_logp[1:], out.target_logp[1:].detach(), rtol=0, atol=1e-5)
        # consecutive unrolls of an actor share their boundary entry (IMPALA's overlap of one)
        following = actors.get()
        for key in ("obs", "action", "logp", "first"):
            assert (following.arrays[key][0] == unroll.arrays[key][-1]).all(), key


def test_an_actor_runs_at_most_one_unroll_ahead_of_a_full_queue(tmp_path):
    # Without the credit an actor's pipe would buffer tens of these small unrolls, all acted with
    # the old weights: after the learner catches up they would still arrive, stale.
    cfg = _cfg(tmp_path)
    with _Actors(cfg, queue_size=1) as actors:
        deadline = time.monotonic() + 60
        while actors.backend.unrolls_received < 2:  # one on the queue, one waiting for room
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # ample time to run ahead
        actors.weights.post(actors.model, 5)
        stale = 0
        while set(actors.get().arrays["version"][1:].ravel()) != {5}:
            stale += 1
        assert stale <= 3  # queued, waiting, and the one the actor finished while blocked


def test_a_killed_actor_is_replaced_and_its_unrolls_keep_coming(tmp_path):
    cfg = _cfg(tmp_path)
    with _Actors(cfg, num_actors=2) as actors:
        actors.get()
        actors.backend.kill_actor(0)
        deadline = time.monotonic() + 60
        while actors.backend.total_restarts < 1:
            actors.unrolls.get(timeout=60)  # keep draining: the serving thread notices the closed pipe
            assert time.monotonic() < deadline, "the crash was never noticed"
        seen = set()
        while seen != {0, 1}:
            seen.add(actors.get().actor_id)
            assert time.monotonic() < deadline + 60, f"only actors {seen} sent unrolls after the restart"


def test_actor_inference_is_refused_where_it_cannot_run(tmp_path):
    with pytest.raises(ConfigError, match="runtime.inference") as err:
        _cfg(tmp_path, "runtime.backend=threads")
    assert "'threads'" in str(err.value)
    base = yaml.safe_load(open("configs/cartpole_r2d2.yaml"))
    with pytest.raises(ConfigError, match="runtime.inference"):
        load_config(R2D2TrainConfig, base, [f"out_dir={tmp_path}", "runtime.inference=actors"])


def test_a_run_with_the_policy_on_the_actors_learns(tmp_path):
    from seedrl.runtime.loop import train

    base = yaml.safe_load(open("configs/cartpole_impala.yaml"))
    over = [f"out_dir={tmp_path}", "name=t", "env.backend=gymnasium", "env.num_envs=16", "runtime.num_actors=2",
            "runtime.batch_timeout_ms=0", "runtime.queue_unrolls=2", "runtime.inference=actors",
            "total_frames=120_000", "log.progress=false", "log.tensorboard=false", "log.every_s=1"]
    result = train(load_config(TrainConfig, base, over))
    assert result.frames >= 120_000 and result.episodes > 100
    assert result.mean_return > 40  # a uniform policy averages ~22 on CartPole; seeds 0-2 reached 51-75
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["runtime"]["inference"] == "actors"
