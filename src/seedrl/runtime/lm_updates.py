"""The algorithm-specific half of a language-model learner step.

:func:`seedrl.runtime.lm_loop.train_lm` runs actors, the generation server,
checkpoints and metrics; an *update* object says what the actors must sample per
prompt and turns a batch of :class:`Group` s into a loss:

* :class:`PGUpdate`: REINFORCE-LOO with a KL penalty (:mod:`seedrl.agents.pg`),
  ``K`` policy samples per prompt;
* :class:`BondUpdate`: BOND / J-BOND (:mod:`seedrl.agents.bond`), policy samples
  plus anchor samples per prompt; it owns the anchor (fixed = the reference, or
  a third served model moved by the learner and pushed in place).

Both weight each policy sample by the truncated importance ratio ``min(c, π/μ)``
of the learner's policy to the distribution it was sampled from
(:func:`behaviour_logprobs`), which corrects the actors' policy lag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedrl.agents.bond import anchor_samples_needed, backward_reward, bond_loss, forward_weights, move_anchor, quantile_of
from seedrl.agents.pg import rloo_loss

ANCHOR_DIR = "anchor"


@dataclass
class Group:
    """Completions of one prompt with their rewards; anchor samples for BOND (teacher samples for GKD)."""

    prompt_tokens: list[int]
    completions: list[Any]
    rewards: np.ndarray
    anchor_completions: list[Any] | None = None
    anchor_rewards: np.ndarray | None = None
    example: Any = None  # the task's example of the prompt (GKD's fixed outputs)


@dataclass
class Request:
    """What an actor asks the generation server for, per prompt: ``n`` samples of ``model``."""

    model: str
    n: int


def behaviour_logprobs(completions) -> torch.Tensor:
    """``[N]`` log μ(y) of each sampled completion: the sum of its sampling log-probs (the
    distribution actually sampled from, by the actor's weights of that moment)."""
    return torch.tensor([float(np.sum(c.sampling_logprobs, dtype=np.float64)) for c in completions])


def _entropy(scores, rows: slice | None = None) -> float:
    ent, mask = scores.entropies.detach(), scores.mask
    if rows is not None:
        ent, mask = ent[rows], mask[rows]
    return ((ent * mask).sum() / mask.sum().clamp(min=1)).item()


class PGUpdate:
    """REINFORCE with a leave-one-out baseline and a KL penalty to the reference."""

    def __init__(self, cfg, learner_policy, checkpoint: Path | None = None):
        self.cfg, self.policy, self.server = cfg, learner_policy, None

    def requests(self) -> list[Request]:
        return [Request("policy", self.cfg.pg.samples_per_prompt)]

    def served_models(self) -> dict[str, Any]:
        return {}

    def loss(self, batch: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        k = self.cfg.pg.samples_per_prompt
        prompts = [g.prompt_tokens for g in batch for _ in range(k)]
        completions = [c.tokens for g in batch for c in g.completions]
        rewards = torch.from_numpy(np.concatenate([g.rewards for g in batch]))
        ref = self.server.score("reference", prompts, completions).result()
        scores = self.policy.score(prompts, completions)
        mu = behaviour_logprobs([c for g in batch for c in g.completions]).to(scores.sequence_logprobs.device)
        loss, logs = rloo_loss(scores.sequence_logprobs, scores.token_logprobs, ref.token_logprobs.to(scores.token_logprobs.device),
                               scores.mask, rewards, self.cfg.pg, mu)
        return loss, {**logs, "entropy": _entropy(scores)}

    def after_update(self, step: int) -> None:
        pass

    def save(self, path: Path) -> None:
        pass


class BondUpdate:
    """BOND / J-BOND: forward term on the best anchor sample, backward policy gradient on
    the policy samples, anchor moved after each update as configured."""

    def __init__(self, cfg, learner_policy, checkpoint: Path | None = None):
        """``checkpoint``: the one a resumed run starts from (its saved anchor is restored)."""
        from seedrl.models.lm.policy import LMPolicy

        self.cfg, self.b, self.policy, self.server = cfg, cfg.bond, learner_policy, None
        self.anchor = self.served_anchor = None  # fixed anchor: the reference itself
        if self.b.anchor != "fixed":
            source = cfg.reference or cfg.policy
            if checkpoint is not None and (checkpoint / ANCHOR_DIR).is_dir():
                source = str(checkpoint / ANCHOR_DIR)
            self.anchor = LMPolicy.from_pretrained(source).eval()  # the learner's copy, moved in place
            self.served_anchor = LMPolicy.from_pretrained(source).eval()
        self.anchor_name = "reference" if self.anchor is None else "anchor"

    def requests(self) -> list[Request]:
        return [Request("policy", self.b.policy_samples), Request(self.anchor_name, anchor_samples_needed(self.b))]

    def served_models(self) -> dict[str, Any]:
        return {} if self.served_anchor is None else {"anchor": self.served_anchor}

    def loss(self, batch: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        b, p, s = self.b, len(batch), self.b.policy_samples
        prompts = [g.prompt_tokens for g in batch]
        prompts_s = [x for x in prompts for _ in range(s)]
        policy_tokens = [c.tokens for g in batch for c in g.completions]
        pol_r = torch.from_numpy(np.stack([g.rewards for g in batch])).float()
        anc_r = torch.from_numpy(np.stack([g.anchor_rewards for g in batch])).float()
        weights = forward_weights(anc_r, b)
        # (prompt, anchor sample) pairs in the forward term; none when it has no weight (β = 1)
        used = weights.nonzero().tolist() if b.beta < 1 else []
        fwd_prompts = [prompts[i] for i, _ in used]
        fwd_tokens = [batch[i].anchor_completions[j].tokens for i, j in used]
        ref_f = self.server.score("reference", prompts_s, policy_tokens)
        anc_f = ref_f if self.anchor is None else self.server.score("anchor", prompts_s, policy_tokens)
        scores = self.policy.score(prompts_s + fwd_prompts, policy_tokens + fwd_tokens)
        lp = scores.sequence_logprobs
        pol_lp = lp[: p * s].view(p, s)
        fwd_lp = torch.zeros(weights.shape, dtype=lp.dtype, device=lp.device)
        if used:
            fwd_lp = fwd_lp.index_put(tuple(torch.tensor(used, device=lp.device).T), lp[p * s:])
        ref_seq = ref_f.result().sequence_logprobs.to(lp.device).view(p, s)
        anc_seq = anc_f.result().sequence_logprobs.to(lp.device).view(p, s)
        r_b = backward_reward(pol_r, anc_r, b) if b.beta > 0 else torch.zeros_like(pol_r)
        mu = behaviour_logprobs([c for g in batch for c in g.completions]).to(lp.device).view(p, s)
        loss, logs = bond_loss(pol_lp, anc_seq, r_b.to(lp.device), fwd_lp, weights.to(lp.device), b, mu)
        p_hat = quantile_of(pol_r, anc_r, b)
        mask = scores.mask[: p * s].float()
        return loss, {
            **logs,
            "reward": pol_r.mean().item(),
            "anchor_reward": anc_r.mean().item(),
            "best_anchor_reward": (weights * anc_r).sum(1).mean().item(),
            "log_quantile": torch.log(p_hat).mean().item(),
            "kl": (pol_lp.detach() - ref_seq).mean().item(),
            "length": mask.sum(-1).mean().item(),
            "entropy": _entropy(scores, slice(0, p * s)),
        }

    def after_update(self, step: int) -> None:
        if self.anchor is not None and move_anchor(self.anchor.parameters(), self.policy.parameters(), step, self.b):
            self.server.update_weights("anchor", self.anchor)

    def save(self, path: Path) -> None:
        if self.anchor is not None:
            self.anchor.model.save_pretrained(path / ANCHOR_DIR)
            self.anchor.tokenizer.save_pretrained(path / ANCHOR_DIR)
