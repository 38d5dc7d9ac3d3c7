"""RL from textual entailment feedback (Roit et al., 2023, arXiv 2306.00186): an on-policy
actor-critic on the token-level MDP of a summarizer, rewarded by an NLI model at the end and
held near the initial policy by a per-token KL.

**MDP.** A completion ``y = (y_0..y_{L−1})`` of a document prompt ``x`` is an episode: state
``s_t = (x, y_<t)``, action ``y_t``, terminal after the last token (EOS or the length cap).
The sequence reward ``R`` (entailment ``log P(entailed | premise = document, hypothesis =
summary)`` from ``task.nli_model``, plus whatever else ``task.reward_weights`` combines; plus
``length_coef·L`` if set) is paid at the last token, and each token pays its KL to the fixed
initial policy ``π_a`` (the run's ``reference``, by default the initial ``policy``)
(:func:`seedrl.ops.kl_shaped_rewards`):

    r_t = (1 − α)·R·[t = L − 1] − α·(log π(y_t|s_t) − log π_a(y_t|s_t)).

With ``γ = 1`` the return is ``(1 − α)·R − α·log π(y)/π_a(y)``, whose expectation
``(1 − α)·E_π[R] − α·KL(π ‖ π_a)`` is maximised by ``π*(y) ∝ π_a(y)·exp(((1 − α)/α)·R(y))``
(reached on a bandit and on a two-token tree in the tests).

**Returns and advantages** (:func:`seedrl.ops.masked_gae`): GAE(λ) with a learned value
``V(s_t)``, ``A_t = Σ_k (γλ)^k δ_{t+k}``, ``δ_t = r_t + γ·V(s_{t+1}) − V(s_t)``, ``V = 0`` after
the last token. **Default λ = 1 (Monte Carlo):** ``A_t = G_t − V(s_t)`` is unbiased whatever
the critic says; the critic only lowers variance as a baseline. The value head starts
untrained (zero output) and the reward comes only at the end, so a λ < 1 would bootstrap every
token's advantage from a critic that knows nothing yet, biasing the policy gradient early on;
summaries are short (tens of tokens), so the Monte-Carlo variance is affordable. Set
``rlef.gae_lambda`` (e.g. 0.95) to trade that bias for less variance once the critic is good.

**Critic** (``rlef.critic``): ``head`` — a linear value head on the policy's last hidden
state, in the same model (the shared trunk takes the value loss's gradient too); ``separate``
— a causal LM of its own (``rlef.critic_model``, default a copy of the initial policy; same
tokenizer) with a linear head. Both are trained by the loop's one optimizer beside the policy
and checkpointed with it (``value_head.pt``, ``critic/``). The head starts at zero output.

**Loss** (to minimise), over ``N`` completions with valid-token mask ``m``::

    L = −(1/N)·Σ_i Σ_t m·ρ̄_{i,t}·Â_{i,t}·log π(y_t|s_t)              (policy gradient)
        + c_V·Σ m·½(V(s_t) − G_t)² / Σ m                             (value, unclipped)
        − c_H·Σ m·H(π(·|s_t)) / Σ m                                  (entropy bonus, optional)

``Â`` is ``A`` or, with ``normalize_advantages``, ``A`` standardised over the batch's valid
tokens. The value loss is **not clipped**: PPO's clip bounds the move away from the values of
the behaviour's critic, and here each batch gets one gradient step, so those values are the
current ones and the clip would never bind.

**Off-policy lag.** Actors sample with weights that lag the learner's (``μ``), and the
sampler records ``log μ(y_t|s_t)`` of each token. ``rlef.importance``:

* ``token`` (default): ``ρ̄_t = min(c, π(y_t|s_t)/μ(y_t|s_t))`` per token
  (:func:`seedrl.ops.truncated_importance_weights`, ``c = importance_clip``), as IMPALA's policy
  gradient: it corrects each token's action distribution, and is exact for one-token
  completions; the prefix distribution and the return's future remain the behaviour's, a bias
  of the order of the policy change over the lag (one or two updates here). Low variance.
* ``sequence``: ``ρ̄ = min(c, π(y)/μ(y))`` for every token of a completion: with
  ``importance_clip: null`` the policy gradient's expectation under ``μ`` is the on-policy one
  exactly, at any lag (tested by enumeration); its variance grows with length and lag.

At lag 0 (``μ = π``) every weight is exactly 1 in both modes. The value regression uses the
behaviour's returns unweighted.

:class:`RLEFUpdate` is the learner step :func:`seedrl.runtime.lm_loop.train_lm` calls
(``algo: rlef``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedrl.ops.importance import truncated_importance_weights
from seedrl.ops.kl_shaping import kl_shaped_rewards
from seedrl.ops.returns import masked_gae
from seedrl.runtime.errors import ResumeMismatch
from seedrl.runtime.lm_config import LMRunConfig
from seedrl.runtime.lm_updates import Group, Request, behaviour_token_logprobs, mean_entropy

__all__ = ["CRITIC_DIR", "VALUE_HEAD_FILE", "LMRLEFConfig", "RLEFConfig", "RLEFUpdate", "rlef_loss"]

VALUE_HEAD_FILE = "value_head.pt"
CRITIC_DIR = "critic"


@dataclass
class RLEFConfig:
    """Entailment-feedback actor-critic settings (``rlef:`` in a config)."""

    alpha: float = field(default=0.1, metadata={"help": "α: r_t = (1−α)·R·[last] − α·log π/π_anchor per token",
                                                 "min": 0.0, "max": 1.0})
    samples_per_prompt: int = field(default=1, metadata={"help": "completions per prompt", "min": 1})
    gamma: float = field(default=1.0, metadata={"help": "discount (1: the KL-regularised optimum holds)", "min": 0.0, "max": 1.0})
    gae_lambda: float = field(default=1.0, metadata={"help": "λ of GAE; 1 = Monte-Carlo returns with the value as baseline",
                                                      "min": 0.0, "max": 1.0})
    critic: str = field(default="head", metadata={"help": "head: linear value head on the policy's last hidden state; "
                                                           "separate: a causal LM of its own + a linear head",
                                                   "choices": ["head", "separate"]})
    critic_model: str | None = field(default=None, metadata={
        "help": "separate critic's model (path or hub id, same tokenizer); default: a copy of the initial policy"})
    value_coef: float = field(default=0.1, metadata={"help": "c_V, weight of the value loss", "min": 0.0})
    entropy_coef: float = field(default=0.0, metadata={"help": "c_H, weight of the entropy bonus", "min": 0.0})
    normalize_advantages: bool = field(default=False, metadata={"help": "standardise advantages over the batch's tokens"})
    length_coef: float = field(default=0.0, metadata={"help": "added to the final reward per completion token "
                                                               "(> 0 counters the shrinking hack)"})
    importance: str = field(default="token", metadata={"help": "token: per-token min(c, π/μ); sequence: per-completion "
                                                                "(exact at any lag with importance_clip null)",
                                                        "choices": ["token", "sequence"]})
    importance_clip: float | None = field(default=1.0, metadata={
        "help": "c of the truncated importance weight min(c, π/μ) correcting policy lag; null = untruncated",
        "min_exclusive": 0.0})


@dataclass
class LMRLEFConfig(LMRunConfig):
    """Entailment-feedback RL on a language task (``configs/*_rlef.yaml``): ``policy`` is the
    supervised summarizer, ``reference`` (default: the same) the fixed KL anchor."""

    algo: str = field(default="rlef", metadata={"help": "rlef", "choices": ["rlef"]})
    name: str = field(default="lm_rlef", metadata={"help": "run name"})
    rlef: RLEFConfig = field(default_factory=RLEFConfig)

    def validate(self) -> None:
        super().validate()
        if self.rlef.critic_model is not None and self.rlef.critic != "separate":
            raise ValueError(f"rlef.critic_model={self.rlef.critic_model!r} needs rlef.critic: separate "
                             f"(got {self.rlef.critic!r})")

    def check_inputs(self) -> None:
        super().check_inputs()
        if self.rlef.critic_model is not None:
            from seedrl.errors import check_model_folder

            check_model_folder(self.rlef.critic_model, "rlef.critic_model")


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * m).sum() / m.sum().clamp(min=1)


def rlef_loss(
    token_logprobs: torch.Tensor,
    anchor_token_logprobs: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    cfg: RLEFConfig,
    behaviour_token_logprobs: torch.Tensor | None = None,
    entropies: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The actor-critic loss of the module docstring for ``N`` padded completions.

    Args:
        token_logprobs: ``[N, L]`` log π(y_t|s_t) (differentiable), 0 past each end.
        anchor_token_logprobs: ``[N, L]`` log π_a(y_t|s_t) of the fixed anchor.
        values: ``[N, L]`` V(s_t) (differentiable).
        mask: ``[N, L]`` valid tokens (a non-empty prefix of each row).
        rewards: ``[N]`` sequence rewards R.
        behaviour_token_logprobs: ``[N, L]`` log μ(y_t|s_t) the samples were drawn with;
            None = on-policy (weights 1).
        entropies: ``[N, L]`` H(π(·|s_t)) (differentiable), needed when ``entropy_coef > 0``.
    """
    n = token_logprobs.shape[0]
    shape = tuple(token_logprobs.shape)
    for name, x in (("anchor_token_logprobs", anchor_token_logprobs), ("values", values), ("mask", mask),
                    ("behaviour_token_logprobs", behaviour_token_logprobs), ("entropies", entropies)):
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"{name} must have the shape of token_logprobs [N, L] = {shape}, got {tuple(x.shape)}")
    if tuple(rewards.shape) != (n,):
        raise ValueError(f"rewards must have shape [N] = ({n},), got {tuple(rewards.shape)}")
    if cfg.entropy_coef > 0 and entropies is None:
        raise ValueError(f"rlef.entropy_coef={cfg.entropy_coef} needs the entropies")
    dev = token_logprobs.device
    m = mask.to(dev).bool()
    mf = m.float()
    lengths = mf.sum(1)
    final = rewards.to(dev).float() + cfg.length_coef * lengths
    tok = token_logprobs.float()
    r_t = kl_shaped_rewards(rewards=final, logprobs=tok.detach().T, anchor_logprobs=anchor_token_logprobs.to(dev).float().T,
                            mask=m.T, alpha=cfg.alpha)
    adv, ret = masked_gae(rewards=r_t, values=values.detach().float().T, mask=m.T, gamma=cfg.gamma, lambda_=cfg.gae_lambda)
    adv, ret = adv.T, ret.T
    if cfg.normalize_advantages:
        mean = _masked_mean(adv, mf)
        std = _masked_mean((adv - mean) ** 2, mf).sqrt()
        adv = torch.where(m, (adv - mean) / (std + 1e-8), 0)
    if behaviour_token_logprobs is None:
        rho = torch.ones_like(tok)
    elif cfg.importance == "token":
        rho = truncated_importance_weights(tok, behaviour_token_logprobs.to(dev).float(), cfg.importance_clip)
    else:
        seq = truncated_importance_weights((tok * mf).sum(1), (behaviour_token_logprobs.to(dev).float() * mf).sum(1),
                                           cfg.importance_clip)
        rho = seq[:, None].expand_as(tok)
    pg = -(rho * adv * tok * mf).sum(1).mean()
    value_loss = _masked_mean(0.5 * (values.float() - ret) ** 2, mf)
    loss = pg + cfg.value_coef * value_loss
    ent = torch.zeros((), device=dev) if entropies is None else _masked_mean(entropies.float(), mf)
    if cfg.entropy_coef > 0:
        loss = loss - cfg.entropy_coef * ent
    kl = ((tok.detach() - anchor_token_logprobs.to(dev).float()) * mf).sum(1)
    resid = _masked_mean((ret - values.detach().float()) ** 2, mf)
    spread = _masked_mean((ret - _masked_mean(ret, mf)) ** 2, mf)
    return loss, {
        "loss": loss.item(),
        "pg_loss": pg.item(),
        "value_loss": value_loss.item(),
        "reward": rewards.float().mean().item(),
        "kl": kl.mean().item(),
        "return": ret[:, 0].mean().item(),
        "value": values[:, 0].detach().float().mean().item(),
        "length": lengths.mean().item(),
        "importance_weight": _masked_mean(rho, mf).item(),
        "explained_variance": (1 - resid / spread.clamp(min=1e-12)).item(),
    }


class ValueHead(torch.nn.Module):
    """``V(s) = w·h(s) + b`` on a last hidden state ``h``; starts at zero output."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def _hidden_size(policy) -> int:
    cfg = policy.config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise ValueError(f"cannot tell the hidden size of {type(policy.base_model).__name__} (no hidden_size/n_embd/d_model)")


class RLEFUpdate:
    """The entailment-feedback learner step: ``K`` policy samples per prompt, anchor log-probs
    from the served reference, values from the value head (or the separate critic), the loss of
    :func:`rlef_loss`. Trains and checkpoints its value head / critic (:meth:`parameters`, :meth:`save`)."""

    def __init__(self, cfg: LMRLEFConfig, learner_policy, checkpoint: Path | None = None):
        from seedrl.models.lm.policy import LMPolicy

        self.cfg, self.r, self.policy, self.server = cfg, cfg.rlef, learner_policy, None
        self.critic = None
        trunk = learner_policy
        if self.r.critic == "separate":
            from seedrl.agents.gkd import check_same_vocabulary

            source = self.r.critic_model or cfg.reference or cfg.policy
            if checkpoint is not None:
                source = str(_need(checkpoint / CRITIC_DIR, "its separate critic"))
            self.critic = trunk = LMPolicy.from_pretrained(source).eval()  # eval: no dropout noise in the values
            check_same_vocabulary(learner_policy, self.critic, cfg.policy, str(source))
        self.head = ValueHead(_hidden_size(trunk)).to(learner_policy.device)
        if checkpoint is not None:
            state = torch.load(_need(checkpoint / VALUE_HEAD_FILE, "its value head"), map_location=learner_policy.device,
                               weights_only=True)
            self.head.load_state_dict(state)

    def parameters(self) -> list[torch.Tensor]:
        """Trained beside the policy: the value head, and the separate critic's weights."""
        critic = list(self.critic.parameters()) if self.critic is not None else []
        return [*critic, *self.head.parameters()]

    def requests(self) -> list[Request]:
        return [Request("policy", self.r.samples_per_prompt)]

    def served_models(self) -> dict[str, Any]:
        return {}

    def loss(self, batch: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        comps = [c for g in batch for c in g.completions]
        prompts = [g.prompt_tokens for g in batch for _ in g.completions]
        tokens = [c.tokens for c in comps]
        rewards = torch.from_numpy(np.concatenate([g.rewards for g in batch])).float()
        anchor = self.server.score("reference", prompts, tokens)
        scores = self.policy.score(prompts, tokens, return_hidden=self.critic is None)
        hidden = scores.hidden if self.critic is None else self.critic.completion_outputs(prompts, tokens, hidden=True)[1]
        values = self.head(hidden.to(self.policy.device))
        dev = scores.token_logprobs.device
        mu = behaviour_token_logprobs(comps, scores.mask.shape[1]).to(dev)
        loss, logs = rlef_loss(scores.token_logprobs, anchor.result().token_logprobs.to(dev), values, scores.mask,
                               rewards, self.r, mu, scores.entropies if self.r.entropy_coef > 0 else None)
        return loss, {**logs, "entropy": mean_entropy(scores)}

    def after_update(self, step: int) -> None:
        pass

    def save(self, path: Path) -> None:
        torch.save(self.head.state_dict(), path / VALUE_HEAD_FILE)
        if self.critic is not None:
            self.critic.model.save_pretrained(path / CRITIC_DIR)
            self.critic.tokenizer.save_pretrained(path / CRITIC_DIR)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ResumeMismatch(f"cannot resume from {path.parent}: {path.name} ({what}) is missing; was it an rlef run "
                             "with the same rlef.critic?")
    return path
