"""Pixels, actions and rewards reach the IMPALA loss in step, through the real Atari preprocessing.

The game is ``seedrl/PixelCue-v0`` (:mod:`seedrl.envs.pixel_cue`): ALE replaced
by a toy whose every step is a fresh coin flip shown as a square in the left
or right half of the screen, so only a policy acting on the newest frame gets
reward. The unit tests check each pairing exactly (frame -> reward, action ->
behaviour log-prob, action -> credit in the loss). The slow test trains the
Pong config on it: it catches what stops learning (actions sent to another
game, frames out of step) but not a reward shifted by one step in the loss,
which gamma = 0.99 carries back through the bootstrap; the credit test does.
Issue 10 (Pong did not learn) is why these exist.
"""

from __future__ import annotations

import copy
import queue
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from seedrl.agents.impala import ImpalaConfig, impala_loss
from seedrl.config import load_config
from seedrl.envs import PIXEL_CUE_ID, EnvConfig
from seedrl.envs.pixel_cue import ROUND_FRAMES
from seedrl.models.config import ModelConfig, build_model
from seedrl.runtime.actor import ActorSpec
from seedrl.runtime.config import AppoTrainConfig, TrainConfig
from seedrl.runtime.inference import InferenceServer
from seedrl.runtime.loop import train
from seedrl.runtime.transport import SlotLayout
from seedrl.runtime.unrolls import stack_unrolls

PONG_CONFIG = Path(__file__).parents[2] / "configs" / "pong_impala.yaml"
PONG_APPO_CONFIG = PONG_CONFIG.with_name("pong_appo.yaml")
RIGHT, LEFT = (2, 4), (3, 5)  # indices of RIGHT, RIGHTFIRE and LEFT, LEFTFIRE in Pong's minimal action set


def cue_side(obs: np.ndarray) -> np.ndarray:
    """Side of the square in the newest frame of ``obs [..., C, 84, 84]``: 0 left, 1 right."""
    newest = obs[..., -1, :, :].astype(np.int32)
    return (newest[..., :, 42:].sum((-2, -1)) > newest[..., :, :42].sum((-2, -1))).astype(np.int64)


def expected_reward(action: np.ndarray, side: np.ndarray) -> np.ndarray:
    """+1 for the move towards the square, -1 away from it, 0 for NOOP / FIRE."""
    towards = np.where(side == 1, np.isin(action, RIGHT), np.isin(action, LEFT))
    away = np.where(side == 1, np.isin(action, LEFT), np.isin(action, RIGHT))
    return towards.astype(np.float32) - away.astype(np.float32)


def test_pixel_cue_newest_frame_decides_the_reward():
    env = gym.make(PIXEL_CUE_ID).unwrapped
    assert env.frame_skip == ROUND_FRAMES and env.get_action_meanings()[2:4] == ["RIGHT", "LEFT"]
    obs, _ = env.reset(seed=3)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    sides, steps = set(), 0
    while True:
        action = int(rng.integers(6))
        side = cue_side(obs)
        new, reward, terminated, truncated, _ = env.step(action)
        assert reward == expected_reward(np.array(action), side)
        np.testing.assert_array_equal(new[:-1], obs[1:])  # newest frame last, the rest shifted
        sides.add(int(side))
        obs, steps = new, steps + 1
        if terminated or truncated:
            break
    assert terminated and steps == 40 and sides == {0, 1}


@pytest.fixture
def cue_unrolls(collect_unrolls):
    """``cue_unrolls(model, num_unrolls)``: PixelCue unrolls (2 actors x 4 games, T = 20) acted by ``model``."""
    env_cfg = EnvConfig(kind="gym", id=PIXEL_CUE_ID, num_envs=4)
    layout = SlotLayout(4, (4, 84, 84), "uint8")

    def run(model, num_unrolls=6):
        _, unrolls = collect_unrolls(model, env_cfg, layout, unroll_length=20, num_unrolls=num_unrolls,
                                     actor_seed=lambda a: 100 * (a + 1))
        return stack_unrolls(unrolls)

    return run


def _image_model(seed=0):
    torch.manual_seed(seed)
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    model = build_model(ModelConfig(torso="nature"), space, gym.spaces.Discrete(6))
    return model.to(memory_format=torch.channels_last)  # as the training loop builds it


def test_unrolls_pair_each_action_with_its_frame_reward_and_behaviour_log_prob(cue_unrolls):
    torch.set_num_threads(1)
    model = _image_model()
    inference = copy.deepcopy(model).eval()
    batch = cue_unrolls(inference)
    a = batch.arrays
    obs, action, reward = a["obs"], a["action"], a["reward"]
    # transition t: action[t] taken in obs[t] earns reward[t+1], also on an episode's last step
    np.testing.assert_array_equal(reward[1:], expected_reward(action[:-1], cue_side(obs[:-1])))
    assert np.abs(reward[1:]).sum() > 50
    ended = a["first"][1:]
    assert ended.any() and np.array_equal(a["terminated"][1:], ended)  # 40-round games end in a terminal
    assert (obs[1:][ended][:, :-1] == obs[1:][ended][:, -1:]).all()  # a new game fills the stack with one frame
    # the behaviour log-probs are the acting policy's: the learner's own at equal weights (rho = 1)
    with torch.no_grad():
        logits, _, _ = model.unroll(torch.from_numpy(obs), (), torch.from_numpy(a["first"]))
    logp = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(action)[..., None])[..., 0]
    np.testing.assert_allclose(a["logp"], logp.numpy(), atol=1e-4)


