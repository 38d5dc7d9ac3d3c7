"""APPO: V-trace targets with PPO's clipped surrogate, several passes over each batch.

IMPALA learns once from each batch of unrolls. On-policy PPO (Schulman et al.
2017) and Sample Factory's APPO (Petrenko et al. 2020) learn from each batch
for several epochs of minibatches and need several times fewer frames; on a
machine where the learner is not the bottleneck, that is time to score won.

Per batch (time-major, T transitions, B environments), with the weights θ₀
the learner holds when the batch arrives and no gradient::

    ρ_t       = π_θ₀(a_t|x_t) / μ(a_t|x_t)                (μ: the behaviour policy at inference)
    v_t, Â_t  = vtrace(log π_θ₀, log μ, r, γ_t, V_θ₀, ...)  (Â_t = min(ρ̄_pg, ρ_t)(r_t + γ_t v_{t+1} − V_θ₀(x_t)))

then ``epochs`` times, over the batch shuffled into ``minibatches`` groups
(``shuffle``: ``unrolls`` takes whole environments' unrolls, so recurrent models
keep their sequences; ``transitions`` takes single steps (t, b) drawn without
replacement from all T·B, PPO's and CleanRL's minibatches, for feed-forward
models only)::

    r_t(θ) = π_θ(a_t|x_t) / π_θ₀(a_t|x_t)
    A_t    = (Â_t − mean Â) / (std Â + 1e-8)                  (per minibatch; optional)
    L      = − mean[ min(r_t A_t, clip(r_t, 1 − ε, 1 + ε) A_t) ]
             + baseline_cost · ½ · mean[ (v_t − V_θ(x_t))² ]
             − entropy_cost · mean[ H(π_θ(·|x_t)) ]

**The anchor of the ratio is π_θ₀, not μ.** V-trace already corrects for the
actors' policy lag (the ρ_t in Â_t); the ratio only keeps the later steps on
this batch within ε of where the learner started. At θ = θ₀ the gradient of
``r_t A_t`` is ``∇ log π_θ(a_t|x_t) · A_t``: without normalisation the
first step of each batch is IMPALA's. (Sample Factory takes the ratio against μ;
with a lag of several updates that clips samples the learner has already moved
past.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from seedrl.agents.impala import ImpalaConfig, impala_terms, mean_entropy, policy_outputs, taken_log_probs
from seedrl.config import ConfigError
from seedrl.runtime.unrolls import Unroll


@dataclass
class AppoConfig(ImpalaConfig):
    """IMPALA's V-trace settings plus the PPO surrogate and the passes over each batch."""

    lambda_: float = field(default=0.95, metadata={"help": "V-trace λ (PPO's GAE λ: 0.95)", "min": 0.0, "max": 1.0})
    clip_ratio: float = field(default=0.1, metadata={"help": "ε: the ratio π_θ/π_θ₀ is clipped to [1 − ε, 1 + ε]", "min_exclusive": 0.0})
    epochs: int = field(default=4, metadata={"help": "passes over each batch", "min": 1})
    minibatches: int = field(default=4, metadata={"help": "gradient steps per pass: the batch's environments split into this many groups", "min": 1})
    normalize_advantages: bool = field(default=True, metadata={"help": "standardise the advantages of each minibatch"})
    shuffle: str = field(default="unrolls", metadata={
        "help": "what minibatches are made of: whole environments' unrolls, or single transitions (feed-forward models)",
        "choices": ["unrolls", "transitions"]})

    def validate_batch(self, batch_size: int, unroll_length: int = 1) -> None:
        """A batch of ``batch_size`` environments × ``unroll_length`` steps must split into
        ``minibatches`` non-empty groups (of environments, or of transitions)."""
        units = batch_size * unroll_length if self.shuffle == "transitions" else batch_size
        if self.minibatches > units:
            what = ("transitions of a batch (runtime.batch_size x runtime.unroll_length)"
                    if self.shuffle == "transitions" else "environments of a batch (runtime.batch_size)")
            raise ConfigError(f"config error: 'agent.minibatches' = {self.minibatches} is above the {units} "
                              f"{what}: every minibatch needs one", "agent.minibatches")


class AppoMinibatch(NamedTuple):
    """What one gradient step learns from, with its fixed targets.

    Whole unrolls (``steps`` None): ``unroll`` holds some environments, the targets are ``[T, b]``.
    Transitions: ``unroll`` is the whole batch, ``steps = (t, b)`` index arrays pick the
    minibatch's ``M`` transitions and the targets are ``[M]``."""

    unroll: Unroll
    vs: torch.Tensor  #: V-trace value targets v_t
    advantages: torch.Tensor  #: Â_t
    anchor_logp: torch.Tensor  #: log π_θ₀(a_t|x_t)
    steps: tuple[np.ndarray, np.ndarray] | None = None


class _StepOutputs(NamedTuple):
    log_pi: torch.Tensor  #: [..., A] log π_θ(·|x_t) at the minibatch's transitions
    values: torch.Tensor  #: V_θ(x_t)
    target_logp: torch.Tensor  #: log π_θ(a_t|x_t)
    behaviour_logp: torch.Tensor  #: log μ(a_t|x_t)


