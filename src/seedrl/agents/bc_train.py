"""``seedrl run`` for ``algo: bc``: behaviour cloning from a dataset in the store, offline.

The run reads ``agent.dataset`` (filtered by ``agent.where`` and annotation
labels first), builds the model for ``env``'s spaces (the environment the
policy will act in; the dataset's observations and actions must fit them), and
trains for ``agent.updates`` batches of windows with a progress bar, metric
rows (``metrics.jsonl``, TensorBoard), checkpoints every
``log.checkpoint_every`` updates and at the end, and live-environment
evaluations (``eval_return``). The run folder follows the rules of every
trainer (:class:`~seedrl.runtime.run_dir.RunDir`): ``--resume`` continues the
model, optimizer, RNGs and the data order (the loader's ``state_dict``) from
the newest whole checkpoint; Ctrl-C / SIGTERM save a checkpoint and stop.
Checkpoints are game checkpoints, so ``seedrl eval <run>`` plays them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from seedrl.agents.bc import BCConfig, BCStep, build_bc_model
from seedrl.config import ConfigError, config_to_dict
from seedrl.config.sections import LogConfig, OptimConfig, RunConfig
from seedrl.envs.config import EnvConfig
from seedrl.errors import InputFileError
from seedrl.models.config import ModelConfig

__all__ = ["BCResult", "BCTrainConfig", "load_bc_data", "train_bc"]


def _optim() -> OptimConfig:
    return OptimConfig(lr=1e-3, lr_decay="none")


def _log() -> LogConfig:
    return LogConfig(every=50, checkpoint_every=500)


@dataclass
class BCTrainConfig(RunConfig):
    """A behaviour-cloning job (``configs/cartpole_bc.yaml``): ``agent`` is :class:`~seedrl.agents.bc.BCConfig`."""

    algo: str = field(default="bc", metadata={"help": "bc (behaviour cloning from an RLDS dataset)", "choices": ["bc"]})
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: BCConfig = field(default_factory=BCConfig)
    optim: OptimConfig = field(default_factory=_optim)
    log: LogConfig = field(default_factory=_log)

    unused_keys: ClassVar[tuple[str, ...]] = ("log.every_s", "log.solved_return", "optim.warmup_steps",
                                              "optim.min_lr_ratio")

    def validate(self) -> None:
        self.refuse_unused_keys()
        self.agent.validate()

    def check_inputs(self) -> None:
        super().check_inputs()
        if self.agent.dataset is None:
            raise ConfigError("config error: 'agent.dataset' is required (an RLDS dataset directory)", "agent.dataset")
        if not Path(self.agent.dataset).is_dir():
            raise InputFileError(f"agent.dataset: {str(self.agent.dataset)!r} does not exist")


@dataclass
class BCResult:
    run_dir: Path
    updates: int
    episodes: int  # in the (filtered) dataset
    steps: int
    loss: float | None
    eval_return: float | None
    seconds: float
    interrupted: bool
    checkpoint: Path | None
    stop_signal: str | None = None


def load_bc_data(cfg: BCConfig):
    """The dataset view to clone: ``agent.dataset`` filtered by ``where``, ``labels`` and ``without_labels``."""
    from seedrl.data import DataError, open_dataset
    from seedrl.data.annotations import label_filter
    from seedrl.data.subset import where_filter

    ds = label_filter(where_filter(open_dataset(cfg.dataset), cfg.where), cfg.labels, cfg.without_labels)
    if len(ds) == 0:
        raise DataError(f"agent.dataset {str(cfg.dataset)!r}: no episode left after where={cfg.where}, "
                        f"labels={cfg.labels}, without_labels={cfg.without_labels}")
    return ds


def check_fits(ds, obs_space, act_space, env_id: str = "?") -> bool:
    """Whether the actions are discrete; raises a :class:`ConfigError` naming the field when the dataset's
    observations or actions do not fit the environment's spaces."""
    from gymnasium import spaces

    fields = {f.path: f for f in ds.spec.fields}
    for name in ("observation", "action"):
        if name not in fields:
            raise ConfigError(f"agent.dataset: step field {name!r} must be one array per step (got "
                              f"{sorted(p for p in fields if p.startswith(name))})", "agent.dataset")
    obs, act = fields["observation"], fields["action"]
    if tuple(obs.shape) != tuple(obs_space.shape):
        raise ConfigError(f"agent.dataset: observation shape {tuple(obs.shape)} does not fit env.id="
                          f"{env_id!r}'s observation space {obs_space} (frame stacks: record the "
                          "stacked observations the environment gives)", "agent.dataset")
    discrete = isinstance(act_space, spaces.Discrete)
    if discrete != np.issubdtype(np.dtype(act.dtype), np.integer) or (not discrete and tuple(act.shape) !=
                                                                       tuple(act_space.shape)):
        raise ConfigError(f"agent.dataset: action {act.dtype}{tuple(act.shape)} does not fit the environment's "
                          f"action space {act_space} (env.id={env_id!r})", "agent.dataset")
    return discrete


def train_bc(cfg: BCTrainConfig, *, resume: bool = False) -> BCResult:
    """Train ``cfg`` (see the module docstring)."""
    from seedrl.runtime.checkpoint import list_checkpoints, read_game_checkpoint
    from seedrl.runtime.run_dir import RunDir
    from seedrl.runtime.signals import StopSignals

    cfg.check_inputs()
    with RunDir(cfg.run_dir, resume=resume, checkpoints=list_checkpoints) as run, StopSignals() as signals:
        ckpt_path, state = run.resume_state(read_game_checkpoint)
        if state is not None:
            run.check_length(state["counters"]["updates"], cfg.agent.updates, "agent.updates")
        return _train(cfg, run, signals, ckpt_path, state)


