"""Supervised fine-tuning (SFT) of a language model on (prompt, completion) pairs.

Teacher forcing. For a prompt ``x`` and a target completion ``y = (y_1..y_L, EOS)``
(the completion's tokens, EOS always appended) the loss of a batch is the mean
negative log-likelihood per completion token

    loss = - sum_b sum_{n <= L_b + 1} log p_theta(y_{b,n} | x_b, y_{b,<n}) / sum_b (L_b + 1)

Prompt tokens and padding are masked (the mask comes from the lengths, never from
``token == pad``), and EOS is an ordinary label: with ``pad_token="eos"`` the pad id
equals the EOS id, and masking "pad" tokens by id would drop EOS from the loss, so
the model would never learn to stop. :func:`sft_loss` is that loss,
:func:`completion_targets` the target ids.

Optimisation (``optim``): AdamW by default, global gradient-norm clipping, learning rate
``lr * min((s + 1) / warmup_steps, 1)`` during warm-up then linearly decayed to
``lr * min_lr_ratio`` at the last step (``lr_decay: none``: constant after warm-up).

Data (:class:`SFTDataConfig`): a toy world (``examples(n, seed)``; the completion is
the world's ``reference``) or a JSONL / Parquet file with prompt and completion
fields, read through a :class:`~seedrl.envs.text.TextTask` (seeded, resumable order;
one epoch = every example once). Held-out examples: a second draw of the world
(seed ``data.seed + 1``; with ``disjoint_eval`` those whose prompt occurs in the
training set are dropped) or ``data.eval_path`` or the last ``eval_examples`` rows
of the file.

Evaluation (every ``eval_every`` steps, at the start and at the end): the mean token
NLL on the held-out examples, and, when a world is named, the mean world reward of
greedy completions (``LMPolicy.generate``, temperature 0) of the first
``eval_prompts`` held-out prompts, plus the fraction that ended with EOS.

Run directory ``<out_dir>/<name>``: ``config.yaml``, ``metrics.jsonl`` (one row per
``log.every`` steps and per evaluation; ``frames`` = examples seen, ``updates`` =
steps), ``curves.png``, ``checkpoint-<step>/`` (``save_pretrained`` model + tokenizer,
``trainer_state.pt``: optimizer, schedule, task order, RNG states, and the checksum
``MANIFEST.json``), and ``final/`` (model + tokenizer), which ends the run.
``train_sft(cfg, resume=True)`` continues from the newest whole checkpoint exactly:
the same next batch, the same optimizer moments, the same dropout noise, so the
next loss equals the uninterrupted run's. The folder's lock, start/resume rules,
signals and checkpoint verification are those of every trainer
(:mod:`seedrl.runtime.run_dir`, docs/training.md "Stopping, resuming and failures").
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from seedrl.config import config_to_dict
from seedrl.config.sections import LogConfig, OptimConfig, RunConfig
from seedrl.errors import InputFileError, UserError, check_model_folder
from seedrl.runtime.checkpoint import (
    STATE_FILE,
    list_folder_checkpoints,
    read_policy_state,
    save_final,
    save_policy_checkpoint,
)
from seedrl.runtime.errors import check_finite
from seedrl.runtime.run_dir import RunDir, load_optimizer_state, optimizer_name
from seedrl.runtime.signals import StopSignals

log = logging.getLogger(__name__)
__all__ = ["STATE_FILE", "SFTConfig", "SFTDataConfig", "SFTResult", "completion_targets", "evaluate_sft",
           "linear_schedule", "list_sft_checkpoints", "sft_loss", "train_sft"]


@dataclass
class SFTDataConfig:
    """Where the (prompt, completion) pairs come from."""

    world: str | None = field(default=None, metadata={"help": "toy world: arithmetic (alias arith) or facts; also the reward of the eval"})
    world_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword arguments of the world, e.g. {ops: [copy], max_len: 4}"})
    num_examples: int = field(default=2000, metadata={"help": "training examples drawn from the world", "min": 1})
    eval_examples: int = field(default=200, metadata={"help": "held-out examples (world draw, or last rows of path)", "min": 0})
    seed: int = field(default=0, metadata={"help": "seed of the world's examples (held-out: seed + 1)"})
    disjoint_eval: bool = field(default=True, metadata={"help": "drop held-out world examples whose prompt is in the training set"})
    path: str | None = field(default=None, metadata={"help": "JSONL / Parquet file of examples instead of a world"})
    eval_path: str | None = field(default=None, metadata={"help": "held-out JSONL / Parquet file (default: last eval_examples rows of path)"})
    template: str = field(default="{prompt}", metadata={"help": "prompt template over the example's fields"})
    completion_field: str | None = field(default=None, metadata={"help": "field holding the target (default: reference for worlds, completion for files)"})
    reward: str | None = field(default=None, metadata={"help": "world reward metric (arithmetic: exact|partial; facts: faithfulness|coverage|f1)"})

    def validate(self) -> None:
        if self.world is None and self.path is None:
            raise ValueError("data: set data.world (arithmetic|facts) or data.path (a JSONL/Parquet file)")


@dataclass
class SFTRuntimeConfig:
    """Where the model trains."""

    device: str = field(default="cpu", metadata={"help": "torch device"})
    torch_threads: int | None = field(default=None, metadata={"help": "torch intra-op threads", "min": 1})


def _sft_optim() -> OptimConfig:
    return OptimConfig(name="adamw", lr=1e-3, grad_clip=1.0, lr_decay="linear")


def _sft_log() -> LogConfig:
    return LogConfig(every=10, checkpoint_every=0, keep_checkpoints=2, tensorboard=False)


#: flat keys of older releases -> their sections
SFT_RENAMED_KEYS = {
    "lr": "optim.lr", "weight_decay": "optim.weight_decay", "grad_clip": "optim.grad_clip",
    "warmup_steps": "optim.warmup_steps", "min_lr_ratio": "optim.min_lr_ratio", "log_every": "log.every",
    "checkpoint_every": "log.checkpoint_every", "keep_checkpoints": "log.keep_checkpoints",
    "progress": "log.progress", "tensorboard": "log.tensorboard", "device": "runtime.device",
    "torch_threads": "runtime.torch_threads",
}


@dataclass
class SFTConfig(RunConfig):
    """An SFT run (``configs/*_sft.yaml``; ``seedrl run`` or ``seedrl lm sft``).

    ``optim``: AdamW by default; ``log.checkpoint_every`` = 0 saves only when interrupted."""

    algo: str = field(default="sft", metadata={"help": "sft (what `seedrl run` dispatches on; may be left out)", "choices": ["sft"]})
    name: str = field(default="sft", metadata={"help": "run name; the run directory is <out_dir>/<name>"})
    model: str = field(default="", metadata={"help": "model directory (save_pretrained) or hub id"})
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    dtype: str = field(default="float32", metadata={"help": "parameter dtype", "choices": ["float32", "bfloat16", "float16"]})
    pad_token: str | None = field(default=None, metadata={"help": "for tokenizers without pad: 'eos' or a token"})
    batch_size: int = field(default=32, metadata={"help": "examples per step", "min": 1})
    epochs: int = field(default=1, metadata={"help": "passes over the data when steps = 0", "min": 1})
    steps: int = field(default=0, metadata={"help": "optimizer steps (0: epochs * ceil(examples / batch_size))", "min": 0})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "longer prompts: see too_long", "min": 1})
    too_long: str = field(default="error", metadata={"help": "prompts over max_prompt_tokens", "choices": ["error", "skip"]})
    max_completion_tokens: int = field(default=128, metadata={"help": "target tokens incl. EOS (longer ones are cut)", "min": 1})
    eval_every: int = field(default=100, metadata={"help": "steps between evaluations (0: start and end only)", "min": 0})
    eval_prompts: int = field(default=64, metadata={"help": "held-out prompts completed greedily for the reward", "min": 0})
    eval_max_new_tokens: int | None = field(default=None, metadata={"help": "generation length (default max_completion_tokens)", "min": 1})
    eval_at_start: bool = field(default=True, metadata={"help": "evaluate before the first step"})
    optim: OptimConfig = field(default_factory=_sft_optim)
    runtime: SFTRuntimeConfig = field(default_factory=SFTRuntimeConfig)
    log: LogConfig = field(default_factory=_sft_log)

    renamed_keys: ClassVar[dict[str, str]] = SFT_RENAMED_KEYS

    unused_keys: ClassVar[tuple[str, ...]] = ("log.every_s", "log.solved_return")

    def validate(self) -> None:
        self.refuse_unused_keys()
        if not self.model:
            raise ValueError("model: required (a directory written by save_pretrained, or a hub id)")

    def check_inputs(self) -> None:
        super().check_inputs()
        check_model_folder(self.model, "model")
        from seedrl.envs.text import TextTask, load_examples

        field = self.data.completion_field or "completion"
        for key, path in (("data.path", self.data.path), ("data.eval_path", self.data.eval_path)):
            if path is not None:
                if not Path(path).exists():
                    raise InputFileError(f"{key}: {path!r} does not exist")
                TextTask(path, self.data.template, shuffle=False)  # every line: the template's fields, a prompt
                _checked_rows(load_examples(path), field, path)  # and a target


@dataclass
class SFTResult:
    """What :func:`train_sft` did. ``losses[s]`` is the training loss of step ``s`` (1-based)
    run by this call; ``evals`` every evaluation row (``step``, ``eval_loss``, ``eval_reward``...)."""

    run_dir: Path
    final_dir: Path | None
    checkpoint: Path | None
    step: int
    total_steps: int
    interrupted: bool
    seconds: float
    losses: dict[int, float] = field(default_factory=dict)
    evals: list[dict] = field(default_factory=list)
    stop_signal: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run

    @property
    def first_eval(self) -> dict | None:
        return self.evals[0] if self.evals else None

    @property
    def last_eval(self) -> dict | None:
        return self.evals[-1] if self.evals else None


# ----------------------------------------------------------------------------- loss
def completion_targets(tokenizer, text: str, eos_token_id: int, max_tokens: int | None = None) -> list[int]:
    """Target ids of a completion: its tokens (no special tokens added) + EOS, cut to ``max_tokens``."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [int(eos_token_id)]
    return ids[:max_tokens] if max_tokens else ids


def sft_loss(policy, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]):
    """``(mean NLL per completion token, number of tokens)``; masks from lengths only (EOS kept)."""
    logits = policy.completion_logits(prompt_ids, completion_ids)
    B, L, V = logits.shape
    lengths = torch.tensor([len(c) for c in completion_ids], device=logits.device)
    mask = torch.arange(L, device=logits.device)[None, :] < lengths[:, None]
    targets = torch.zeros((B, L), dtype=torch.long)
    for b, c in enumerate(completion_ids):
        targets[b, : len(c)] = torch.as_tensor(list(c), dtype=torch.long)
    nll = F.cross_entropy(logits.float().reshape(B * L, V), targets.to(logits.device).reshape(-1), reduction="none")
    count = int(mask.sum())
    if count == 0:
        raise ValueError("sft_loss: every completion is empty (targets need at least the EOS token)")
    return (nll.reshape(B, L) * mask).sum() / count, count


def linear_schedule(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """lr multiplier of update ``step`` (0-based): linear warm-up, then linear decay to ``min_ratio``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    frac = min(max(step - warmup, 0) / span, 1.0)
    return 1.0 - (1.0 - min_ratio) * frac


# ----------------------------------------------------------------------------- data
@dataclass
class _Data:
    task: Any  # TextTask over the training examples
    eval_items: list[tuple[str, list[int], list[int], dict]]  # (prompt text, prompt ids, target ids, example)
    world: Any
    reward_fn: Any
    completion_field: str


def _target_text(example: dict, fieldname: str, where: str) -> str:
    from seedrl.envs.text.tasks import TaskDataError, TemplateError

    if fieldname not in example:
        raise TemplateError(f"{where}: the example has no completion field {fieldname!r}; its fields are "
                            f"{sorted(example)} (set data.completion_field)")
    value = example[fieldname]
    if not isinstance(value, str):
        raise TaskDataError(f"{where}: completion field {fieldname!r} is {type(value).__name__}, expected str")
    return value


def _checked_rows(examples, fieldname: str, source: str) -> list[dict]:
    """The rows of a data file, every target checked at start (not when its example is first drawn)."""
    lines = getattr(examples, "lines", None)
    rows = list(examples)
    for i, row in enumerate(rows):
        _target_text(row, fieldname, f"{source}: line {lines[i]}" if lines else f"{source}: row {i}")
    return rows


def build_data(cfg: SFTConfig, policy) -> _Data:
    from seedrl.envs.text import TextTask, load_examples
    from seedrl.lm.toy_setup import make_world

    d = cfg.data
    world = make_world(d.world, d.world_options) if d.world else None
    if d.path is not None:
        fieldname = d.completion_field or "completion"
        rows = _checked_rows(load_examples(d.path), fieldname, d.path)
        if d.eval_path is not None:
            held = _checked_rows(load_examples(d.eval_path), fieldname, d.eval_path)
        else:
            k = min(d.eval_examples, len(rows) - 1)
            rows, held = rows[: len(rows) - k], rows[len(rows) - k:]
    else:
        rows = world.examples(d.num_examples, d.seed)
        held = world.examples(d.eval_examples, d.seed + 1) if d.eval_examples else []
        if d.disjoint_eval and held:
            seen = {r["prompt"] for r in rows}
            held = [r for r in held if r["prompt"] not in seen]
            if not held:
                raise UserError(
                    f"data.disjoint_eval: all {d.eval_examples} held-out examples of world {d.world!r} also occur in the "
                    "training set (the task space is small); set data.disjoint_eval=false or enlarge the world")
        fieldname = d.completion_field or "reference"
    if not rows:
        raise UserError(f"data: no training examples (path={d.path!r}, eval_examples={d.eval_examples})")
    tok = policy.tokenizer
    task = TextTask(rows, d.template, tokenizer=tok, seed=cfg.seed, shuffle=True,
                    max_prompt_tokens=cfg.max_prompt_tokens, too_long=cfg.too_long, name=d.world or "sft")
    _target_text(task.example(0), fieldname, "data")
    eval_items = []
    if held:
        etask = TextTask(held, d.template, tokenizer=tok, shuffle=False, name="heldout")
        eos = _eos_id(policy, cfg.model)
        for i in range(len(etask)):
            p = etask.prompt(i)
            target = completion_targets(tok, _target_text(p.example, fieldname, f"held-out example {i}"), eos,
                                        cfg.max_completion_tokens)
            eval_items.append((p.text, p.tokens, target, p.example))
    reward_fn = world.reward_fn(d.reward) if world is not None and d.reward else (
        world.reward_fn() if world is not None else None)
    return _Data(task, eval_items, world, reward_fn, fieldname)


def _eos_id(policy, model: str) -> int:
    eos = policy.tokenizer.eos_token_id
    if eos is None:
        raise UserError(f"tokenizer of {model!r} has no eos_token (eos_token_id=None): SFT appends EOS to every "
                         "target so the model learns to stop")
    return int(eos)


# ----------------------------------------------------------------------------- eval
@torch.no_grad()
def evaluate_sft(policy, items, reward_fn=None, *, batch_size: int = 32, num_prompts: int = 64,
                 max_new_tokens: int = 64) -> dict[str, float]:
    """Held-out token NLL (``eval_loss``) and, with ``reward_fn``, the mean reward of greedy
    completions of the first ``num_prompts`` items (``eval_reward``; ``eval_eos_rate``:
    fraction that stopped with EOS)."""
    from seedrl.models.lm.sampler import SamplingParams

    was_training = policy.model.training
    policy.eval()
    out: dict[str, float] = {}
    try:
        if items:
            total, count = 0.0, 0
            for i in range(0, len(items), batch_size):
                chunk = items[i:i + batch_size]
                loss, n = sft_loss(policy, [c[1] for c in chunk], [c[2] for c in chunk])
                total, count = total + float(loss) * n, count + n
            out["eval_loss"] = total / count
        chosen = items[:num_prompts]
        if reward_fn is not None and chosen:
            params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
            comps = policy.generate([c[1] for c in chosen], params, max_batch=min(64, len(chosen)))
            rewards = reward_fn([c[0] for c in chosen], [c.text for c in comps], [c[3] for c in chosen])
            out["eval_reward"] = float(np.mean(rewards))
            out["eval_eos_rate"] = float(np.mean([c.finish_reason == "eos" for c in comps]))
    finally:
        policy.train(was_training)
    return out


# ----------------------------------------------------------------------------- checkpoints
#: ``checkpoint-<step>`` folders of a run, oldest first (the shared listing; kept under its first name).
list_sft_checkpoints = list_folder_checkpoints


# ----------------------------------------------------------------------------- training
def train_sft(cfg: SFTConfig, *, resume: bool = False, max_steps: int | None = None) -> SFTResult:
    """Run SFT (see the module docstring). ``resume`` continues ``<run>/checkpoint-*``;
    ``max_steps`` stops after that global step with a checkpoint, as an interruption
    would. SIGINT (Ctrl-C) and SIGTERM stop after the step in hand with a checkpoint;
    the run folder's lock and rules are :class:`~seedrl.runtime.run_dir.RunDir`'s."""
    with (RunDir(cfg.run_dir, resume=resume, checkpoints=list_folder_checkpoints, final_ends_run=True) as run,
          StopSignals() as signals):
        return _train_sft(cfg, run, signals, max_steps)


def _train_sft(cfg: SFTConfig, run: RunDir, signals: StopSignals, max_steps: int | None) -> SFTResult:
    from tqdm import tqdm

    from seedrl.models.lm.policy import LMPolicy
    from seedrl.report.metrics import MetricsLogger, plot_curves
    from seedrl.runtime.checkpoint import rng_state, set_rng_state
    from seedrl.runtime.learner import make_optimizer

    t0 = time.perf_counter()
    run_dir = cfg.run_dir
    ckpt, state = run.resume_state(read_policy_state)
    if cfg.runtime.torch_threads:
        torch.set_num_threads(cfg.runtime.torch_threads)
    torch.manual_seed(cfg.seed)

    policy = LMPolicy.from_pretrained(ckpt or cfg.model, dtype=cfg.dtype, device=cfg.runtime.device, pad_token=cfg.pad_token)
    eos = _eos_id(policy, cfg.model)
    data = build_data(cfg, policy)
    task = data.task
    total = cfg.steps or cfg.epochs * math.ceil(len(task) / cfg.batch_size)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg.optim, params)
    final_ratio = cfg.optim.min_lr_ratio if cfg.optim.lr_decay == "linear" else 1.0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: linear_schedule(s, cfg.optim.warmup_steps, total, final_ratio))
    step, seen = 0, 0
    if state is not None:  # every check before anything is written
        run.check_length(int(state["step"]), total, "steps")
        load_optimizer_state(opt, state["optimizer"], ckpt, state.get("optimizer_class"))
        sched.load_state_dict(state["scheduler"])
        task.load_state_dict(state["task"])
        set_rng_state(state["rng"])
        step, seen = int(state["step"]), int(state["examples_seen"])
        log.info("resumed %s at step %d", ckpt, step)
    run.begin(cfg, step if state is not None else None)
    metrics = MetricsLogger(run_dir, tensorboard=cfg.log.tensorboard)
    result = SFTResult(run_dir, None, ckpt, step, total, False, 0.0)
    eval_kw = dict(batch_size=cfg.batch_size, num_prompts=cfg.eval_prompts,
                   max_new_tokens=cfg.eval_max_new_tokens or cfg.max_completion_tokens)
    targets: dict[int, list[int]] = {}

    def evaluate() -> None:
        row = {"step": step, **evaluate_sft(policy, data.eval_items, data.reward_fn, **eval_kw)}
        if len(row) > 1:
            result.evals.append(row)
            metrics.log({"frames": seen, "updates": step, **row})
            postfix.update({k: round(v, 4) for k, v in row.items() if k in ("eval_loss", "eval_reward")})
            bar.set_postfix(postfix, refresh=False)

    def checkpoint() -> Path:
        state = {"step": step, "examples_seen": seen, "optimizer": opt.state_dict(), "optimizer_class": optimizer_name(opt),
                 "scheduler": sched.state_dict(), "task": task.state_dict(), "rng": rng_state(), "config": config_to_dict(cfg)}
        result.checkpoint = save_policy_checkpoint(run_dir, step, policy, state, cfg.log.keep_checkpoints)
        return result.checkpoint

    bar = tqdm(total=total, initial=step, unit="step", disable=not cfg.log.progress, desc=cfg.name)
    window: list[float] = []
    postfix: dict[str, float] = {}
    stop_at = total if max_steps is None else min(total, max_steps)
    policy.train()
    try:
        signals.in_loop = True
        if step == 0 and cfg.eval_at_start:
            evaluate()
        while step < stop_at:
            if signals.is_set():
                bar.write(f"{signals.received}: saving a checkpoint")
                break
            batch = task.next_batch(cfg.batch_size)
            comp = []
            for p in batch:
                if p.index not in targets:
                    text = _target_text(p.example, data.completion_field, f"example {p.index}")
                    targets[p.index] = completion_targets(policy.tokenizer, text, eos, cfg.max_completion_tokens)
                comp.append(targets[p.index])
            loss, ntok = sft_loss(policy, [p.tokens for p in batch], comp)
            check_finite(loss, "SFT loss", step + 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_norm or float("inf"))
            check_finite(gnorm, "SFT gradient norm", step + 1)
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            step, seen = step + 1, seen + len(batch)
            result.losses[step] = loss_value = float(loss.detach())
            window.append(loss_value)
            bar.update(1)
            if step % cfg.log.every == 0 or step == stop_at:
                metrics.log({"frames": seen, "updates": step, "step": step, "loss": float(np.mean(window)), "lr": lr,
                             "grad_norm": float(gnorm), "tokens": ntok, "epoch": task.epoch})
                postfix["loss"] = round(float(np.mean(window)), 4)
                bar.set_postfix(postfix, refresh=False)
                window = []
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                evaluate()
            if cfg.log.checkpoint_every and step % cfg.log.checkpoint_every == 0 and step < total:
                checkpoint()
    except KeyboardInterrupt:
        result.interrupted = True
        bar.write("interrupted: saving a checkpoint")
    finally:
        signals.in_loop = False
        bar.close()
    result.step, result.stop_signal = step, signals.received
    if step < total:
        result.interrupted = True
        if result.checkpoint is None or result.checkpoint.name != f"checkpoint-{step}":
            checkpoint()
    else:
        if not result.evals or result.evals[-1]["step"] != step:
            evaluate()
        result.final_dir = save_final(run_dir, policy)
    metrics.close()
    try:
        plot_curves(metrics.path, run_dir / "curves.png", keys=("loss", "eval_loss", "eval_reward", "lr"),
                    title=f"SFT {cfg.name}")
    except Exception as err:  # a plot must never lose a run
        log.warning("could not plot curves: %s", err)
    result.seconds = time.perf_counter() - t0
    return result
