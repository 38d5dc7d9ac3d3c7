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

With ``runtime.backend: ray`` the actors, one generation server per model and a reward
that holds a model are Ray actors placed by resource requests, and the learner stays
here (:mod:`seedrl.runtime.ray_lm`; :func:`make_roles` picks the backend).

The algorithm is an *update* object (protocol: :mod:`seedrl.runtime.lm_updates`; each
agent module owns its own): it says
what to sample per prompt (``K`` policy samples for REINFORCE-LOO; policy and
anchor samples for BOND / J-BOND; student and teacher samples for GKD) and turns a
batch into a loss. :func:`train_lm` picks it from the config's ``algo`` (``pg``, ``bond``,
``gkd`` or ``rlef``); an update may serve models of its own (BOND's moving anchor, GKD's
teacher) and train parameters of its own beside the policy (RLEF's value head or critic:
one optimizer, one gradient clip, checkpointed together).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from seedrl.agents.bond import BondUpdate
from seedrl.agents.gkd import GKDUpdate
from seedrl.agents.pg import PGUpdate
from seedrl.agents.rlef import RLEFUpdate
from seedrl.report.metrics import MetricsLogger, plot_curves
from seedrl.config import ConfigError
from seedrl.runtime.checkpoint import list_folder_checkpoints, read_policy_state, save_final, save_policy_checkpoint
from seedrl.runtime.errors import ActorsFailed, InferenceFailed, InferenceLost, check_finite
from seedrl.runtime.learner import make_optimizer
from seedrl.runtime.lm_eval import EVAL_FILE, make_summary_eval
from seedrl.runtime.lm_config import LMBondConfig, LMPGConfig, LMRunConfig, LMSamplingConfig, LMTaskConfig
from seedrl.runtime.lm_serving import check_served_policy, make_lm_server
from seedrl.runtime.lm_updates import Group, Request, make_group, trainable_parameters
from seedrl.runtime.run_dir import RunDir, load_optimizer_state, optimizer_name
from seedrl.runtime.signals import StopSignals

__all__ = ["LMBondConfig", "LMPGConfig", "LMRunConfig", "LMSamplingConfig", "LMTaskConfig", "train_lm", "train_lm_pg"]

UPDATES = {"pg": PGUpdate, "bond": BondUpdate, "gkd": GKDUpdate, "rlef": RLEFUpdate}
log = logging.getLogger(__name__)


def _task_and_reward(cfg: LMRunConfig, tokenizer):
    """The prompt stream (ordered by :meth:`LMTaskConfig.order_seed`) and the reward: the world's or a
    callable's, reward models, or a weighted sum."""
    from seedrl.envs.text import TextTask
    from seedrl.lm.toy_setup import make_world

    t = cfg.task
    order = t.order_seed(cfg.seed)  # the run's seed drives the prompt order; the examples are task.seed's
    if t.world is not None:
        world = make_world(t.world, t.world_options)
        task = TextTask(world.examples(t.num_examples, seed=t.seed), t.template, tokenizer=tokenizer, seed=order)
        task_reward = world.reward_fn(t.world_reward)
    else:
        task = TextTask(str(t.data_path), t.template, tokenizer=tokenizer, seed=order)
        task_reward = None
        if t.reward is not None:
            from seedrl.rewards import check_reward_on, load_reward_callable

            task_reward = load_reward_callable(t.reward, "task.reward")
            check_reward_on(task_reward, [task.prompt(i) for i in range(min(2, len(task)))], "task.reward")
    return task, _combined_reward(t, task_reward)