def _train(cfg: BCTrainConfig, run, signals, ckpt_path, state) -> BCResult:
    from seedrl.data.torch import ShardedStream, StoreLoader, WindowDataset
    from seedrl.report.metrics import MetricsLogger, plot_curves
    from seedrl.runtime.checkpoint import rng_state, save_checkpoint, set_rng_state
    from seedrl.runtime.errors import NonFiniteLoss
    from seedrl.runtime.learner import make_optimizer
    from seedrl.runtime.loop import probe_spaces
    from seedrl.runtime.run_dir import load_model_state, load_optimizer_state, optimizer_name

    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    ds = load_bc_data(cfg.agent)
    obs_space, act_space = probe_spaces(cfg)
    discrete = check_fits(ds, obs_space, act_space, cfg.env.id)
    model = build_bc_model(cfg.model, obs_space, act_space)
    step = BCStep(model, cfg.agent, discrete)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    a = cfg.agent
    windows = WindowDataset(ds, a.window, ["observation", "action", "reward", "is_first", "is_last"],
                            shift=a.window - a.burn_in)
    loader = StoreLoader(ShardedStream(windows, a.batch_size, seed=cfg.seed, drop_last=False))
    counters = {"updates": 0, "resumes": 0}
    if state is not None:
        load_model_state(model, state["model"], ckpt_path)
        load_optimizer_state(optimizer, state["optimizer"], ckpt_path, state.get("optimizer_class"))
        loader.load_state_dict(state["data"])
        counters.update(state["counters"])
        counters["resumes"] += 1
        set_rng_state(state["rng"])
    run.begin(cfg, counters["updates"] if state is not None else None)

    def checkpoint() -> Path:
        return save_checkpoint(cfg.run_dir, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "optimizer_class": optimizer_name(optimizer), "counters": dict(counters), "rng": rng_state(),
            "config": config_to_dict(cfg), "spaces": {"observation": obs_space, "action": act_space},
            "data": loader.state_dict(),
        }, keep=cfg.log.keep_checkpoints)

    metrics = MetricsLogger(cfg.run_dir, tensorboard=cfg.log.tensorboard)
    progress = tqdm(total=a.updates, initial=counters["updates"], unit="update", disable=not cfg.log.progress,
                    desc=cfg.name, dynamic_ncols=True)
    start, logs, eval_return, ckpt, interrupted = time.perf_counter(), {}, None, None, False
    sums: dict[str, float] = {}
    since = 0
    try:
        signals.in_loop = True
        while counters["updates"] < a.updates and not interrupted:
            for batch in loader:
                model.train()
                loss, logs = step.loss(batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss("BC loss", loss.item(), counters["updates"] + 1)
                if cfg.optim.lr_decay == "linear":  # to 0 at agent.updates
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.optim.lr * (1.0 - counters["updates"] / a.updates)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.clip_norm:
                    logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_norm))
                optimizer.step()
                counters["updates"] += 1
                progress.update(1)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                since += 1
                n, row = counters["updates"], None
                if n % cfg.log.every == 0 or n == a.updates:  # means over the updates since the last row
                    row, sums, since = {k: v / since for k, v in sums.items()}, {}, 0
                if a.eval_every and n % a.eval_every == 0 and n < a.updates:
                    eval_return = _live_return(cfg, model, act_space)
                    row = {**(row or {}), "eval_return": eval_return}
                if row is not None:
                    metrics.log({"frames": n, "updates": n, "epoch": loader.stream.epoch, **row})
                    progress.set_postfix(loss=f"{logs['loss']:.4f}", **({} if eval_return is None else
                                                                        {"return": f"{eval_return:.1f}"}))
                if cfg.log.checkpoint_every and n % cfg.log.checkpoint_every == 0 and n < a.updates:
                    ckpt = checkpoint()
                if signals.is_set():
                    interrupted = True
                    progress.write(f"{signals.received}: saving a checkpoint")
                    break
                if n >= a.updates:
                    break
        if not interrupted and a.eval_episodes:
            eval_return = _live_return(cfg, model, act_space)
            metrics.log({"frames": counters["updates"], "updates": counters["updates"], "eval_return": eval_return})
        ckpt = checkpoint()
    finally:
        signals.in_loop = False
        progress.close()
        metrics.close()
    plot_curves(cfg.run_dir / "metrics.jsonl", cfg.run_dir / "curves.png",
                keys=("loss", "accuracy", "mse", "eval_return"), title=f"{cfg.name}: behaviour cloning")
    return BCResult(cfg.run_dir, counters["updates"], len(ds), ds.num_steps, logs.get("loss"), eval_return,
                    time.perf_counter() - start, interrupted, ckpt, signals.received if interrupted else None)


def _live_return(cfg: BCTrainConfig, model: torch.nn.Module, act_space: Any) -> float:
    """Mean return of ``agent.eval_episodes`` greedy episodes on the live environment."""
    from seedrl.runtime.evaluate import play

    model.eval()
    returns = play(model, cfg, bc_eval_head(act_space, greedy=True), episodes=cfg.agent.eval_episodes,
                   seed=cfg.seed + 10_000)
    return float(np.mean(returns))


def bc_eval_head(act_space: Any, greedy: bool):
    """How a BC policy acts: argmax / softmax sample of its logits, or μ / a Gaussian sample."""
    from gymnasium import spaces

    from seedrl.agents.bc import GaussianHead
    from seedrl.runtime.algorithms import GreedyHead
    from seedrl.runtime.policies import SamplingHead

    if isinstance(act_space, spaces.Discrete):
        return GreedyHead() if greedy else SamplingHead()
    return GaussianHead(greedy)
