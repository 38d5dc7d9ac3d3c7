"""A training run on the embedded backend: wiring, progress, metrics, checkpoints.

Threads of the learner process: the main thread runs the learner (so Ctrl-C
lands there), one thread runs central inference; actors are processes. The
main thread also drains episode statistics, logs, checkpoints and, at the
end, plots the learning curves.

Lifecycle (shared with every trainer): the run folder is locked and the
start/resume rules applied by :class:`~seedrl.runtime.run_dir.RunDir`;
SIGINT (Ctrl-C) and SIGTERM (``kill``, a job scheduler, a container stop) are
a request to stop (:class:`~seedrl.runtime.signals.StopSignals`): the learner
finishes the update in hand, the actors are stopped, the shared memory is
released, a checkpoint is saved and the curves are written, so ``--resume``
continues it. A second Ctrl-C while the learner is still training raises
:class:`KeyboardInterrupt` at once (and still saves a checkpoint). A
non-finite loss stops the run before the update is applied and saves
nothing; actors crashing more than ``runtime.max_restarts`` times save a
checkpoint, then end the run with :class:`~seedrl.runtime.errors.ActorsFailed`.

What differs between game algorithms (model, policy head, learner step, unroll
overlap) comes from :mod:`seedrl.runtime.algorithms`; an algorithm whose learner
step ``uses_replay`` gets the replay role between the queue and the learner
(:mod:`seedrl.runtime.replay_role`), and its replay is saved beside each
checkpoint and restored by ``--resume``.
"""

from __future__ import annotations

import collections
import copy
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from seedrl.config import config_to_dict
from seedrl.envs import make_env_batch
from seedrl.report.metrics import MetricsLogger, plot_curves
from seedrl.runtime.actor import ActorSpec
from seedrl.runtime.actor_inference import ActorInference, LocalPolicy
from seedrl.runtime.algorithms import game_algo
from seedrl.runtime.checkpoint import (list_checkpoints, read_game_checkpoint, replay_path, rng_state, save_checkpoint,
                                       set_rng_state)
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.embedded import ActorCrashLoop, EmbeddedBackend
from seedrl.runtime.errors import ActorsFailed, CheckpointError, InferenceFailed, InferenceLost
from seedrl.runtime.inference import InferenceServer
from seedrl.runtime.layout import record_layout, resolve_layout
from seedrl.runtime.learner import Learner, make_optimizer
from seedrl.runtime.replay import SequenceReplay
from seedrl.runtime.replay.from_dataset import seed_from_path
from seedrl.runtime.replay_role import QueueFeed, ReplayRole
from seedrl.runtime.run_dir import RunDir, load_model_state, load_optimizer_state, optimizer_name
from seedrl.runtime.signals import StopSignals
from seedrl.runtime.threaded import ThreadedBackend
from seedrl.runtime.transport import SlotLayout
from seedrl.runtime.weights import SharedWeights, WeightsMailbox

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    frames: int
    updates: int
    episodes: int
    mean_return: float | None
    seconds: float
    interrupted: bool
    solved: bool
    checkpoint: Path | None
    stop_signal: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the run


class _AnyOf:
    """``is_set()`` of several events (what ``Learner.next_batch`` polls)."""

    def __init__(self, *events: Any) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def frames_per_step(cfg: TrainConfig) -> int:
    """Environment frames per agent step (Atari counts skipped frames, as papers do)."""
    return int(cfg.env.frame_skip) if cfg.env.kind == "atari" else 1


def probe_spaces(cfg: TrainConfig):
    envs = make_env_batch(cfg.env, 1, cfg.seed)
    try:
        return envs.observation_space, envs.action_space
    finally:
        envs.close()


def build_layout(cfg: TrainConfig, observation_space, action_space) -> SlotLayout:
    return SlotLayout(
        num_envs=cfg.env.num_envs,
        obs_shape=tuple(observation_space.shape),
        obs_dtype=np.dtype(observation_space.dtype).name,
        action_shape=tuple(action_space.shape or ()),
        action_dtype="int64",
    )