def _combined_reward(t, task_reward):
    """``Σ_k w_k·r_k`` over the configured sources (``task.reward_weights``; see :class:`LMTaskConfig`)."""
    from seedrl.rewards import CombinedReward, NLIReward, RewardModel

    models = {}
    if t.reward_model is not None:
        models["reward_model"] = RewardModel.from_pretrained(t.reward_model)
    if t.nli_model is not None:
        models["nli"] = NLIReward.from_pretrained(t.nli_model, source_field=t.nli_source_field)
    unknown = set(t.reward_weights) - {"task", "reward_model", "nli"}
    if unknown:
        raise ConfigError(f"task.reward_weights: unknown sources {sorted(unknown)}; use task, reward_model, nli")
    weights = {"task": 0.0 if models else 1.0, **{k: 1.0 for k in models}, **t.reward_weights}
    sources = {"task": task_reward, **models}
    for key, w in weights.items():
        if w != 0 and sources.get(key) is None:
            raise ConfigError(f"task.reward_weights.{key}={w}: no {key} reward is configured")
    parts = [(sources[k], w) for k, w in weights.items() if w != 0]
    if not parts:
        raise ConfigError("task: no reward (give a world, task.reward, task.reward_model or task.nli_model)")
    return parts[0][0] if len(parts) == 1 and parts[0][1] == 1.0 else CombinedReward(parts)


class CompletionRecorder:
    """Records sampled completions as single-step RLDS episodes (shared by the actor threads).

    Each step holds the prompt (text, tokens), the completion (text, tokens),
    the reward and, as step metadata, the behaviour log-probabilities (of the
    distribution actually sampled from: temperature, top-k and top-p applied)
    and the weights version that produced it."""

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
                {"behaviour_logprobs": np.asarray(c.sampling_logprobs, np.float32), "weights_version": np.int64(c.weights_version)},
            )
            if self.writer.spec is None:
                with self.lock:
                    if self.writer.spec is None:
                        self.writer.spec = completion_spec(step)
            self.writer.write_episode([step], metadata={"prompt_index": int(prompt.index)})

    def close(self) -> None:
        self.writer.close()


def _settled(future, timeout: float) -> bool:
    """Whether ``future`` has a result or an exception, waiting up to ``timeout`` seconds on its own condition."""
    try:
        future.exception(timeout=timeout)
        return True
    except TimeoutError:
        return False


class LocalPlay:
    """An actor's prompt played on the run's own generation server: ``play(prompt, stop)`` -> its group,
    or None once ``stop`` is set. Every request of the prompt is submitted before the first is waited for."""

    def __init__(self, server, reward_fn, requests: list[tuple[Request, Any]]):
        self.server, self.reward_fn, self.requests = server, reward_fn, requests

    def __call__(self, prompt, stop: threading.Event) -> Group | None:
        # a request for 0 samples (GKD at λ = 0: no student samples) generates nothing
        futures = [self.server.submit(req.model, prompt.tokens, params) if req.n else None for req, params in self.requests]
        for f in futures:  # block on each future (a polling loop woke every actor thread 1,000 times a second)
            while f is not None and not _settled(f, timeout=0.1):
                if stop.is_set():
                    return None
        return make_group(prompt, [[] if f is None else f.result() for f in futures], self.reward_fn)


class ThreadRoles:
    """The threaded run's roles: the run's generation server (:func:`~seedrl.runtime.lm_serving.make_lm_server`:
    the builtin one for every model, or vLLM for the policy); ``plays`` of the actor threads."""

    def __init__(self, cfg: LMRunConfig, models: dict, reward_fn, requests, *, policy_path: str, learner_policy):
        others = {k: m for k, m in models.items() if k != "policy"}
        self.server = make_lm_server(cfg, policy_path, models["policy"], others, learner_policy)
        self.plays = [LocalPlay(self.server, reward_fn, requests)] * cfg.runtime.num_actors

    def start(self) -> "ThreadRoles":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()


