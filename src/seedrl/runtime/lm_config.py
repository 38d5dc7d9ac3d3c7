"""Configs of language-model training on the runtime (``configs/*_pg.yaml``, ``configs/*_bond.yaml``).

:class:`LMRunConfig` holds what every language algorithm shares (models, task,
sampling, optimisation, actors, logging, checkpoints); :class:`LMPGConfig` adds
REINFORCE-LOO's settings and :class:`LMBondConfig` BOND / J-BOND's.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from seedrl.agents.bond import BondConfig
from seedrl.agents.pg import PGConfig
from seedrl.config import ConfigError
from seedrl.config.sections import LogConfig, OptimConfig, RecordConfig, RunConfig
from seedrl.errors import InputFileError, check_model_folder
from seedrl.runtime.config import RayClusterConfig, check_ray_installed
from seedrl.runtime.lm_eval import LMEvalConfig
from seedrl.rewards.base import check_reward_on, load_reward_callable

__all__ = ["LMBondConfig", "LMGenerationConfig", "LMPGConfig", "LMRayConfig", "LMRunConfig", "LMRuntimeConfig",
           "LMSamplingConfig", "LMTaskConfig", "LMVLLMConfig"]


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
    seed: int = field(default=0, metadata={"help": "seed of the world's examples and, with the run's seed, of the prompt order"})
    reward_model: str | None = field(default=None, metadata={
        "help": "a one-output sequence classifier (path or hub id) scoring (prompt, completion) as the reward"})
    nli_model: str | None = field(default=None, metadata={
        "help": "an NLI classifier (path or hub id): reward = log P(entailment | premise = example[nli_source_field], "
                "hypothesis = completion)"})
    nli_source_field: str = field(default="document", metadata={"help": "example field holding the NLI premise"})
    reward_weights: dict[str, float] = field(default_factory=dict, metadata={
        "help": "weights of the reward sources 'task', 'reward_model', 'nli' (summed); default 1 for each configured "
                "model, and 1 for the task's own reward only when no model is configured"})


    def order_seed(self, run_seed: int) -> int:
        """Seed of the prompt order: ``task.seed`` mixed with the run's ``seed``
        (``SeedSequence([task.seed, seed])``), so runs that differ only in ``seed`` visit the
        prompts (and so form their batches) in different orders, while the examples themselves
        (a world's draw) depend on ``task.seed`` alone. Run seed 0 gives ``task.seed`` itself:
        the orders of runs made before the run's seed counted, and their checkpoints' resume."""
        if int(run_seed) == 0:
            return int(self.seed)
        return int(np.random.SeedSequence([int(self.seed), int(run_seed)]).generate_state(1)[0])


@dataclass
class LMSamplingConfig:
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature", "min": 0.0})
    top_k: int = field(default=0, metadata={"help": "0 = off", "min": 0})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass", "min_exclusive": 0.0, "max": 1.0})
    max_new_tokens: int = field(default=16, metadata={"help": "completion length cap", "min": 1})
    max_batch: int = field(default=64, metadata={"help": "sequences the sampler decodes at once", "min": 1})


@dataclass
class LMRayConfig(RayClusterConfig):
    """What each role of a language run asks of the Ray cluster (``runtime.backend: ray``).

    Roles -> Ray actors: each served model (policy, reference, and an update's own: BOND's
    anchor, GKD's teacher) is one generation server, a Ray actor requesting
    ``generation_cpus`` / ``generation_gpus`` (a model with a ``generation`` override asks for
    that instead); a reward that holds a model (a reward model, an NLI classifier) is one
    Ray actor requesting ``reward_cpus`` / ``reward_gpus``; each actor (``runtime.num_actors``)
    is a Ray actor requesting ``actor_cpus``. The learner stays in the driver."""

    generation_cpus: float = field(default=1.0, metadata={"help": "CPUs each generation server (one Ray actor per served model: policy, reference, anchor, teacher) requests; also its torch threads (at least 1)", "min_exclusive": 0.0})
    generation_gpus: float = field(default=0.0, metadata={"help": "GPUs each generation server requests; > 0 puts its model on the GPU Ray assigns", "min": 0.0})
    generation: dict[str, dict[str, float]] = field(default_factory=dict, metadata={"help": "per served model overrides, e.g. {teacher: {gpus: 1, cpus: 2}} (keys: cpus, gpus)"})
    reward_cpus: float = field(default=1.0, metadata={"help": "CPUs the reward's Ray actor requests when the reward holds a model (reward_model, nli_model); a plain reward runs in each actor", "min_exclusive": 0.0})
    reward_gpus: float = field(default=0.0, metadata={"help": "GPUs the reward's Ray actor requests (a reward model on the GPU)", "min": 0.0})
    placement: str = field(default="none", metadata={"help": "a Ray placement group for the run's Ray actors (generation servers, reward, actors): pack (few nodes), spread (across nodes) or none (each placed by scheduling)", "choices": ["none", "pack", "spread"]})

    def resources(self, model: str) -> dict[str, float]:
        """``{"cpus": c, "gpus": g}`` the generation server of ``model`` requests."""
        over = self.generation.get(model, {})
        return {"cpus": float(over.get("cpus", self.generation_cpus)), "gpus": float(over.get("gpus", self.generation_gpus))}

    def check(self) -> None:
        """Every ``generation`` override names cpus/gpus with a number >= 0 (cpus > 0)."""
        for model, over in self.generation.items():
            if not isinstance(over, dict):
                raise ConfigError(f"config error: 'runtime.ray.generation.{model}' = {over!r}: expected a mapping "
                                  "with cpus and/or gpus", f"runtime.ray.generation.{model}")
            for key, value in over.items():
                if key not in ("cpus", "gpus"):
                    raise ConfigError(f"config error: 'runtime.ray.generation.{model}.{key}' is not a key (use cpus, gpus)",
                                      f"runtime.ray.generation.{model}.{key}")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (key == "cpus" and value == 0):
                    raise ConfigError(f"config error: 'runtime.ray.generation.{model}.{key}' = {value!r}: expected a number "
                                      f"{'> 0' if key == 'cpus' else '>= 0'}", f"runtime.ray.generation.{model}.{key}")


@dataclass
class LMRuntimeConfig:
    """Actors drawing prompts and scoring rewards around the generation servers."""

    backend: str = field(default="threads", metadata={"help": "threads (embedded: actors are threads of the run's process, one generation server for every model) or ray (generation servers, reward models and actors as Ray actors; needs the ray extra; see docs/scaling.md)", "choices": ["threads", "ray"]})
    num_actors: int = field(default=4, metadata={"help": "actors drawing prompts and scoring rewards (threads, or Ray actors)", "min": 1})
    queue_groups: int = field(default=16, metadata={"help": "bound of the actor->learner queue", "min": 1})
    torch_threads: int = field(default=0, metadata={
        "help": "torch intra-op threads of the run (the generation server and the learner compute at the same time, "
                "each with this many; 1 each is fastest for tiny models on 2 cores: OpenMP threads spin); "
                "0 = leave torch's setting", "min": 0})
    max_restarts: int = field(default=20, metadata={"help": "backend ray: times Ray restarts an actor's process that died (its prompt is played again on the new one)", "min": 0})
    ray: LMRayConfig = field(default_factory=LMRayConfig)


@dataclass
class LMVLLMConfig:
    """The vLLM engine of ``generation.backend: vllm`` (:func:`~seedrl.models.lm.vllm_server.make_vllm_engine`)."""

    dtype: str = field(default="auto", metadata={
        "help": "engine weights and activations (auto: the checkpoint's; float32 agrees with the fp32 learner to "
                "~1e-5 in log-prob, bfloat16 / float16 to ~1e-2 .. 1e-1)",
        "choices": ["auto", "float32", "bfloat16", "float16"]})
    gpu_memory_utilization: float = field(default=0.5, metadata={
        "help": "share of the GPU's memory vLLM takes for weights and KV cache (the rest: the learner, other models)",
        "min_exclusive": 0.0, "max": 1.0})
    enforce_eager: bool = field(default=True, metadata={"help": "no CUDA graphs (faster start; graphs: faster decode)"})
    max_model_len: int | None = field(default=None, metadata={
        "help": "context of the engine (prompt + completion tokens); default: the model's", "min": 1})


def vllm_missing() -> list[str]:
    """What ``generation.backend: vllm`` lacks on this machine (empty: nothing)."""
    import torch

    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("vLLM, which is not installed (pip install 'seedrl[vllm]' on a CUDA machine)")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)")
    return missing


@dataclass
class LMGenerationConfig:
    """Which engine samples the policy, and the check that its log-probs are the learner's."""

    backend: str = field(default="builtin", metadata={
        "help": "builtin (seedrl's KV-cached continuous-batching sampler, CPU or GPU) or vllm (a vLLM engine on the "
                "GPU samples the policy, weights loaded in place after each update; needs the vllm extra)",
        "choices": ["builtin", "vllm"]})
    check_logprobs: int = field(default=0, metadata={
        "help": "at run start, sample this many prompts from the served policy and recompute the sampled tokens' "
                "log-probs with the learner's model; the run stops when max |Δ| > logprob_tolerance (0 = off)",
        "min": 0})
    logprob_tolerance: float = field(default=0.05, metadata={
        "help": "largest |Δ| allowed by check_logprobs (fp32 engines agree to ~1e-5; bf16 ones need ~0.1-0.2)",
        "min_exclusive": 0.0})
    threads: int | Literal["auto"] | None = field(default=None, metadata={
        "help": "builtin backend: intra-op threads of each decode step; null = the server's torch threads, an int "
                "fixes it, auto = measured against fewer during the first steps, the faster kept "
                "(seedrl.models.lm.threads; log-probs may then move in the last float bits; torch's count is per "
                "process, so with runtime.backend threads the learner's kernels during a decode step share it)",
        "min": 1})
    vllm: LMVLLMConfig = field(default_factory=LMVLLMConfig)

    def validate(self) -> None:
        if self.backend == "vllm":
            missing = vllm_missing()
            if missing:
                raise ConfigError(f"config error: 'generation.backend' = 'vllm' needs {' and '.join(missing)}; "
                                  "on this machine use generation.backend=builtin", "generation.backend")


def _lm_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, grad_clip=1.0, lr_decay="none")


def _lm_log() -> LogConfig:
    return LogConfig(every=5, checkpoint_every=50, keep_checkpoints=2, tensorboard=False)


#: flat keys of older releases -> their sections
LM_RENAMED_KEYS = {
    "lr": "optim.lr", "grad_clip": "optim.grad_clip", "num_actors": "runtime.num_actors",
    "queue_groups": "runtime.queue_groups", "record_rate": "record.rate", "log_every": "log.every",
    "checkpoint_every": "log.checkpoint_every", "keep_checkpoints": "log.keep_checkpoints", "progress": "log.progress",
}


@dataclass
class LMRunConfig(RunConfig):
    """What every language-model algorithm on the runtime shares."""

    algo: str = field(default="pg", metadata={"help": "pg | bond", "choices": ["pg", "bond"]})
    name: str = field(default="lm_run", metadata={"help": "run name"})
    policy: str = field(default="", metadata={"help": "policy model directory (save_pretrained) or hub id"})
    reference: str | None = field(default=None, metadata={"help": "reference model (default: the initial policy)"})
    task: LMTaskConfig = field(default_factory=LMTaskConfig)
    sampling: LMSamplingConfig = field(default_factory=LMSamplingConfig)
    generation: LMGenerationConfig = field(default_factory=LMGenerationConfig)
    steps: int = field(default=200, metadata={"help": "learner updates", "min": 1})
    prompts_per_step: int = field(default=8, metadata={"help": "prompts (each with K completions) per update", "min": 1})
    optim: OptimConfig = field(default_factory=_lm_optim)
    runtime: LMRuntimeConfig = field(default_factory=LMRuntimeConfig)
    log: LogConfig = field(default_factory=_lm_log)
    record: RecordConfig = field(default_factory=RecordConfig)
    eval: LMEvalConfig = field(default_factory=LMEvalConfig)

    renamed_keys: ClassVar[dict[str, str]] = LM_RENAMED_KEYS

    # constant learning rate; metric rows by updates; checkpoints (model, optimizer, prompt order, RNG) by updates
    unused_keys: ClassVar[tuple[str, ...]] = ("optim.lr_decay", "optim.warmup_steps", "optim.min_lr_ratio",
                                              "log.every_s", "log.solved_return")

    def validate(self) -> None:
        self.refuse_unused_keys()
        if self.log.checkpoint_every < 1:
            raise ValueError(f"log.checkpoint_every: {self.log.checkpoint_every} is below the minimum 1 for pg/bond runs")
        check_ray_installed(self.runtime.backend)
        self.runtime.ray.check()
        if self.runtime.backend == "ray" and self.generation.backend == "vllm":
            raise ConfigError("config error: 'generation.backend' = 'vllm' does not run on Ray yet (runtime.backend: "
                              "ray serves the models with the builtin sampler); use one of the two", "generation.backend")
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

    def check_inputs(self) -> None:
        super().check_inputs()
        check_model_folder(self.policy, "policy")
        if self.reference is not None:
            check_model_folder(self.reference, "reference")
        t = self.task
        for key, model in (("task.reward_model", t.reward_model), ("task.nli_model", t.nli_model),
                           ("eval.nli_model", self.eval.nli_model)):
            if model is not None:
                check_model_folder(model, key)
        if t.world is None and t.data_path is not None:
            if not Path(t.data_path).exists():
                raise InputFileError(f"task.data_path: {os.fspath(t.data_path)!r} does not exist")
            from seedrl.envs.text import TextTask

            task = TextTask(os.fspath(t.data_path), t.template, shuffle=False)  # every line checked
            if t.reward is not None:
                reward = load_reward_callable(t.reward, "task.reward")
                check_reward_on(reward, [task.prompt(i) for i in range(min(2, len(task)))], "task.reward")


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
