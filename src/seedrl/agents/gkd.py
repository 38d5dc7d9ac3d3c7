"""GKD: generalized knowledge distillation of a teacher LM into a student (Agarwal et al., arXiv 2306.13649).

For a prompt x and a completion y (of length L) the student S is trained on

    D(p_T ‖ p_S)(y|x) = (1/L) Σ_n D(p_T(·|x, y_<n) ‖ p_S(·|x, y_<n))

with D forward KL, reverse KL or the generalized JSD(β) (:mod:`seedrl.ops.divergences`),
both distributions tempered by ``gkd.temperature``. Where the completions come from:

* with probability λ (``gkd.lmbda``, per learner batch) they are the **student's own
  samples** (on-policy; no gradient through sampling, only through p_S at each position);
* otherwise (``gkd.off_policy``) the task's **fixed outputs** (``dataset``: the example's
  reference completion + EOS, supervised KD) or **teacher samples** (``teacher``:
  sequence-level KD, trained with the divergence or, ``gkd.teacher_loss: nll``, with the
  student's negative log-likelihood of them).

Optional RL mix (``gkd.alpha`` < 1): maximise ``(1−α)·E[r(y)] − α·E[D]``, i.e. minimise
``α·D − (1−α)·(REINFORCE-LOO surrogate of the reward on the student samples)`` (the
leave-one-out baseline of :mod:`seedrl.agents.pg`; needs ``samples_per_prompt >= 2``).

The teacher is one more model of the generation server (central inference): it
samples for sequence-level KD and gives its next-token distributions, full or top-k
(``gkd.top_k``), through :meth:`~seedrl.models.lm.server.GenerationServer.distributions`,
or, for dataset batches, from a cache made once (``gkd.teacher_cache``, :mod:`seedrl.agents.gkd_cache`).
Teacher and student may differ in size and architecture, not in tokenizer:
:func:`check_same_vocabulary` refuses that at start-up.

:class:`GKDUpdate` is the learner step :func:`seedrl.runtime.lm_loop.train_lm` calls
(``algo: gkd``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedrl.agents.pg import leave_one_out_baseline
from seedrl.ops.divergences import KINDS, token_divergence
from seedrl.runtime.lm_config import LMRunConfig
from seedrl.runtime.lm_updates import Group, Request

COIN_FILE = "gkd_coin.json"  # the λ coin's generator state, in each checkpoint folder

__all__ = ["COIN_FILE", "GKDConfig", "GKDUpdate", "LMGKDConfig", "check_same_vocabulary", "gkd_loss"]


@dataclass
class GKDConfig:
    """Divergence, data mix and RL mix of GKD."""

    divergence: str = field(default="jsd", metadata={"help": "forward_kl | reverse_kl | jsd", "choices": list(KINDS)})
    beta: float = field(default=0.5, metadata={"help": "β of JSD(β): M = β·teacher + (1−β)·student", "min_exclusive": 0.0,
                                                 "max_exclusive": 1.0})
    temperature: float = field(default=1.0, metadata={"help": "temperature of both next-token distributions", "min_exclusive": 0.0})
    lmbda: float = field(default=1.0, metadata={"help": "λ, on-policy fraction: probability that a batch trains on student samples",
                                                  "min": 0.0, "max": 1.0})
    off_policy: str = field(default="dataset", metadata={"help": "the other batches: dataset (the task's reference outputs) | "
                                                                 "teacher (teacher samples, sequence-level KD)",
                                                         "choices": ["dataset", "teacher"]})
    teacher_loss: str = field(default="divergence", metadata={"help": "on teacher samples: divergence | nll",
                                                                "choices": ["divergence", "nll"]})
    samples_per_prompt: int = field(default=1, metadata={"help": "student (and teacher) samples per prompt", "min": 1})
    alpha: float = field(default=1.0, metadata={"help": "α of the RL mix (1−α)·reward − α·divergence; 1 = pure distillation",
                                                 "min": 0.0, "max": 1.0})
    top_k: int = field(default=0, metadata={"help": "teacher top-k log-probs + rest of the mass (0 = full vocabulary)", "min": 0})
    reduction: str = field(default="sequence", metadata={"help": "sequence: mean over sequences of the (1/L) token mean; "
                                                                 "token: mean over all tokens", "choices": ["sequence", "token"]})
    chunk_tokens: int = field(default=256, metadata={"help": "positions per divergence chunk (memory bound)", "min": 1})
    max_target_tokens: int = field(default=64, metadata={"help": "dataset outputs: tokens incl. EOS (longer ones are cut)", "min": 1})
    target_field: str = field(default="reference", metadata={"help": "example field holding the fixed output"})
    teacher_cache: str | None = field(default=None, metadata={
        "help": "dataset from `seedrl lm cache-teacher`: dataset batches take the teacher's top-k from it"})


@dataclass
class LMGKDConfig(LMRunConfig):
    """GKD on a language task (``configs/*_gkd.yaml``): ``policy`` is the student, ``teacher`` the teacher."""

    algo: str = field(default="gkd", metadata={"help": "gkd", "choices": ["gkd"]})
    name: str = field(default="lm_gkd", metadata={"help": "run name"})
    teacher: str = field(default="", metadata={"help": "teacher model directory (save_pretrained) or hub id"})
    gkd: GKDConfig = field(default_factory=GKDConfig)

    def validate(self) -> None:
        super().validate()
        if not self.teacher:
            raise ValueError("teacher: give the teacher model directory or hub id (e.g. runs/toy/arith/teacher)")
        if self.gkd.alpha < 1 and self.gkd.samples_per_prompt < 2:
            raise ValueError(f"gkd.samples_per_prompt={self.gkd.samples_per_prompt}: the RL mix (gkd.alpha="
                             f"{self.gkd.alpha}) needs >= 2 samples per prompt for its leave-one-out baseline")


def check_same_vocabulary(student, teacher, student_name: str, teacher_name: str) -> None:
    """Refuse a teacher whose tokenizer or output vocabulary differs from the student's
    (token-level divergences compare distributions over the same token ids)."""
    st, tt = student.tokenizer, teacher.tokenizer
    problems = []
    sv, tv = st.get_vocab(), tt.get_vocab()
    if sv != tv:
        moved = sum(tv.get(tok) != i for tok, i in sv.items())
        problems.append(f"vocabularies differ ({len(st)} vs {len(tt)} tokens; {moved} of the student's tokens "
                        "have another id or none in the teacher's)")
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id"):
        if getattr(st, attr, None) != getattr(tt, attr, None):
            problems.append(f"{attr} {getattr(st, attr, None)} vs {getattr(tt, attr, None)}")
    if student.vocab_size != teacher.vocab_size:
        problems.append(f"output layers have {student.vocab_size} vs {teacher.vocab_size} logits")
    if problems:
        raise ValueError(f"teacher {teacher_name!r} and student {student_name!r} do not share a tokenizer: "
                         + "; ".join(problems) + " (GKD needs the same token ids on both sides)")


def gkd_loss(divergence: torch.Tensor, seq_logprobs: torch.Tensor | None = None, rewards: torch.Tensor | None = None,
             alpha: float = 1.0, samples_per_prompt: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """``α·mean(D) − (1−α)·mean((r − b_LOO)·log p_S(y))``: the divergence ``[N]`` (per sequence,
    differentiable) and, for α < 1, REINFORCE-LOO on ``rewards`` ``[P·K]`` of student samples
    whose sequence log-probs are ``seq_logprobs`` ``[P·K]``."""
    loss = alpha * divergence.mean()
    logs = {"divergence": divergence.detach().mean().item()}
    if alpha < 1:
        r = rewards.to(seq_logprobs.device).float().view(-1, samples_per_prompt)
        adv = (r - leave_one_out_baseline(r)).reshape(-1)
        pg = -(adv.detach() * seq_logprobs).mean()
        loss = loss + (1 - alpha) * pg
        logs["pg_loss"] = pg.item()
    logs["loss"] = loss.item()
    return loss, logs


class GKDUpdate:
    """The GKD learner step: serves the teacher, picks each batch's completions (student
    samples with probability λ, else fixed outputs or teacher samples), gets the teacher's
    distributions over them from the server, and returns the GKD loss.

    The reference model is not used (``uses_reference``: the runtime neither loads nor serves
    it). With λ = 0 and no RL mix the actors sample no student completions at all. The λ coin's
    generator state is saved in each checkpoint (:data:`COIN_FILE`) and restored on resume, so
    a resumed run makes the same on/off-policy choices as an uninterrupted one."""

    uses_reference = False

    def __init__(self, cfg: LMGKDConfig, learner_policy, checkpoint: Path | None = None):
        from seedrl.models.lm.policy import LMPolicy

        self.cfg, self.g, self.policy, self.server = cfg, cfg.gkd, learner_policy, None
        self.teacher = LMPolicy.from_pretrained(cfg.teacher).eval()
        check_same_vocabulary(learner_policy, self.teacher, cfg.policy, cfg.teacher)
        self.rng = np.random.default_rng([cfg.seed, 0x6BD])
        self._ahead: dict[int, tuple] = {}  # id(batch) -> (coin state before it, source, prompts, completions, teacher future)
        if checkpoint is not None and (checkpoint / COIN_FILE).is_file():
            self.rng.bit_generator.state = json.loads((checkpoint / COIN_FILE).read_text(encoding="utf-8"))
        self.target = self.dataset_targets(learner_policy.tokenizer, self.g)
        self.cache = None
        if self.g.teacher_cache:
            from seedrl.agents.gkd_cache import TeacherCache

            self.cache = TeacherCache(self.g.teacher_cache, temperature=self.g.temperature)

    def requests(self) -> list[Request]:
        """Student samples (none when no batch can use them: λ = 0 without the RL mix), and
        teacher samples for sequence-level KD."""
        g, k = self.g, self.g.samples_per_prompt
        student = k if g.lmbda > 0 or g.alpha < 1 else 0
        more = [Request("teacher", k)] if g.off_policy == "teacher" and g.lmbda < 1 else []
        return [Request("policy", student), *more]

    def served_models(self) -> dict[str, Any]:
        return {"teacher": self.teacher}

    @staticmethod
    def dataset_targets(tokenizer, g: GKDConfig):
        """``example -> token ids`` of its fixed output (``g.target_field`` + EOS, cut at
        ``g.max_target_tokens``), memoised."""
        from seedrl.agents.sft import completion_targets

        memo: dict[str, list[int]] = {}

        def target(example) -> list[int]:
            if not isinstance(example, dict) or g.target_field not in example:
                have = sorted(example) if isinstance(example, dict) else type(example).__name__
                raise ValueError(f"gkd.target_field={g.target_field!r}: the task's examples have no such field (have {have})")
            text = str(example[g.target_field])
            if text not in memo:
                memo[text] = completion_targets(tokenizer, text, tokenizer.eos_token_id, g.max_target_tokens)
            return memo[text]

        return target

    def _completions(self, batch: list[Group]) -> tuple[str, list[list[int]], list[list[int]]]:
        """``(source, prompts, completions)`` of this batch's distillation term."""
        g = self.g
        if self.rng.random() < g.lmbda:
            source, rows = "student", [(x.prompt_tokens, c.tokens) for x in batch for c in x.completions]
        elif g.off_policy == "teacher":
            source, rows = "teacher", [(x.prompt_tokens, c.tokens) for x in batch for c in x.anchor_completions]
        else:
            target = (lambda x: self.cache.target(x.prompt_tokens)) if self.cache else (lambda x: self.target(x.example))
            source, rows = "dataset", [(x.prompt_tokens, target(x)) for x in batch]
        rows = [(p, list(c)) for p, c in rows if len(c)]  # an empty completion has no positions to distil
        return source, [p for p, _ in rows], [c for _, c in rows]

    def prefetch(self, batch: list[Group]) -> None:
        """Flip this batch's λ coin and ask the server for the teacher's distributions over its
        completions now (the loop calls this one update ahead, so the teacher's forward pass
        overlaps the learner's step on the previous batch); :meth:`loss` then takes them."""
        state = self.rng.bit_generator.state  # a checkpoint holds the coin as of before this batch
        source, prompts, comps = self._completions(batch)
        self._ahead[id(batch)] = (state, source, prompts, comps, self._ask_teacher(source, prompts, comps))

    def _ask_teacher(self, source: str, prompts, comps):
        if source == "dataset" and self.cache is not None:
            return None
        # a full distribution comes untempered (token_divergence tempers teacher and student alike);
        # a top-k one tempered (its k largest and tail are taken after tempering)
        g = self.g
        return self.server.distributions("teacher", prompts, comps, g.temperature if g.top_k else 1.0, g.top_k)

    def loss(self, batch: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        g, k = self.g, self.g.samples_per_prompt
        ahead = self._ahead.pop(id(batch), None)
        if ahead is not None:
            _, source, prompts, comps, teacher = ahead
        else:
            source, prompts, comps = self._completions(batch)
            teacher = self._ask_teacher(source, prompts, comps)
        cached = source == "dataset" and self.cache is not None
        rl = g.alpha < 1
        student_rows = [(x.prompt_tokens, c.tokens) for x in batch for c in x.completions]
        # one student forward for the distillation rows and (RL mix) the student samples
        extra = student_rows if rl else []
        logits = self.policy.completion_logits(prompts + [p for p, _ in extra], comps + [c for _, c in extra])
        n = len(comps)
        dist = self.cache.distributions(prompts) if cached else teacher.result()
        mask = dist.mask.to(logits.device)
        L = mask.shape[1]
        student = logits[:n, :L]
        if source == "teacher" and g.teacher_loss == "nll":
            tok = self._token_logprobs(student, comps, g.temperature)
            div = -(tok.sum(-1) / mask.sum(-1).clamp(min=1)) if g.reduction == "sequence" else -tok.sum()[None] / mask.sum()
        else:
            div = token_divergence(student, dist.teacher().to(logits.device), kind=g.divergence, beta=g.beta, temperature=g.temperature, mask=mask,
                                   reduction=g.reduction, chunk_tokens=g.chunk_tokens)
            div = div.reshape(-1)
        rewards = torch.from_numpy(np.concatenate([x.rewards for x in batch])).float()
        seq_lp = None
        if rl:
            seq_lp = self._token_logprobs(logits[n:], [c for _, c in extra]).sum(-1)  # the sampled policy: untempered
        loss, logs = gkd_loss(div, seq_lp, rewards, g.alpha, k)
        logs["on_policy"] = float(source == "student")
        logs["tokens"] = float(sum(len(c) for c in comps))  # completion tokens distilled in this batch
        if len(rewards):  # student samples were drawn (λ > 0 or the RL mix)
            logs.update({"reward": rewards.mean().item(),
                         "length": float(np.mean([len(c.tokens) for x in batch for c in x.completions]))})
        if batch[0].anchor_rewards is not None:
            logs["teacher_reward"] = float(np.mean(np.concatenate([x.anchor_rewards for x in batch])))
        return loss, logs

    @staticmethod
    def _token_logprobs(logits: torch.Tensor, comps: list, temperature: float = 1.0) -> torch.Tensor:
        """``log softmax(z/T)`` of each completion token ``[B, L]``, 0 past each completion's end."""
        lp = torch.log_softmax(logits.float() / temperature, -1)
        L = lp.shape[1]
        tgt = torch.tensor([list(c) + [0] * (L - len(c)) for c in comps], dtype=torch.long, device=lp.device)
        mask = torch.arange(L, device=lp.device)[None] < torch.tensor([len(c) for c in comps], device=lp.device)[:, None]
        return lp.gather(-1, tgt[..., None]).squeeze(-1) * mask

    def after_update(self, step: int) -> None:
        pass

    def save(self, path: Path) -> None:
        # a prefetched batch not trained yet is not in the checkpoint: nor is its coin flip
        state = next(iter(self._ahead.values()))[0] if self._ahead else self.rng.bit_generator.state
        (path / COIN_FILE).write_text(json.dumps(state), encoding="utf-8")