def make_roles(cfg: LMRunConfig, models: dict, reward_fn, requests, *, policy_path: str, learner_policy):
    """Generation servers and actors of ``cfg.runtime.backend`` (threads, or Ray actors: :mod:`seedrl.runtime.ray_lm`),
    started. ``models``: name -> the served copy (the policy's is None with ``generation.backend: vllm``)."""
    if cfg.runtime.backend == "ray":  # imports Ray: only here
        from seedrl.runtime.ray_lm import RayLMRoles

        return RayLMRoles(cfg.runtime, models, reward_fn, requests, max_batch=cfg.sampling.max_batch, seed=cfg.seed,
                          sampler_threads=cfg.generation.threads).start()
    return ThreadRoles(cfg, models, reward_fn, requests, policy_path=policy_path, learner_policy=learner_policy).start()


def run_actor(task, task_lock, play: Callable, out: "queue.Queue[Group]", stop: threading.Event, errors: list,
              recorder: CompletionRecorder | None = None) -> None:
    """One actor's loop (a thread of the run): prompt -> ``play(prompt, stop)`` (completions of each
    requested model from central inference, their rewards: :class:`LocalPlay`, or a Ray actor's call)
    -> recorder -> learner queue (backpressure: a full queue holds the actor)."""
    try:
        while not stop.is_set():
            with task_lock:
                prompt = task.next_prompt()
            group = play(prompt, stop)
            if group is None:
                return
            if recorder is not None:
                recorder.record(prompt, group.completions, group.rewards)
            while not stop.is_set():
                try:
                    out.put(group, timeout=0.1)
                    break
                except queue.Full:
                    continue
    except BaseException as err:  # surfaced by the learner
        errors.append(err)
        stop.set()


def _take_batch(groups: queue.Queue, size: int, signals, errors: list) -> list[Group] | None:
    """``size`` groups off the actors' queue, or ``None`` once a stop signal or an actor error arrives."""
    batch: list[Group] = []
    while len(batch) < size and not signals.is_set() and not errors:
        try:
            batch.append(groups.get(timeout=0.1))
        except queue.Empty:
            continue
    return None if signals.is_set() or errors else batch


def _frontier(cfg: LMRunConfig, reference, task, reward_fn, params, run_dir: Path):
    """Best-of-N frontier of the reference (BOND's plot), computed once per run and cached."""
    from seedrl.agents.bon import BoNEvaluation, evaluate_bon

    path = run_dir / "bon_frontier.json"
    if path.exists():
        raw = json.loads(path.read_text())
        return BoNEvaluation(raw["rows"], raw["num_prompts"], raw["pool_size"], raw["quantile_samples"], raw["reference_reward"])
    ev = evaluate_bon(reference, task, reward_fn, ns=cfg.frontier_ns, num_prompts=cfg.frontier_prompts,
                      params=replace(params, n=1), max_batch=cfg.sampling.max_batch)
    path.write_text(json.dumps({"rows": ev.rows, "num_prompts": ev.num_prompts, "pool_size": ev.pool_size,
                                "quantile_samples": ev.quantile_samples, "reference_reward": ev.reference_reward}))
    return ev


