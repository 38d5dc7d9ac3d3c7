"""The game algorithms the runtime runs: ``algo`` name -> what differs between them.

The runtime knows roles (actors, central inference, learner, replay) and protocols,
not algorithms. What an algorithm decides is gathered in one :class:`GameAlgo`:

* ``config_class``: the run's config (its ``agent`` section is the algorithm's);
* ``build_model(cfg, obs_space, act_space)``: the network inference serves and the learner trains;
* ``acting_head(cfg, num_rows)`` / ``eval_head(cfg, greedy, action_space)``: how its first output becomes
  actions (:mod:`seedrl.runtime.policies`);
* ``learner_step(cfg, model)``: the object the learner calls (``loss(batch, weights)``,
  ``after_update``, ``state_dict``); a step with ``uses_replay`` puts the replay role
  (:mod:`seedrl.runtime.replay_role`) between the actors' unrolls and the learner;
* ``unroll(cfg) -> (T, overlap)``: the unroll buffer's length and overlap. IMPALA:
  ``(unroll_length, 1)``. R2D2: ``(burn_in + L, burn_in + 1)`` with L = ``runtime.unroll_length``,
  so each emitted sequence has ``burn_in + L + 1`` entries and L new steps;
* ``acts_on_actors``: its acting needs the weights and nothing per slot (it samples its policy), so
  ``runtime.inference: actors`` may run it in the actor processes (R2D2's per-slot epsilons and
  evaluation slots live in central inference).

Adding a game algorithm is one entry in :data:`GAME_ALGOS` (and its line in the CLI's table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from seedrl.runtime.policies import EpsilonGreedyHead, SamplingHead


class GreedyHead:
    """``argmax`` of the first output (logits or Q-values); logp 0."""

    def __call__(self, out: torch.Tensor, rows: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        return out.argmax(-1).numpy(), np.zeros(len(rows), np.float32)

    def metrics(self) -> dict[str, float]:
        return {}


@dataclass(frozen=True)
class GameAlgo:
    """What one game algorithm decides (see the module docstring)."""

    name: str
    config_class: Callable[[], type]
    build_model: Callable[[Any, Any, Any], torch.nn.Module]
    acting_head: Callable[[Any, int], Callable]
    eval_head: Callable[[Any, bool, Any], Callable]
    learner_step: Callable[[Any, torch.nn.Module], Any]
    unroll: Callable[[Any], tuple[int, int]]
    acts_on_actors: bool = False


# ----------------------------------------------------------------------------- impala
def _impala_config() -> type:
    from seedrl.runtime.config import TrainConfig

    return TrainConfig


def _impala_model(cfg, obs_space, act_space) -> torch.nn.Module:
    from seedrl.models.config import build_model

    return build_model(cfg.model, obs_space, act_space)


def _impala_step(cfg, model):
    from seedrl.agents.impala import impala_loss
    from seedrl.runtime.learner import LossFnStep

    return LossFnStep(model, lambda m, b: impala_loss(m, b, cfg.agent))


# ----------------------------------------------------------------------------- appo
def _appo_config() -> type:
    from seedrl.runtime.config import AppoTrainConfig

    return AppoTrainConfig


def _appo_step(cfg, model):
    from seedrl.agents.appo import AppoStep

    return AppoStep(model, cfg.agent, seed=cfg.seed)


# ----------------------------------------------------------------------------- r2d2
def _r2d2_config() -> type:
    from seedrl.runtime.config import R2D2TrainConfig

    return R2D2TrainConfig


def _r2d2_model(cfg, obs_space, act_space) -> torch.nn.Module:
    from seedrl.models.q_network import QNetwork

    return QNetwork.from_spaces(cfg.model, obs_space, act_space, dueling=cfg.agent.dueling, recurrent=cfg.agent.recurrent)


def _r2d2_acting(cfg, num_rows: int) -> EpsilonGreedyHead:
    from seedrl.agents.r2d2 import actor_epsilons

    k = cfg.agent.eval_envs  # the last k slots evaluate (SEED's num_eval_envs)
    training = actor_epsilons(num_rows - k, cfg.agent.epsilon_base, cfg.agent.epsilon_alpha)
    return EpsilonGreedyHead(np.concatenate([training, np.full(k, cfg.agent.eval_epsilon)]))


def _r2d2_step(cfg, model):
    from seedrl.agents.r2d2 import R2D2Step

    return R2D2Step(model, cfg.agent)


# ----------------------------------------------------------------------------- bc
def _bc_config() -> type:
    from seedrl.agents.bc_train import BCTrainConfig

    return BCTrainConfig


def _bc_model(cfg, obs_space, act_space) -> torch.nn.Module:
    from seedrl.agents.bc import build_bc_model

    return build_bc_model(cfg.model, obs_space, act_space)


def _bc_eval_head(cfg, greedy: bool, action_space):
    from seedrl.agents.bc_train import bc_eval_head

    return bc_eval_head(action_space, greedy)


def _offline(cfg, *args):
    raise ValueError(f"algo {cfg.algo!r} learns offline from a dataset: it has no actors or learner queue")


#: what IMPALA and APPO share: the actor-critic samples its logits (greedy evaluation takes the argmax),
#: unrolls of ``runtime.unroll_length`` overlapping by one step
_ACTOR_CRITIC = dict(
    acting_head=lambda cfg, n: SamplingHead(),
    eval_head=lambda cfg, greedy, space: GreedyHead() if greedy else SamplingHead(),
    unroll=lambda cfg: (cfg.runtime.unroll_length, 1),
    acts_on_actors=True,
)

GAME_ALGOS: dict[str, GameAlgo] = {
    "impala": GameAlgo("impala", _impala_config, _impala_model, learner_step=_impala_step, **_ACTOR_CRITIC),
    "appo": GameAlgo("appo", _appo_config, _impala_model, learner_step=_appo_step, **_ACTOR_CRITIC),
    "r2d2": GameAlgo(
        "r2d2", _r2d2_config, _r2d2_model,
        acting_head=_r2d2_acting,
        eval_head=lambda cfg, greedy, space: EpsilonGreedyHead([0.0 if greedy else cfg.agent.eval_epsilon]),
        learner_step=_r2d2_step,
        unroll=lambda cfg: (cfg.agent.burn_in + cfg.runtime.unroll_length, cfg.agent.burn_in + 1),
    ),
    # offline (seedrl.agents.bc_train trains it); here for `seedrl eval` of its checkpoints
    "bc": GameAlgo("bc", _bc_config, _bc_model, acting_head=_offline, eval_head=_bc_eval_head,
                   learner_step=_offline, unroll=_offline),
}


def game_algo(name: str) -> GameAlgo:
    """The :class:`GameAlgo` of ``algo`` ``name`` (a ValueError naming the known ones otherwise)."""
    try:
        return GAME_ALGOS[name]
    except KeyError:
        raise ValueError(f"algo {name!r} is not a game algorithm (known: {sorted(GAME_ALGOS)})") from None
