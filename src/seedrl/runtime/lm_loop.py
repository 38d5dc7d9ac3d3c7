"""Language-model RL on the runtime: prompts are environments, generation is central inference.

Roles, as for games (docs/architecture.md):

* **actors** (threads: a text environment costs nothing to step) draw a prompt
  from the :class:`~seedrl.envs.text.TextTask`, ask the
  :class:`~seedrl.models.lm.server.GenerationServer` for K completions of it,
  score them with the reward function, optionally record them as RLDS steps,
  and put the group on the bounded learner queue (backpressure: a slow
  learner stalls the actors);
* **central inference** is the generation server: every actor's request joins
  one continuously batched sampler; it also scores completions under the
  fixed reference model;
* **the learner** (main thread) takes ``prompts_per_step`` groups, scores them
  under its own copy of the policy (with gradient), computes the loss, steps
  the optimizer and pushes the weights into the server in place (no disk).

The loss is pluggable (``loss_fn(policy_scores, ref_scores, rewards) ->
(loss, logs)``); :func:`train_lm_pg` wires the REINFORCE-LOO loss of
:mod:`seedrl.agents.pg`.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from seedrl.agents.pg import PGConfig, rloo_loss
from seedrl.agents.sft import STATE_FILE, list_sft_checkpoints
from seedrl.config import save_config
from seedrl.report.metrics import MetricsLogger, plot_curves


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


@dataclass
class LMSamplingConfig:
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature", "min": 0.0})
    top_k: int = field(default=0, metadata={"help": "0 = off", "min": 0})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass", "min_exclusive": 0.0, "max": 1.0})
    max_new_tokens: int = field(default=16, metadata={"help": "completion length cap", "min": 1})
    max_batch: int = field(default=64, metadata={"help": "sequences the sampler decodes at once", "min": 1})


@dataclass
class LMPGConfig:
    """KL-regularised REINFORCE-LOO on a language task (``configs/*_pg.yaml``)."""

    algo: str = field(default="pg", metadata={"help": "pg", "choices": ["pg"]})
    name: str = field(default="lm_pg", metadata={"help": "run name"})
    out_dir: Path = field(default=Path("runs"), metadata={"help": "parent of run directories"})
    seed: int = field(default=0, metadata={"help": "seed of sampling and initialisation"})
    policy: str = field(default="", metadata={"help": "policy model directory (save_pretrained) or hub id"})
    reference: str | None = field(default=None, metadata={"help": "reference model (default: the initial policy)"})
    task: LMTaskConfig = field(default_factory=LMTaskConfig)
    sampling: LMSamplingConfig = field(default_factory=LMSamplingConfig)
    pg: PGConfig = field(default_factory=PGConfig)
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


@dataclass
class Group:
    """K completions of one prompt, with their rewards."""

    prompt_tokens: list[int]
    completions: list[Any]
    rewards: np.ndarray


def _task_and_reward(cfg: LMPGConfig, tokenizer):
    from seedrl.envs.text import TextTask
    from seedrl.lm.toy_setup import make_world

    t = cfg.task
    if t.world is not None:
        world = make_world(t.world, t.world_options)
        examples = world.examples(t.num_examples, seed=t.seed)
        return TextTask(examples, t.template, tokenizer=tokenizer, seed=t.seed), world.reward_fn(t.world_reward)
    if t.reward is None:
        raise ValueError("task.reward: a data_path task needs a reward 'module:function'")
    import importlib

    from seedrl.rewards import CallableReward

    module, _, fn = t.reward.partition(":")
    reward = CallableReward(getattr(importlib.import_module(module), fn), batched=True)
    return TextTask(str(t.data_path), t.template, tokenizer=tokenizer, seed=t.seed), reward


class CompletionRecorder:
    """Records sampled completions as single-step RLDS episodes (shared by the actor threads).

    Each step holds the prompt (text, tokens), the completion (text, tokens),
    the reward and, as step metadata, the behaviour log-probabilities and the
    weights version that produced it."""

    def __init__(self, path: Path, rate: float, seed: int):
        from seedrl.data import DatasetWriter

        self.writer = DatasetWriter(path)
        self.rate = rate
        self.rng = np.random.default_rng([seed, 0x7EC])
        self.lock = threading.Lock()

    def record(self, prompt, completions, rewards) -> None:
        from seedrl.envs.text.steps import completion_spec, completion_step

        for c, r in zip(completions, rewards):
            with self.lock:
                if self.rng.random() >= self.rate:
                    continue
            step = completion_step(
                prompt.text, np.asarray(prompt.tokens, np.int32), c.text, np.asarray(c.tokens, np.int32), float(r),
                {"behaviour_logprobs": np.asarray(c.logprobs, np.float32), "weights_version": np.int64(c.weights_version)},
            )
            if self.writer.spec is None:
                with self.lock:
                    if self.writer.spec is None:
                        self.writer.spec = completion_spec(step)
            self.writer.write_episode([step], metadata={"prompt_index": int(prompt.index)})

    def close(self) -> None:
        self.writer.close()


def run_actor(task, task_lock, server, reward_fn, params, out: "queue.Queue[Group]", stop: threading.Event, errors: list,
              recorder: CompletionRecorder | None = None) -> None:
    """One actor thread: prompt -> K completions (central inference) -> rewards -> learner queue."""
    try:
        while not stop.is_set():
            with task_lock:
                prompt = task.next_prompt()
            future = server.submit("policy", prompt.tokens, params)
            while not future.done():
                if stop.is_set():
                    return
                time.sleep(0.001)
            completions = future.result()
            rewards = reward_fn([prompt.text] * len(completions), [c.text for c in completions], [prompt.example] * len(completions))
            group = Group(prompt.tokens, completions, np.asarray(rewards, dtype=np.float32))
            if recorder is not None:
                recorder.record(prompt, completions, group.rewards)
            while not stop.is_set():
                try:
                    out.put(group, timeout=0.1)
                    break
                except queue.Full:
                    continue
    except BaseException as err:  # surfaced by the learner
        errors.append(err)
        stop.set()


def _save_checkpoint(run_dir: Path, policy, optimizer, task, step: int, samples: int, keep: int) -> Path:
    """``checkpoint-<step>/``: model + tokenizer (save_pretrained) and ``trainer_state.pt``."""
    import shutil

    path = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.model.save_pretrained(tmp)
    policy.tokenizer.save_pretrained(tmp)
    torch.save({"step": step, "samples": samples, "optimizer": optimizer.state_dict(), "task": task.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / STATE_FILE)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    for old in list_sft_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def train_lm_pg(
    cfg: LMPGConfig, *, resume: bool = False, reward_fn: Callable | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Train with REINFORCE-LOO + KL on the runtime; returns the final metrics row.

    ``resume`` continues from the newest ``<run>/checkpoint-<step>``: weights,
    optimizer moments, step and sample counters, the prompt order (it continues
    after the last prompt drawn; groups still in flight at the checkpoint are
    not replayed) and the torch RNG. ``reward_fn`` (a
    :class:`~seedrl.rewards.RewardFn` or plain batched callable) replaces the
    task's reward."""
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.sampler import SamplingParams
    from seedrl.models.lm.server import GenerationServer

    run_dir = Path(cfg.out_dir) / cfg.name
    found = list_sft_checkpoints(run_dir)
    if found and not resume:
        raise FileExistsError(f"{run_dir} already has checkpoints; pass --resume to continue it, or choose another name=")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.seed)
    start_from = str(found[-1]) if found and resume else cfg.policy
    learner_policy = LMPolicy.from_pretrained(start_from)
    served = LMPolicy.from_pretrained(start_from).eval()
    reference = LMPolicy.from_pretrained(cfg.reference or cfg.policy).eval()
    task, task_reward = _task_and_reward(cfg, learner_policy.tokenizer)
    if reward_fn is None:
        reward_fn = task_reward
    else:
        from seedrl.rewards import as_reward_fn

        reward_fn = as_reward_fn(reward_fn)
    k = cfg.pg.samples_per_prompt
    s = cfg.sampling
    params = SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, max_new_tokens=s.max_new_tokens, n=k)
    optimizer = torch.optim.Adam(learner_policy.parameters(), lr=cfg.lr)
    first_step, samples = 1, 0
    if found and resume:
        state = torch.load(found[-1] / STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        task.load_state_dict(state["task"])
        torch.set_rng_state(state["torch_rng"])
        first_step, samples = state["step"] + 1, state["samples"]
    groups: queue.Queue = queue.Queue(maxsize=cfg.queue_groups)
    stop, errors, task_lock = threading.Event(), [], threading.Lock()
    metrics = MetricsLogger(run_dir, tensorboard=False)
    recorder = CompletionRecorder(run_dir / "episodes", cfg.record_rate, cfg.seed) if cfg.record_rate > 0 else None
    server = GenerationServer({"policy": served, "reference": reference}, max_batch=s.max_batch).start()
    actors = [
        threading.Thread(target=run_actor, args=(task, task_lock, server, reward_fn, params, groups, stop, errors, recorder),
                         daemon=True)
        for _ in range(cfg.num_actors)
    ]
    for a in actors:
        a.start()
    row: dict[str, Any] = {}
    start, samples_at_start = time.perf_counter(), samples
    try:
        for step in tqdm(range(first_step, cfg.steps + 1), desc=cfg.name, disable=not cfg.progress, unit="update",
                         initial=first_step - 1, total=cfg.steps):
            batch: list[Group] = []
            while len(batch) < cfg.prompts_per_step:
                if errors:
                    raise errors[0]
                try:
                    batch.append(groups.get(timeout=0.1))
                except queue.Empty:
                    continue
            prompts = [g.prompt_tokens for g in batch for _ in range(k)]
            completions = [c.tokens for g in batch for c in g.completions]
            rewards = torch.from_numpy(np.concatenate([g.rewards for g in batch]))
            ref = server.score("reference", prompts, completions).result()
            learner_policy.train()
            scores = learner_policy.score(prompts, completions)
            loss, logs = rloo_loss(scores.sequence_logprobs, scores.token_logprobs, ref.token_logprobs.to(scores.token_logprobs.device),
                                   scores.mask, rewards, cfg.pg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(list(learner_policy.parameters()), cfg.grad_clip)
            optimizer.step()
            version = server.update_weights("policy", learner_policy)
            samples += len(completions)
            lag = version - 1 - min(c.weights_version_start for g in batch for c in g.completions)
            row = {"updates": step, "frames": samples, **logs, "grad_norm": float(grad_norm), "policy_lag": lag,
                   "samples_per_s": (samples - samples_at_start) / (time.perf_counter() - start),
                   "entropy": ((scores.entropies.detach() * scores.mask).sum() / scores.mask.sum()).item()}
            if on_step is not None:
                on_step(row)
            if step % cfg.log_every == 0 or step == cfg.steps:
                metrics.log(row)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                with task_lock:  # actors have drawn prompts ahead: resume continues after the last one drawn
                    _save_checkpoint(run_dir, learner_policy, optimizer, task, step, samples, cfg.keep_checkpoints)
    finally:
        stop.set()
        for a in actors:
            a.join(5)
        server.stop()
        metrics.close()
        if recorder is not None:
            recorder.close()
    final = run_dir / "final"
    learner_policy.model.save_pretrained(final)
    learner_policy.tokenizer.save_pretrained(final)
    try:
        plot_curves(metrics.path, run_dir / "curves.png", keys=("reward", "kl", "loss", "length", "samples_per_s"), title=cfg.name)
    except Exception:  # a plot never loses a run
        pass
    return {**row, "run_dir": str(run_dir), "final": str(final)}