def train_lm(
    cfg: LMRunConfig, *, resume: bool = False, reward_fn: Callable | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Train a language policy on the runtime (``cfg.algo``: pg, bond, gkd or rlef); returns the final metrics row.

    ``resume`` continues from the newest whole ``<run>/checkpoint-<step>``: weights,
    optimizer moments, step and sample counters, the prompt order (it continues
    after the last prompt drawn; groups still in flight at the checkpoint are
    not replayed), the torch RNG, BOND's moving anchor and RLEF's value head or critic. ``reward_fn`` (a
    :class:`~seedrl.rewards.RewardFn` or plain batched callable) replaces the
    task's reward. SIGINT and SIGTERM stop after the update in hand with a
    checkpoint (the row then has ``interrupted``, ``stop_signal`` and
    ``checkpoint``, and no ``final``); an actor that fails (its reward raises,
    say) also leaves a checkpoint, then raises
    :class:`~seedrl.runtime.errors.ActorsFailed`; the folder's lock and rules
    are :class:`~seedrl.runtime.run_dir.RunDir`'s."""
    run_dir = Path(cfg.out_dir) / cfg.name
    threads = torch.get_num_threads()
    if cfg.runtime.torch_threads:
        torch.set_num_threads(cfg.runtime.torch_threads)
    try:
        with RunDir(run_dir, resume=resume, checkpoints=list_folder_checkpoints) as run, StopSignals() as signals:
            return _train_lm(cfg, run, signals, reward_fn, on_step)
    finally:
        torch.set_num_threads(threads)  # the caller's setting again


def _train_lm(cfg: LMRunConfig, run: RunDir, signals: StopSignals, reward_fn: Callable | None,
              on_step: Callable[[dict], None] | None) -> dict[str, Any]:
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.sampler import SamplingParams

    run_dir = run.path
    checkpoint, state = run.resume_state(read_policy_state)
    if state is not None:
        run.check_length(int(state["step"]), cfg.steps, "steps")
    torch.manual_seed(cfg.seed)
    start_from = str(checkpoint) if checkpoint else cfg.policy
    # eval mode (no dropout) with gradients: the learner's log-probs must be the sampler's, or the
    # importance of each sample and the KL estimates are biased by dropout noise
    learner_policy = LMPolicy.from_pretrained(start_from).eval()
    vllm = cfg.generation.backend == "vllm"  # the engine loads start_from itself: no built-in copy
    served = None if vllm else LMPolicy.from_pretrained(start_from).eval()
    task, task_reward = _task_and_reward(cfg, learner_policy.tokenizer)
    if reward_fn is None:
        reward_fn = task_reward
    else:
        from seedrl.rewards import as_reward_fn

        reward_fn = as_reward_fn(reward_fn)
    update = UPDATES[cfg.algo](cfg, learner_policy, checkpoint)
    reference = (LMPolicy.from_pretrained(cfg.reference or cfg.policy).eval()  # GKD's divergence is to its teacher
                 if getattr(update, "uses_reference", True) else None)
    s = cfg.sampling
    base = SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, max_new_tokens=s.max_new_tokens)
    requests = [(req, replace(base, n=req.n) if req.n else None) for req in update.requests()]
    samples_policy = any(req.n for req, _ in requests if req.model == "policy")
    params = [*learner_policy.parameters(), *trainable_parameters(update)]  # + a value head or critic (rlef)
    optimizer = make_optimizer(cfg.optim, params, fused=True)
    first_step, samples = 1, 0
    if state is not None:  # every check before anything is written
        load_optimizer_state(optimizer, state["optimizer"], checkpoint, state.get("optimizer_class"))
        task.load_state_dict(state["task"])
        torch.set_rng_state(state["torch_rng"])
        first_step, samples = state["step"] + 1, state["samples"]
    # the roles start before anything is written: a cluster that cannot hold them refuses the start
    roles = make_roles(cfg, {"policy": served, **({"reference": reference} if reference is not None else {}),
                             **update.served_models()}, reward_fn, requests, policy_path=start_from,
                       learner_policy=learner_policy)
    metrics = recorder = None
    try:
        run.begin(cfg, first_step - 1 if state is not None else None)
        frontier = None
        if getattr(cfg, "frontier_prompts", 0) and reference is not None:
            frontier = _frontier(cfg, reference, task, reward_fn, base, run_dir)
        evaluate = make_summary_eval(cfg, learner_policy.tokenizer, run_dir)  # None unless a summarization task
        last_eval: dict[str, Any] = {}

        def save(step: int) -> Path:
            with task_lock:  # actors have drawn prompts ahead: resume continues after the last one drawn
                state = {"step": step, "samples": samples, "optimizer": optimizer.state_dict(),
                         "optimizer_class": optimizer_name(optimizer), "task": task.state_dict(),
                         "torch_rng": torch.get_rng_state()}
            return save_policy_checkpoint(run_dir, step, learner_policy, state, cfg.log.keep_checkpoints,
                                          extra=update.save)

        groups: queue.Queue = queue.Queue(maxsize=cfg.runtime.queue_groups)
        stop, errors, task_lock = threading.Event(), [], threading.Lock()
        metrics = MetricsLogger(run_dir, tensorboard=cfg.log.tensorboard)
        if evaluate is not None and first_step == 1:  # the initial policy: the baseline of the later evaluations
            metrics.log({"updates": 0, "frames": 0, **evaluate(learner_policy)})
        recorder = (CompletionRecorder(cfg.record.path or run_dir / "episodes", cfg.record.rate, cfg.seed)
                    if cfg.record.rate > 0 else None)
        # generation.check_logprobs: the served policy's log-probs are the learner's, or no update is made
        checked = check_served_policy(cfg, roles.server, learner_policy, task, base)
        if checked:
            metrics.log({"updates": first_step - 1, "frames": samples, **checked})
        server = update.server = roles.server
        actors = [threading.Thread(target=run_actor, args=(task, task_lock, play, groups, stop, errors, recorder), daemon=True)
                  for play in roles.plays]
        for a in actors:
            a.start()
    except BaseException:
        roles.stop()
        if metrics is not None:
            metrics.close()
        if recorder is not None:
            recorder.close()
        raise
    row: dict[str, Any] = {}
    start, samples_at_start = time.perf_counter(), samples
    done = first_step - 1  # the last update applied
    last_ckpt = checkpoint  # the newest checkpoint, and the update it holds
    saved = done if checkpoint is not None else None
    try:
        signals.in_loop = True
        prefetch = getattr(update, "prefetch", None)
        ahead: list[Group] | None = None  # the next batch, already prefetched
        # the served policy's version, and the weight push in flight: the server copies the weights while the
        # learner computes the next loss, which only reads them; the next optimizer step waits for the copy
        served_version = server.version("policy") if samples_policy else None
        push = None
        for step in tqdm(range(first_step, cfg.steps + 1), desc=cfg.name, disable=not cfg.log.progress, unit="update",
                         initial=first_step - 1, total=cfg.steps):
            batch = ahead if ahead is not None else _take_batch(groups, cfg.prompts_per_step, signals, errors)
            if batch is None:
                break
            if prefetch is not None:
                if ahead is None:
                    prefetch(batch)
                ahead = _take_batch(groups, cfg.prompts_per_step, signals, errors) if step < cfg.steps else None
                if ahead is not None:  # its inference runs while this batch trains
                    prefetch(ahead)
            loss, logs = update.loss(batch)
            check_finite(loss, "loss", step)  # nothing applied, nothing saved
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_norm or float("inf"))
            check_finite(grad_norm, "gradient norm", step)
            if push is not None:
                push.result()  # the server holds the last update's weights: now the step may change them
            optimizer.step()
            # the served copy only samples: with no policy samples requested (GKD at λ = 0) it is not pushed
            if samples_policy:
                push = server.update_weights("policy", learner_policy, wait=False)
                served_version += 1  # each push bumps the served version by one
            version = served_version if samples_policy else step + 1
            update.after_update(step)
            samples += sum(len(g.completions) + len(g.anchor_completions or ()) for g in batch)
            done = step
            lag = version - 1 - min((c.weights_version_start for g in batch for c in g.completions), default=version - 1)
            row = {"updates": step, "frames": samples, **logs, "grad_norm": float(grad_norm), "policy_lag": lag,
                   "samples_per_s": (samples - samples_at_start) / (time.perf_counter() - start)}
            if on_step is not None:
                on_step(row)
            if step % cfg.log.every == 0 or step == cfg.steps:
                metrics.log(row)
            if evaluate is not None and (step == cfg.steps or (cfg.eval.every and step % cfg.eval.every == 0)):
                last_eval = evaluate(learner_policy)
                metrics.log({"updates": step, "frames": samples, **last_eval})
            if step % cfg.log.checkpoint_every == 0 or step == cfg.steps:
                last_ckpt, saved = save(step), step
        if push is not None:
            push.result()  # the run ends with the served policy holding the final weights
    except KeyboardInterrupt:
        signals.received = signals.received or "SIGINT"
    except InferenceLost as err:  # a generation server of a Ray run died under the learner's request
        errors.insert(0, err)
    finally:
        signals.in_loop = False
        stop.set()
        for a in actors:
            a.join(5)
        roles.stop()
        if row and done % cfg.log.every != 0 and done != cfg.steps:
            metrics.log(row)  # the last update's row, so the metrics reach the checkpoint
        metrics.close()
        if recorder is not None:
            recorder.close()
    if errors:  # an actor (its reward, say) failed; the learner's state is whole: keep it, then stop
        ckpt = last_ckpt if saved == done else save(done)
        if isinstance(errors[0], InferenceLost):
            lost = getattr(errors[0], "cause", None) or errors[0]  # an actor's call: Ray's task error around it
            raise InferenceFailed(f"{lost}. The learner's state is saved in {ckpt}; "
                                  "--resume continues the run (check the server's node: `ray status`, its logs under "
                                  "/tmp/ray).") from None
        log.error("an actor failed", exc_info=errors[0])
        raise ActorsFailed(f"an actor failed: {errors[0]!r}. The learner's state is saved in {ckpt}; fix the cause, "
                           "then --resume.") from errors[0]
    if done < cfg.steps:  # stopped by a signal: keep what was done, --resume continues
        ckpt = last_ckpt if saved == done else save(done)
        _plots(cfg, metrics.path, run_dir, frontier)
        return {**row, "run_dir": str(run_dir), "interrupted": True, "stop_signal": signals.received,
                "checkpoint": str(ckpt), "updates": done}
    final = save_final(run_dir, learner_policy)
    _plots(cfg, metrics.path, run_dir, frontier)
    if last_eval:  # the run's final evaluation, also as a file
        (run_dir / EVAL_FILE).write_text(json.dumps({"updates": done, **last_eval}, indent=1))
    return {**row, **last_eval, "run_dir": str(run_dir), "final": str(final)}


