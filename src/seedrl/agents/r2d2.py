"""R2D2: recurrent Q-learning from prioritized sequence replay (Kapturowski et al. 2019), as in SEED RL.

**Sequences.** A replay batch is an :class:`~seedrl.runtime.unrolls.Unroll` of
``S = burn_in + L + 1`` entries ``[S, B, ...]`` with ``state0``, the recurrent
state before entry 0. Transition t (entry t -> t+1) has action ``a_t =
action[t]``, reward ``r_t = reward[t+1]``, ends in a terminal if
``terminated[t+1]`` and in a time-limit truncation if ``truncated[t+1]``
(see :mod:`seedrl.runtime.unrolls`).

**Burn-in.** Online and target nets both start from ``state0`` and run entries
``[0, burn_in)`` without gradient; from the states they reach, both run entries
``[burn_in, S)``, the online net with gradient. So ``Q(s_t, ·)`` is known for
the ``L + 1`` states ``s_burn_in .. s_{S−1}`` and the loss covers the ``L``
transitions ``t = burn_in .. burn_in + L − 1``.

**Targets** (value rescaling ``h(x) = sign(x)(√(|x|+1) − 1) + εx``, ε = 1e-3,
its exact inverse ``h⁻¹``; ``value_rescaling: false`` makes both the identity).
With ``γ_t = γ·(1 − terminal_t)·(1 − truncated_t)`` and ``m_t = min(n, T − t)``
over the ``T = L`` transitions of the learning part (the last ``n − 1`` steps
fall back to shorter returns, bootstrapped from the last entry):

    a*_t = argmax_a Q_online(s_{t+m_t}, a)                     (double Q: online selects)
    y_t  = h( Σ_{k<m_t} (Π_{j<k} γ_{t+j}) r'_{t+k}
              + (Π_{j<m_t} γ_{t+j}) · h⁻¹(Q_target(s_{t+m_t}, a*_t)) )   (target evaluates)

A terminal (γ_t = 0) cuts the sum and the bootstrap: rewards of the next
episode never reach a target. A truncation (time limit, not a terminal) is a
cut whose last reward carries the bootstrap of the lost next state:
``r'_t = r_t + γ · h⁻¹(Q_target(f_t, argmax_a Q_online(f_t, a)))`` with ``f_t``
the final observation of the cut episode, evaluated by each net as one more
step of that episode (its state after entry t, previous action ``a_t``,
previous reward ``r_t``: what acting would have fed it); elsewhere ``r'_t = r_t``. Targets carry no gradient.

**Loss and priorities.** ``δ_t = y_t − Q_online(s_t, a_t)`` (rescaled space);

    loss = (1/B) Σ_b w_b · ½ Σ_t δ_{t,b}²        (SEED: sum over time, mean over the batch)
    p_b  = η · max_t |δ_{t,b}| + (1 − η) · mean_t |δ_{t,b}|       (η = 0.9)

with ``w_b`` the replay's importance weights ``((1/N)/P(b))^β / max``. The
same ``p_b`` computed on fresh sequences is their insertion priority
(:meth:`R2D2Step.priorities`).

**Exploration.** Actor ``i`` of ``N`` acts ε-greedily with
``ε_i = base^(1 + alpha·i/(N − 1))`` (0.4 and 7: ε from 0.4 down to 0.4⁸ ≈ 6.6e-4);
evaluation uses ``eval_epsilon`` (1e-3). ε-greedy: with probability ε a
uniformly random action (the greedy one included), else ``argmax_a Q``
(ties to the first maximal action).

**Target network.** A copy of the online net, synced every
``target_update_period`` learner updates (:meth:`R2D2Step.after_update`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from seedrl.config import ConfigError
from seedrl.config.loader import _check_metadata
from seedrl.ops.priorities import sequence_priority
from seedrl.ops.returns import double_q_n_step_targets
from seedrl.ops.value_rescaling import inverse_value_rescaling
from seedrl.runtime.unrolls import Unroll

__all__ = ["R2D2Config", "R2D2Step", "actor_epsilons", "epsilon_greedy", "r2d2_loss", "r2d2_td_errors"]


@dataclass
class R2D2Config:
    """R2D2 hyper-parameters (the ``agent:`` section of ``algo: r2d2``; SEED RL's Atari defaults)."""

    burn_in: int = field(default=40, metadata={"help": "entries that only warm up the recurrent state (no gradient)", "min": 0})
    n_step: int = field(default=5, metadata={"help": "n of the n-step double-Q targets", "min": 1})
    discount: float = field(default=0.997, metadata={"help": "γ", "min": 0.0, "max": 1.0})
    target_update_period: int = field(default=2500, metadata={"help": "learner updates between target-network syncs", "min": 1})
    priority_eta: float = field(default=0.9, metadata={"help": "η of the sequence priority η·max|TD| + (1−η)·mean|TD|", "min": 0.0, "max": 1.0})
    value_rescaling: bool = field(default=True, metadata={"help": "learn h(Q) with h(x) = sign(x)(√(|x|+1) − 1) + εx"})
    rescaling_epsilon: float = field(default=1e-3, metadata={"help": "ε of the value rescaling h", "min": 0.0})
    dueling: bool = field(default=True, metadata={"help": "dueling head Q = V + A − mean_a A"})
    recurrent: bool = field(default=True, metadata={"help": "LSTM core; false: a ReLU layer of the same width, no state"})
    epsilon_base: float = field(default=0.4, metadata={"help": "ε_i = base^(1 + alpha·i/(N−1)) for actor i of N", "min": 0.0, "max": 1.0})
    epsilon_alpha: float = field(default=7.0, metadata={"help": "alpha of the per-actor ε schedule", "min": 0.0})
    eval_epsilon: float = field(default=1e-3, metadata={"help": "ε of evaluation episodes", "min": 0.0, "max": 1.0})
    eval_envs: int = field(default=0, metadata={
        "help": "the last K of all environment slots act at eval_epsilon (SEED's num_eval_envs); when K > 0 the "
                "episode_return metric and the solved check use their episodes only (train_return: the others')",
        "min": 0})
    replay_capacity: int = field(default=100_000, metadata={"help": "sequences held by the replay (FIFO)", "min": 1})
    replay_alpha: float = field(default=0.9, metadata={"help": "priority exponent: P(i) ∝ p_i^α", "min": 0.0})
    replay_beta: float = field(default=0.6, metadata={"help": "importance-weight exponent ((1/N)/P(i))^β", "min": 0.0, "max": 1.0})
    min_replay: int = field(default=5_000, metadata={"help": "sequences stored before learning starts", "min": 1})
    replay_ratio: float = field(default=1.0, metadata={"help": "learner sequences sampled per sequence inserted", "min_exclusive": 0.0})
    replay_seed: Path | None = field(default=None, metadata={
        "help": "an RLDS dataset (e.g. a run's recorded episodes) whose episodes fill the replay before acting starts; "
                "its observation and action must match the env's"})

    def validate(self) -> None:
        """Raise :class:`~seedrl.config.ConfigError` naming ``agent.<field>`` and the value.

        Applies the fields' bounds (as loading a config does, so a config built
        in code is checked too), the cross-field rule ``min_replay <= replay_capacity``,
        and that ``replay_seed`` (when set) is a directory; whether it is a dataset that
        matches the env is checked when the run builds its replay.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and value != value:
                raise ConfigError(f"config error: 'agent.{f.name}' = nan is not a number", f"agent.{f.name}")
            _check_metadata(f.metadata, value, f"agent.{f.name}")
        if self.min_replay > self.replay_capacity:
            raise ConfigError(
                f"config error: 'agent.min_replay' = {self.min_replay} exceeds 'agent.replay_capacity' = "
                f"{self.replay_capacity}: learning would never start", "agent.min_replay")
        if self.replay_seed is not None and not Path(self.replay_seed).is_dir():
            raise ConfigError(f"config error: 'agent.replay_seed' = '{self.replay_seed}' is not a directory "
                              "(an RLDS dataset in the trajectory store)", "agent.replay_seed")


def actor_epsilons(num: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Per-actor exploration ``ε_i = base^(1 + alpha·i/(num−1))``, ``i < num``; ``num == 1`` gives ``[base]``.

    Returns a float64 array of ``num`` values, from ``base`` (actor 0) down to
    ``base^(1 + alpha)`` (the last actor).
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be an int >= 1, got {num!r}")
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base must be in [0, 1], got {base!r}")
    if not alpha >= 0.0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    if num == 1:
        return np.array([float(base)])
    return float(base) ** (1.0 + float(alpha) * np.arange(num) / (num - 1))


def epsilon_greedy(q: torch.Tensor, epsilon: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ε-greedy actions of ``q [B, A]`` with per-row ``epsilon [B]`` (or one 0-d ε): int64 ``[B]`` on q's device.

    Row b takes a uniformly random action with probability ``epsilon[b]``, else
    ``argmax_a q[b, a]`` (first maximal action on ties). The draws come from
    ``generator`` (on its device), so a seeded generator replays the same actions.
    """
    if q.ndim != 2 or q.shape[1] < 1:
        raise ValueError(f"q must have shape [B, A], got {tuple(q.shape)}")
    batch, num_actions = q.shape
    epsilon = torch.as_tensor(epsilon, dtype=torch.float64)
    if epsilon.shape not in ((), (batch,)):
        raise ValueError(f"epsilon must have shape [B] = ({batch},) or (), got {tuple(epsilon.shape)}")
    device = generator.device
    explore = torch.rand(batch, generator=generator, device=device, dtype=torch.float64) < epsilon.to(device)
    random_actions = torch.randint(num_actions, (batch,), generator=generator, device=device)
    greedy = q.argmax(dim=-1).to(device)
    return torch.where(explore, random_actions, greedy).to(q.device)


# ------------------------------------------------------------------------------------------------ the loss
def _tensors(batch: Unroll, device: torch.device) -> dict[str, torch.Tensor]:
    names = ("obs", "first", "reward", "terminated", "truncated", "action", "prev_action", "prev_reward")
    return {k: torch.from_numpy(np.asarray(batch.arrays[k])).to(device) for k in names}


def _unroll(net, a: dict[str, torch.Tensor], start: int, stop: int, state, *, keep_states: bool = False) -> tuple[torch.Tensor, tuple]:
    """``net`` over entries ``[start, stop)`` from ``state``: ``(q [stop − start, B, A], final state)``, or with
    ``keep_states`` the state after every entry (``QNetwork.unroll_states``; ``()`` for a stateless net)."""
    s = slice(start, stop)
    args = (a["obs"][s], state, a["first"][s], a["prev_action"][s], a["prev_reward"][s])
    if keep_states and getattr(net, "is_recurrent", False):
        return net.unroll_states(*args)
    q, final = net.unroll(*args)
    return q, () if keep_states else final


def _bootstrap(q_online: torch.Tensor, q_target: torch.Tensor, cfg: R2D2Config) -> torch.Tensor:
    """``h⁻¹(Q_target(s, argmax_a Q_online(s, a)))`` per row: the raw-space value of a state."""
    value = q_target.gather(-1, q_online.argmax(-1, keepdim=True)).squeeze(-1)
    return inverse_value_rescaling(value, cfg.rescaling_epsilon) if cfg.value_rescaling else value


def _truncations(batch: Unroll, burn_in: int) -> list[tuple[int, int]]:
    """Keys ``(t, b)`` of the final observations of the learning transitions cut by a time limit (not terminals)."""
    return sorted(k for k in batch.final_obs if k[0] > burn_in and not batch.arrays["terminated"][k])


def _truncation_rewards(nets, states, batch: Unroll, a: dict[str, torch.Tensor], keys, cfg: R2D2Config) -> torch.Tensor:
    """``γ · bootstrap(f)`` at the learning transitions cut by a time limit, zeros elsewhere: ``[L, B]``.

    ``batch.final_obs[(t, b)]`` is the last observation ``f`` of an episode cut on
    the transition into entry t (transition t − 1). Each net evaluates it as one
    more step of that episode: from its state after entry t − 1 (``states``: the
    per-entry states of the learning part), with previous action ``action[t−1]``
    and previous reward ``reward[t]``.
    """
    burn_in = cfg.burn_in
    out = torch.zeros_like(a["reward"][burn_in + 1:], dtype=torch.float32)
    device = out.device
    rows = torch.tensor([t - 1 - burn_in for t, _ in keys], device=device)
    cols = torch.tensor([b for _, b in keys], device=device)
    obs = torch.from_numpy(np.stack([np.asarray(batch.final_obs[k]) for k in keys])).to(device)
    first = torch.zeros(len(keys), dtype=torch.bool, device=device)
    prev_action, prev_reward = a["action"][rows + burn_in, cols], a["reward"][rows + burn_in + 1, cols]
    with torch.no_grad():
        q_on, q_tg = (net.step(obs, tuple(s[rows, cols].detach() for s in st), first, prev_action, prev_reward)[0]
                      for net, st in zip(nets, states))
        out[rows, cols] = cfg.discount * _bootstrap(q_on.float(), q_tg.float(), cfg)
    return out


def r2d2_td_errors(online, target, batch: Unroll, cfg: R2D2Config) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TD errors ``δ [L, B]`` of a batch (gradient through the online net's Q(s_t, a_t)) and the pieces.

    See the module docstring for the math. Returns ``(td, parts)`` with
    ``parts`` holding ``q_taken`` and ``targets`` (``[L, B]``) and ``q_online``
    (``[L + 1, B, A]``).
    """
    steps = batch.arrays["obs"].shape[0]
    burn_in = cfg.burn_in
    if steps < burn_in + 2:
        raise ValueError(f"batch has {steps} entries; burn_in={burn_in} leaves no transition to learn "
                         f"(need at least burn_in + 2 = {burn_in + 2})")
    device = next(online.parameters()).device
    a = _tensors(batch, device)
    state0 = tuple(s.to(device) for s in batch.state0)
    online_state = target_state = state0
    if burn_in > 0:
        with torch.no_grad():
            _, online_state = _unroll(online, a, 0, burn_in, state0)
            _, target_state = _unroll(target, a, 0, burn_in, state0)
    keys = _truncations(batch, burn_in)
    q_online, online_states = _unroll(online, a, burn_in, steps, online_state, keep_states=bool(keys))
    with torch.no_grad():
        q_target, target_states = _unroll(target, a, burn_in, steps, target_state, keep_states=bool(keys))
    q_online, q_target = q_online.float(), q_target.float()
    rewards = a["reward"][burn_in + 1:].float()
    terminated, truncated = a["terminated"][burn_in + 1:], a["truncated"][burn_in + 1:]
    discounts = cfg.discount * (~(terminated | truncated)).float()
    if keys:
        rewards = rewards + _truncation_rewards((online, target), (online_states, target_states), batch, a, keys, cfg)
    targets = double_q_n_step_targets(q_online=q_online.detach(), q_target=q_target, rewards=rewards, discounts=discounts,
                                      n=cfg.n_step, rescale=cfg.value_rescaling, eps=cfg.rescaling_epsilon)
    actions = a["action"][burn_in:-1].long().unsqueeze(-1)
    q_taken = q_online[:-1].gather(-1, actions).squeeze(-1)
    return targets - q_taken, {"q_taken": q_taken, "targets": targets, "q_online": q_online}


def r2d2_loss(online, target, batch: Unroll, weights: torch.Tensor, cfg: R2D2Config) -> tuple[torch.Tensor, np.ndarray, dict[str, float]]:
    """``(loss, new priorities [B], logs)`` of one replay batch of ``burn_in + L + 1`` entries.

    ``loss = (1/B) Σ_b w_b · ½ Σ_t δ_{t,b}²`` and ``p_b = η max_t |δ_{t,b}| + (1 − η) mean_t |δ_{t,b}|``
    (module docstring); ``weights`` are the importance weights ``[B]``.
    """
    td, parts = r2d2_td_errors(online, target, batch, cfg)
    w = torch.as_tensor(weights, dtype=td.dtype, device=td.device).reshape(-1)
    if w.shape != (td.shape[1],):
        raise ValueError(f"weights must have one value per sequence ({td.shape[1]}), got shape {tuple(w.shape)}")
    loss = (w * 0.5 * (td ** 2).sum(dim=0)).mean()
    priorities = sequence_priority(td.detach().abs(), eta=cfg.priority_eta)
    logs = {
        "loss": loss.item(),
        "td_abs": td.detach().abs().mean().item(),
        "q_mean": parts["q_taken"].detach().mean().item(),
        "target_mean": parts["targets"].mean().item(),
        "priority_mean": priorities.mean().item(),
    }
    return loss, priorities.cpu().numpy().astype(np.float64), logs


# ------------------------------------------------------------------------------------------------ learner step
class R2D2Step:
    """The learner-step object the runtime calls: loss, target-network syncs, insertion priorities.

    The target net is a frozen deep copy of ``online`` made here; it is synced
    (weights copied) whenever the update count crosses a multiple of
    ``cfg.target_update_period``.
    """

    uses_replay: ClassVar[bool] = True

    def __init__(self, online, cfg: R2D2Config):
        cfg.validate()
        self.online = online
        self.cfg = cfg
        self.target = copy.deepcopy(online)
        self.target.requires_grad_(False)
        self.updates = 0  # learner updates seen by after_update
        self.syncs = 0  # target syncs so far

    def loss(self, batch: Unroll, weights: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, dict[str, float]]:
        """:func:`r2d2_loss` of the online and target nets (logs add ``target_syncs``)."""
        loss, priorities, logs = r2d2_loss(self.online, self.target, batch, weights, self.cfg)
        logs["target_syncs"] = float(self.syncs)
        return loss, priorities, logs

    def after_update(self, updates: int) -> None:
        """Record that ``updates`` learner updates are done; sync the target every ``target_update_period``."""
        period = self.cfg.target_update_period
        if updates // period > self.updates // period:
            self.sync_target()
        self.updates = int(updates)

    def sync_target(self) -> None:
        """Copy the online weights into the target net."""
        self.target.load_state_dict(self.online.state_dict())
        self.syncs += 1

    @torch.no_grad()
    def priorities(self, batch: Unroll) -> np.ndarray:
        """Insertion priorities ``[B]`` of fresh sequences: ``η max_t |δ| + (1 − η) mean_t |δ|`` under the current nets."""
        td, _ = r2d2_td_errors(self.online, self.target, batch, self.cfg)
        return sequence_priority(td.abs(), eta=self.cfg.priority_eta).cpu().numpy().astype(np.float64)

    def state_dict(self) -> dict:
        """The target net and the counters (for checkpoints; the online net is saved by the runtime)."""
        return {"target": self.target.state_dict(), "updates": self.updates, "syncs": self.syncs}

    def load_state_dict(self, sd: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.target.load_state_dict(sd["target"])
        self.updates = int(sd["updates"])
        self.syncs = int(sd["syncs"])