class _Outputs(torch.nn.Module):
    """Stands in for the network: its logits and values are free parameters, whatever the observations."""

    def __init__(self, steps: int, envs: int, actions: int) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(steps, envs, actions))
        self.values = torch.nn.Parameter(torch.zeros(steps, envs))

    def unroll(self, obs, state0, first=None, prev_action=None, prev_reward=None):
        return self.logits, self.values, ()


def test_impala_loss_credits_each_action_with_the_reward_it_earned(cue_unrolls):
    # With discount 0 and a uniform policy, V-trace's advantage of transition t is
    # min(1, rho_t) * reward[t+1], rho_t = (1/6) / mu(action[t] | obs[t]), and the entropy term has no
    # gradient, so -dL/dlogit[t, b, action[t, b]] = (1 - 1/6) * advantage / (T * B) exactly. On a real
    # PixelCue batch that ties the action taken in obs[t] to the reward the square in obs[t] decides.
    batch = cue_unrolls(_image_model(), num_unrolls=2)
    a = batch.arrays
    steps, envs = a["action"].shape
    outputs = _Outputs(steps, envs, 6)
    loss, _ = impala_loss(outputs, batch, ImpalaConfig(discount=0.0, reward_clip=1.0))
    loss.backward()
    action = torch.from_numpy(a["action"][:-1])
    credit = -outputs.logits.grad[:-1].gather(-1, action[..., None])[..., 0]
    rho = np.exp(np.log(1 / 6) - a["logp"][:-1])
    earned = expected_reward(a["action"][:-1], cue_side(a["obs"][:-1]))
    expected = (5 / 6) * np.minimum(1.0, rho) * earned / ((steps - 1) * envs)
    np.testing.assert_allclose(credit.numpy(), expected, rtol=1e-4, atol=1e-9)
    assert np.count_nonzero(earned) > 20


def test_an_update_moves_every_parameter_and_reaches_the_acting_network(cue_unrolls):
    # As the training loop wires it: channels-last learner, a deep copy acts, the optimizer holds the
    # learner's parameters, and each update is posted to the mailbox inference applies before a forward pass.
    from seedrl.runtime.learner import Learner, OptimConfig, make_optimizer
    from seedrl.runtime.weights import WeightsMailbox

    model = _image_model(2)
    acting = copy.deepcopy(model).eval()
    batch = cue_unrolls(acting, num_unrolls=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mailbox = WeightsMailbox()
    learner = Learner(model, mailbox, make_optimizer(OptimConfig(), model.parameters()),
                      lambda m, b: impala_loss(m, b, ImpalaConfig(reward_clip=1.0)), queue.Queue(), 8)
    versions = []
    learner.on_publish = versions.append
    learner.update(batch, frames=0)
    assert versions == [1]
    assert mailbox.apply(acting) == 1
    for name, value in model.state_dict().items():
        assert not torch.equal(value, before[name]), name  # the policy head and the torso all moved
        assert torch.equal(acting.state_dict()[name], value), name
    obs = torch.from_numpy(batch.arrays["obs"][0])
    with torch.no_grad():
        torch.testing.assert_close(acting.step(obs, ())[0], model.step(obs, ())[0], rtol=0, atol=0)


def pixel_cue_config(tmp_path, config: Path = PONG_CONFIG, cls: type = TrainConfig, **log) -> TrainConfig:
    """A Pong config's model, agent, optimizer and runtime (default configs/pong_impala.yaml) on PixelCue."""
    raw = yaml.safe_load(config.read_text())
    raw["env"] = {"kind": "gym", "id": PIXEL_CUE_ID, "num_envs": raw["env"]["num_envs"]}
    raw.update(name="cue", out_dir=str(tmp_path))
    raw["log"] = {"progress": False, "tensorboard": False, "checkpoint_every": 10_000, **log}
    return load_config(cls, raw)


@pytest.mark.slow  # about 50 updates: 30-80 s on 2 shared cores
def test_pong_config_learns_pixel_cue_through_the_whole_runtime(tmp_path):
    # Random play averages 0 (100-game means within +-1.6 at 3 sigma); reading the newest frame scores 40.
    result = train(pixel_cue_config(tmp_path, solved_return=15.0), max_updates=120)
    assert result.solved, result


@pytest.mark.slow
def test_pong_appo_config_learns_pixel_cue_through_the_whole_runtime(tmp_path):
    # configs/pong_appo.yaml: the small torso, 16 gradient steps per batch of 32 x 32 transitions
    result = train(pixel_cue_config(tmp_path, PONG_APPO_CONFIG, AppoTrainConfig, solved_return=15.0), max_updates=40)
    assert result.solved, result