def _plots(cfg: LMRunConfig, metrics_path: Path, run_dir: Path, frontier) -> None:
    """Training curves; for BOND also reward against KL(π ‖ π_ref) beside Best-of-N's frontier."""
    keys = ("reward", "kl", "loss", "length", "samples_per_s")
    if cfg.algo == "bond":
        keys = ("reward", "kl", "kl_anchor", "log_quantile", "forward_nll", "entropy")
    elif cfg.algo == "gkd":
        keys = ("divergence", "reward", "loss", "on_policy", "length", "samples_per_s")
    elif cfg.algo == "rlef":
        keys = ("reward", "kl", "value_loss", "explained_variance", "length", "entropy")
    try:  # a plot never loses a run
        plot_curves(metrics_path, run_dir / "curves.png", keys=keys, title=cfg.name)
        if frontier is not None:
            from seedrl.agents.bon import plot_frontier

            rows = [json.loads(line) for line in open(metrics_path, encoding="utf-8")]
            window = max(1, len(rows) // 10)  # per-update estimates are noisy: a running mean over ~10% of the run
            smooth = [np.convolve([r[k] for r in rows], np.ones(window) / window, mode="valid") for k in ("kl", "reward")]
            plot_frontier(frontier, run_dir / "reward_vs_kl.png", title=f"{cfg.name}: policy vs Best-of-N of the reference",
                          curves={f"{cfg.name} (running mean of {window})": (smooth[0], smooth[1])})
    except Exception as err:
        warnings.warn(f"plots of {run_dir} failed: {err!r}", stacklevel=2)


def train_lm_pg(cfg: LMRunConfig, **kwargs) -> dict[str, Any]:
    """:func:`train_lm` (kept under its first name: it trains any ``algo``)."""
    return train_lm(cfg, **kwargs)