def _restore_replay(ckpt_path: Path) -> SequenceReplay:
    """The replay saved beside checkpoint ``ckpt_path`` (a CheckpointError naming the file if it is unusable)."""
    path = replay_path(ckpt_path)
    try:
        return SequenceReplay.load(path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot resume from {ckpt_path}: its replay {path} is unusable ({err})") from err


def _build_replay(cfg, step, ckpt_path: Path | None, length: int, overlap: int, spaces: tuple, layout: SlotLayout, model):
    """The replay of a step that ``uses_replay`` (None otherwise): restored beside ``ckpt_path`` on resume,
    else empty, or seeded from ``agent.replay_seed`` (a ConfigError naming it, before the run writes anything)."""
    if not getattr(step, "uses_replay", False):
        return None
    if ckpt_path is not None:
        return _restore_replay(ckpt_path)
    replay = SequenceReplay(cfg.agent.replay_capacity, length + 1, overlap, alpha=cfg.agent.replay_alpha,
                            beta=cfg.agent.replay_beta, seed=cfg.seed + 2, compression=cfg.runtime.replay_compression)
    if cfg.agent.replay_seed is not None:
        shapes = tuple(tuple(s.shape[1:]) for s in model.initial_state(1))
        ids = seed_from_path(replay, cfg.agent.replay_seed, *spaces, state_shapes=shapes, action_dtype=layout.action_dtype)
        log.info("seeded the replay with %d sequences from %s", len(ids), cfg.agent.replay_seed)
    return replay


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    max_updates: int | None = None,
    on_update: Callable[[dict[str, Any], Any], None] | None = None,
) -> RunResult:
    """Train ``cfg``; returns when ``total_frames`` (or ``max_updates``) are done,
    the solved return is reached, or on SIGINT (Ctrl-C) or SIGTERM (a checkpoint is
    saved in every case; see the module docstring)."""
    with RunDir(cfg.run_dir, resume=resume, checkpoints=list_checkpoints) as run, StopSignals() as signals:
        return _train(cfg, run, signals, max_updates=max_updates, on_update=on_update)