def _step_outputs(model: torch.nn.Module, mb: AppoMinibatch) -> _StepOutputs:
    """The model's outputs at the minibatch's transitions (no bootstrap entry)."""
    if mb.steps is None:
        out = policy_outputs(model, mb.unroll)
        return _StepOutputs(out.log_pi, out.values[:-1], out.target_logp, out.behaviour_logp)
    t, b = mb.steps
    arrays = mb.unroll.arrays

    def pick(key: str) -> torch.Tensor:  # [1, M, ...]: one time step of M "environments"
        return torch.from_numpy(arrays[key][t, b][None])

    logits, values, _ = model.unroll(pick("obs"), mb.unroll.state0, pick("first"), pick("prev_action"),
                                     pick("prev_reward"))
    log_pi, target_logp = taken_log_probs(logits[0].float(), pick("action")[0])
    return _StepOutputs(log_pi, values[0].float(), target_logp, pick("logp")[0].float())


def appo_targets(model: torch.nn.Module, batch: Unroll, cfg: AppoConfig) -> AppoMinibatch:
    """The whole batch with its targets under the current weights θ₀ (no gradient)."""
    with torch.no_grad():
        t = impala_terms(model, batch, cfg)
    return AppoMinibatch(batch, t.vs, t.pg_advantages, t.target_logp)


def appo_loss(model: torch.nn.Module, mb: AppoMinibatch, cfg: AppoConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped-surrogate loss of one minibatch, and its logged terms."""
    out = _step_outputs(model, mb)
    adv = mb.advantages
    if cfg.normalize_advantages and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = out.target_logp - mb.anchor_logp
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * adv, ratio.clamp(1.0 - cfg.clip_ratio, 1.0 + cfg.clip_ratio) * adv)
    pg_loss = -surrogate.mean()
    baseline_loss = 0.5 * ((mb.vs - out.values) ** 2).mean()
    entropy = mean_entropy(out.log_pi)
    loss = pg_loss + cfg.baseline_cost * baseline_loss - cfg.entropy_cost * entropy
    with torch.no_grad():
        lag = out.target_logp - out.behaviour_logp
        logs = {
            "loss": loss.item(),
            "pg_loss": pg_loss.item(),
            "baseline_loss": baseline_loss.item(),
            "entropy": entropy.item(),
            # how far this step's policy is from θ₀ (k3 estimator of KL(π_θ₀ ‖ π_θ)) and from μ
            "approx_kl": float(((ratio - 1) - log_ratio).mean()),
            "clip_fraction": float(((ratio - 1).abs() > cfg.clip_ratio).float().mean()),
            "mean_abs_log_rho": float(lag.abs().mean()),
            "value_mean": out.values.mean().item(),
        }
    return loss, logs


class AppoStep:
    """The learner step of APPO: ``passes(batch)`` yields ``epochs × minibatches`` minibatches
    (the targets computed once, when the batch arrives); ``loss`` is :func:`appo_loss`."""

    uses_replay = False

    def __init__(self, model: torch.nn.Module, cfg: AppoConfig, seed: int = 0):
        self.model = model
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        if cfg.shuffle == "transitions" and hasattr(model, "initial_state"):
            self._check_feed_forward(model.initial_state(1))  # at start-up, not at the first batch

    @staticmethod
    def _check_feed_forward(state: tuple) -> None:
        if state:
            raise ConfigError("config error: 'agent.shuffle' = 'transitions' needs a feed-forward model; this "
                              "model is recurrent (its unrolls carry a state): use 'unrolls'", "agent.shuffle")

    def passes(self, batch: Unroll) -> Iterator[AppoMinibatch]:
        n = batch.num_envs
        self.cfg.validate_batch(n, batch.length)  # the config check, for batches not built by the runtime's learner
        if self.cfg.shuffle == "transitions":
            yield from self._transition_passes(batch)
            return
        whole = appo_targets(self.model, batch, self.cfg)
        for _ in range(self.cfg.epochs):
            for envs in np.array_split(self.rng.permutation(n), self.cfg.minibatches):
                index = torch.from_numpy(envs)
                yield AppoMinibatch(batch.take(envs), whole.vs[:, index], whole.advantages[:, index],
                                    whole.anchor_logp[:, index])

    def _transition_passes(self, batch: Unroll) -> Iterator[AppoMinibatch]:
        self._check_feed_forward(batch.state0)
        whole = appo_targets(self.model, batch, self.cfg)
        T, n = whole.vs.shape
        for _ in range(self.cfg.epochs):
            for flat in np.array_split(self.rng.permutation(T * n), self.cfg.minibatches):
                t, b = np.divmod(flat, n)
                ti, bi = torch.from_numpy(t), torch.from_numpy(b)
                yield AppoMinibatch(batch, whole.vs[ti, bi], whole.advantages[ti, bi], whole.anchor_logp[ti, bi],
                                    (t, b))

    def loss(self, mb: AppoMinibatch, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, None, dict]:
        loss, logs = appo_loss(self.model, mb, self.cfg)
        return loss, None, logs

    def after_update(self, updates: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, sd: dict) -> None:
        if "rng" in sd:
            self.rng.bit_generator.state = sd["rng"]
