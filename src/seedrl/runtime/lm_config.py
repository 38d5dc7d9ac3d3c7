"""Configs of language-model training on the runtime (``configs/*_pg.yaml``, ``configs/*_bond.yaml``).

:class:`LMRunConfig` holds what every language algorithm shares (models, task,
sampling, optimisation, actors, logging, checkpoints); :class:`LMPGConfig` adds
REINFORCE-LOO's settings and :class:`LMBondConfig` BOND / J-BOND's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seedrl.agents.bond import BondConfig
from seedrl.agents.pg import PGConfig

__all__ = ["LMBondConfig", "LMPGConfig", "LMRunConfig", "LMSamplingConfig", "LMTaskConfig"]


@dataclass
class LMTaskConfig:
    """Prompts and rewards: a toy world, or a JSONL/Parquet file with a reward callable."""

    world: str | None = field(default="arithmetic", metadata={"help": "toy world (arithmetic, facts): prompts and exact reward"})
    world_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword arguments of the world (as in its SFT config)"})
    world_reward: str = field(default="exact", metadata={"help": "the world's reward (arithmetic: exact|partial; facts: faithfulness|coverage|f1)"})
    num_examples: int = field(default=2000, metadata={"help": "examples drawn from the world", "min": 1})
    data_path: Path | None = field(default=None, metadata={"help": "JSONL/Parquet prompts instead of a world"})
    template: str = field(default="{prompt}", metadata={"help": "prompt template over the example's fields"})
    reward: str | None = field(default=None, metadata={"help": "python 'module:function' reward(prompts, completions, examples) for data_path tasks"})
    seed: int = field(default=0, metadata={"help": "seed of the prompt order"})
    reward_model: str | None = field(default=None, metadata={
        "help": "a one-output sequence classifier (path or hub id) scoring (prompt, completion) as the reward"})
    nli_model: str | None = field(default=None, metadata={
        "help": "an NLI classifier (path or hub id): reward = log P(entailment | premise = example[nli_source_field], "
                "hypothesis = completion)"})
    nli_source_field: str = field(default="document", metadata={"help": "example field holding the NLI premise"})
    reward_weights: dict[str, float] = field(default_factory=dict, metadata={
        "help": "weights of the reward sources 'task', 'reward_model', 'nli' (summed); default 1 for each configured "
                "model, and 1 for the task's own reward only when no model is configured"})


@dataclass
class LMSamplingConfig:
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature", "min": 0.0})
    top_k: int = field(default=0, metadata={"help": "0 = off", "min": 0})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass", "min_exclusive": 0.0, "max": 1.0})
    max_new_tokens: int = field(default=16, metadata={"help": "completion length cap", "min": 1})
    max_batch: int = field(default=64, metadata={"help": "sequences the sampler decodes at once", "min": 1})


@dataclass
class LMRunConfig:
    """What every language-model algorithm on the runtime shares."""

    algo: str = field(default="pg", metadata={"help": "pg | bond", "choices": ["pg", "bond"]})
    name: str = field(default="lm_run", metadata={"help": "run name"})
    out_dir: Path = field(default=Path("runs"), metadata={"help": "parent of run directories"})
    seed: int = field(default=0, metadata={"help": "seed of sampling and initialisation"})
    policy: str = field(default="", metadata={"help": "policy model directory (save_pretrained) or hub id"})
    reference: str | None = field(default=None, metadata={"help": "reference model (default: the initial policy)"})
    task: LMTaskConfig = field(default_factory=LMTaskConfig)
    sampling: LMSamplingConfig = field(default_factory=LMSamplingConfig)
    steps: int = field(default=200, metadata={"help": "learner updates", "min": 1})
    prompts_per_step: int = field(default=8, metadata={"help": "prompts (each with K completions) per update", "min": 1})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate", "min_exclusive": 0.0})
    grad_clip: float = field(default=1.0, metadata={"help": "global grad-norm clip", "min_exclusive": 0.0})
    num_actors: int = field(default=4, metadata={"help": "actor threads drawing prompts and scoring rewards", "min": 1})
    queue_groups: int = field(default=16, metadata={"help": "bound of the actor->learner queue", "min": 1})
    record_rate: float = field(default=0.0, metadata={"help": "fraction of completions recorded as RLDS steps", "min": 0.0, "max": 1.0})
    log_every: int = field(default=5, metadata={"help": "updates between metric rows", "min": 1})
    checkpoint_every: int = field(default=50, metadata={"help": "updates between checkpoints (model, optimizer, prompt order, RNG)", "min": 1})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept", "min": 1})
    progress: bool = field(default=True, metadata={"help": "progress bar"})

    def validate(self) -> None:
        if not self.policy:
            raise ValueError("policy: give a model directory or hub id (e.g. from `seedrl lm setup-toy`)")
        if self.task.world is None and self.task.data_path is None:
            raise ValueError("task: set task.world or task.data_path")
        s = self.sampling
        for name, value, neutral in (("temperature", s.temperature, 1.0), ("top_k", s.top_k, 0), ("top_p", s.top_p, 1.0)):
            if value != neutral:
                raise ValueError(
                    f"sampling.{name}: {value!r} is not supported for training (use {neutral!r}): the learners "
                    "estimate gradients of the temperature-1 policy and correct only policy lag; a tempered or "
                    "filtered sampling distribution would train on a different one (filtered tokens are never drawn)")


@dataclass
class LMPGConfig(LMRunConfig):
    """KL-regularised REINFORCE-LOO on a language task (``configs/*_pg.yaml``)."""

    algo: str = field(default="pg", metadata={"help": "pg", "choices": ["pg"]})
    name: str = field(default="lm_pg", metadata={"help": "run name"})
    pg: PGConfig = field(default_factory=PGConfig)


@dataclass
class LMBondConfig(LMRunConfig):
    """BOND / J-BOND on a language task (``configs/*_bond.yaml``): distil Best-of-n of an anchor.

    Per prompt the actors draw ``bond.policy_samples`` completions from the policy
    and the anchor samples (the best-of-n pool and the quantile samples) from the
    anchor, all through the generation server. ``anchor: fixed`` uses the
    reference as anchor; ``periodic`` and ``ema`` serve a third model that the
    learner moves and pushes in place."""

    algo: str = field(default="bond", metadata={"help": "bond", "choices": ["bond"]})
    name: str = field(default="lm_bond", metadata={"help": "run name"})
    bond: BondConfig = field(default_factory=BondConfig)
    frontier_prompts: int = field(default=32, metadata={
        "help": "prompts for the reference's Best-of-N frontier drawn beside the reward-vs-KL plot (0 = off)", "min": 0})
    frontier_ns: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "N of the frontier", "min": 1})

    def validate(self) -> None:
        super().validate()
        if self.bond.backward_reward == "exact":
            raise ValueError("bond.backward_reward: 'exact' needs exact quantiles of the reference (bandits only); "
                             "use log_quantile or jbond")