def _train(
    cfg: TrainConfig,
    run: RunDir,
    signals: StopSignals,
    *,
    max_updates: int | None,
    on_update: Callable[[dict[str, Any], Any], None] | None,
) -> RunResult:
    run_dir = cfg.run_dir
    ckpt_path, state = run.resume_state(read_game_checkpoint)
    if state is not None:
        run.check_length(state["counters"]["frames"], cfg.total_frames, "total_frames", exact=False)
    torch.set_num_threads(cfg.runtime.torch_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)

    algo = game_algo(cfg.algo)
    obs_space, act_space = probe_spaces(cfg)
    cfg, chosen = resolve_layout(cfg, obs_space, act_space)  # 'auto' layout keys -> numbers (~1 s probe)
    layout = build_layout(cfg, obs_space, act_space)
    model = algo.build_model(cfg, obs_space, act_space)
    if len(obs_space.shape) == 3:  # conv torsos: channels-last is 1.3-1.9x faster on CPU, same outputs
        model = model.to(memory_format=torch.channels_last)
    inference_model = copy.deepcopy(model).eval()
    step = algo.learner_step(cfg, model)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    counters = {"frames": 0, "updates": 0, "episodes": 0, "resumes": 0}
    sampler_seed = cfg.seed + 1
    saved_rng = None
    if state is not None:  # compatibility is checked before anything is written
        load_model_state(model, state["model"], ckpt_path)
        load_optimizer_state(optimizer, state["optimizer"], ckpt_path, state.get("optimizer_class"))
        inference_model.load_state_dict(state["model"])
        step.load_state_dict(state.get("learner_step", {}))
        counters.update(state["counters"])
        counters["resumes"] += 1
        saved_rng = state["rng"]
        log.info("resumed %s at %d frames, %d updates", ckpt_path, counters["frames"], counters["updates"])
    buffer_length, overlap = algo.unroll(cfg)
    replay = _build_replay(cfg, step, ckpt_path if state is not None else None, buffer_length, overlap,
                           (obs_space, act_space), layout, model)
    run.begin(cfg, counters["updates"] if state is not None else None)
    if chosen is not None:
        record_layout(chosen, run_dir)

    rt = cfg.runtime
    unroll_queue: queue.Queue = queue.Queue(maxsize=rt.queue_unrolls)
    weights = WeightsMailbox()
    inference = InferenceServer(
        inference_model, layout, rt.num_actors, buffer_length, unroll_queue,
        batch_timeout_s=rt.batch_timeout_ms / 1000, weights=weights, seed=sampler_seed,
        policy=algo.acting_head(cfg, rt.num_actors * cfg.env.num_envs), overlap=overlap,
    )
    if saved_rng is not None:
        set_rng_state(saved_rng, inference.generator)
    inference.version = counters["updates"]
    fps_mult = frames_per_step(cfg)
    total = cfg.total_frames

    def lr_at(frames: int) -> float:
        if cfg.optim.lr_decay == "linear":
            return cfg.optim.lr * max(0.0, 1.0 - frames / total)
        return cfg.optim.lr

    # the learner publishes where the policy acts: the central inference thread's mailbox, or the actors' block
    acting_weights = SharedWeights(model, version=counters["updates"]) if rt.inference == "actors" else None
    learner = Learner(
        model, acting_weights or weights, optimizer, step, unroll_queue,
        rt.batch_size, grad_clip=cfg.optim.clip_norm, lr_schedule=lr_at,
    )
    learner.updates = counters["updates"]
    eval_envs = getattr(cfg.agent, "eval_envs", 0)  # the last eval_envs slots evaluate (R2D2's agent.eval_envs)
    first_eval_slot = rt.num_actors * cfg.env.num_envs - eval_envs
    if replay is not None:
        feed = ReplayRole(replay, step, unroll_queue, rt.batch_size, cfg.agent.min_replay, cfg.agent.replay_ratio,
                          rt.unroll_length, envs_per_actor=cfg.env.num_envs,
                          first_eval_slot=first_eval_slot if eval_envs else None)
    else:
        feed = QueueFeed(learner, rt.unroll_length, rt.batch_size)
    record_path = str(cfg.record.path or run_dir / "episodes") if cfg.record.rate > 0 else None

    def actor_spec(actor_id: int, restarts: int) -> ActorSpec:
        # int32 range (envpool's limit), distinct per actor, restart and resume
        seed = int(np.random.SeedSequence([cfg.seed, actor_id, restarts, counters["resumes"]]).generate_state(1)[0]) % 2**30
        return ActorSpec(actor_id, cfg.env, cfg.env.num_envs, seed, record_path, cfg.record.rate)

    serving = inference  # what serves the groups: inference's thread, or the Ray inference servers
    if rt.backend == "threads":
        backend = ThreadedBackend(layout, rt.num_actors, actor_spec)
    elif rt.backend == "ray" and rt.ray.inference_servers > 1:  # imports Ray: only here
        from seedrl.runtime.ray_shards import ShardedInference

        backend = serving = ShardedInference(
            layout, rt.num_actors, actor_spec, rt.ray, model=inference_model, unrolls=unroll_queue,
            policy_for=lambda envs: algo.acting_head(cfg, envs), version=counters["updates"],
            unroll_length=buffer_length, overlap=overlap, queue_unrolls=rt.queue_unrolls,
            batch_timeout_s=rt.batch_timeout_ms / 1000, seed=sampler_seed, max_restarts=rt.max_restarts)
        learner.on_publish = lambda version: backend.publish(version, model)  # the learner's weights, in its thread
    elif rt.inference == "actors":
        policy = LocalPolicy(cfg.algo, cfg, obs_space, act_space, acting_weights, inference.policy, buffer_length, overlap)
        backend = serving = ActorInference(layout, rt.num_actors, actor_spec, policy=policy, unrolls=unroll_queue,
                                           max_restarts=rt.max_restarts)
    elif rt.backend == "ray":
        from seedrl.runtime.ray_backend import RayBackend

        backend = RayBackend(layout, rt.num_actors, actor_spec, rt.ray, on_restart=inference.reset_actor, max_restarts=rt.max_restarts)
    else:
        backend = EmbeddedBackend(layout, rt.num_actors, actor_spec, on_restart=inference.reset_actor, max_restarts=rt.max_restarts)
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            if serving is inference:
                inference.serve(backend, stop)
            else:
                serving.serve(stop)
        except BaseException as err:  # surfaced in the main thread
            errors.append(err)
            stop.set()

    metrics = MetricsLogger(run_dir, tensorboard=cfg.log.tensorboard)
    returns: collections.deque = collections.deque(maxlen=100)  # the solved check's: evaluation slots' when there are any
    train_returns: collections.deque = collections.deque(maxlen=100)
    interrupted = solved = False
    start = time.perf_counter()
    last_log = start
    window_start: float | None = None
    window_frames = counters["frames"]
    progress = tqdm(total=total, initial=counters["frames"], unit="frame", unit_scale=True, disable=not cfg.log.progress,
                    desc=cfg.name, dynamic_ncols=True)

    def close_outputs(last_row: dict[str, Any] | None) -> None:
        """Release what the run opened beside the backend (the actors' weights block, the progress bar, the
        metrics files), logging ``last_row`` first."""
        if acting_weights is not None:
            acting_weights.close()
        progress.close()
        if last_row:
            metrics.log(last_row)
        metrics.close()

    try:
        backend.start()
    except BaseException:  # the backend has stopped what it started
        close_outputs(None)
        raise
    thread = threading.Thread(target=serve, name="seedrl-inference", daemon=True)
    thread.start()
    logs: dict[str, Any] = {}
    row: dict[str, Any] = {}
    ckpt = None

    def checkpoint() -> Path:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "optimizer_class": optimizer_name(optimizer),
            "counters": dict(counters),
            "rng": rng_state(inference.generator),
            "config": config_to_dict(cfg),
            "spaces": {"observation": obs_space, "action": act_space},
            "learner_step": step.state_dict(),
        }
        sidecar = None if replay is None else (lambda path: replay.save(replay_path(path)))
        return save_checkpoint(run_dir, payload, keep=cfg.log.keep_checkpoints, sidecar=sidecar)

    halt = _AnyOf(stop, signals)
    try:
        signals.in_loop = True
        while counters["frames"] < total and (max_updates is None or counters["updates"] < max_updates):
            draw = None if signals.is_set() else feed.next(halt)
            if signals.is_set():
                interrupted = True
                progress.write(f"{signals.received}: stopping actors and saving a checkpoint")
                break
            if draw is None:
                break
            updated = draw.batch is not None
            if updated:
                logs = learner.update(draw.batch, counters["frames"], draw.weights)
                feed.after_update(draw, learner.priorities)
                counters["updates"] = learner.updates
            new_frames = draw.steps * fps_mult
            counters["frames"] += new_frames
            progress.update(new_frames)
            while backend.episodes:
                actor, env_index, ret, _ = backend.episodes.popleft()
                is_eval = actor * cfg.env.num_envs + env_index >= first_eval_slot
                (returns if is_eval or not eval_envs else train_returns).append(ret)
                counters["episodes"] += 1
            mean_return = float(np.mean(returns)) if returns else None
            now = time.perf_counter()
            if window_start is None:  # measure speed from the first update, not from process start-up
                window_start, window_frames = now, counters["frames"]
            fps = (counters["frames"] - window_frames) / max(1e-9, now - window_start)
            row = {**counters, **logs, "fps": fps, "episode_return": mean_return,
                   "inference_batch": serving.mean_batch_size, "actor_restarts": backend.total_restarts,
                   **feed.metrics(), **inference.policy.metrics()}
            if eval_envs:
                row["train_return"] = float(np.mean(train_returns)) if train_returns else None
            if on_update is not None:
                on_update(row, backend)
            if now - last_log >= cfg.log.every_s:
                last_log = now
                metrics.log(row)
                window_start, window_frames = now, counters["frames"]
                progress.set_postfix(fps=f"{fps:,.0f}", ret=f"{mean_return:.1f}" if mean_return is not None else "-",
                                     lag=f"{logs['policy_lag']:.1f}" if "policy_lag" in logs else "-", refresh=False)
            if updated and counters["updates"] % cfg.log.checkpoint_every == 0:
                ckpt = checkpoint()
            if cfg.log.solved_return is not None and len(returns) == returns.maxlen and mean_return >= cfg.log.solved_return:
                solved = True
                break
    except KeyboardInterrupt:
        interrupted = True
        progress.write("interrupted: stopping actors and saving a checkpoint")
    finally:
        signals.in_loop = False
        stop.set()
        thread.join(timeout=10)
        backend.stop()
        close_outputs({**row, **counters, "episode_return": float(np.mean(returns)) if returns else None} if row else None)
    if errors:
        if isinstance(errors[0], ActorCrashLoop):  # the learner's state is whole: keep it, then stop
            ckpt = checkpoint()
            raise ActorsFailed(f"{errors[0]} The learner's state is saved in {ckpt}; fix the cause, then --resume.") from None
        if isinstance(errors[0], InferenceLost):  # a Ray inference server died (seedrl.runtime.ray_shards)
            ckpt = checkpoint()
            raise InferenceFailed(f"{errors[0]}. The learner's state is saved in {ckpt}; --resume continues the run "
                                  "(check the server's node: `ray status`, its logs under /tmp/ray).") from None
        raise errors[0]
    ckpt = checkpoint()
    try:
        plot_curves(metrics.path, run_dir / "curves.png", title=cfg.name)
    except Exception as err:  # a plot must never lose a run
        log.warning("could not plot curves: %s", err)
    return RunResult(run_dir, counters["frames"], counters["updates"], counters["episodes"],
                     float(np.mean(returns)) if returns else None, time.perf_counter() - start, interrupted, solved, ckpt,
                     signals.received)
