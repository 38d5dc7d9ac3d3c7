"""Automatic layout of a game run: envs per actor, actor count, inference batching timeout, queue.

``env.num_envs``, ``runtime.num_actors``, ``runtime.batch_timeout_ms`` and
``runtime.queue_unrolls`` may be ``auto``;
:func:`resolve_layout` then measures, in about a second at start-up (:func:`probe_costs`), the
cores it may use, the cost of stepping the environment batch and the cost of the policy's
forward pass, each as a line in the batch size (fixed cost per call + cost per env), and
:func:`choose_layout` picks the values. Explicit values always win; the choice is logged and
written to ``<run>/layout.json`` and the run's ``config.yaml`` holds the chosen numbers.

The cost model. One round trip of an actor (step its ``n`` envs, send, wait for actions) costs

    per call:  R + a + e0        (transport wake-ups R, forward's fixed cost a, env's fixed cost e0)
    per env:   e1 + b            (one env step e1, one forward row b)

so the share of a step spent on per-call overhead is ``(R + a + e0) / n`` against ``e1 + b``.
The rule, with ``c`` usable cores:

- ``num_envs``: the smallest power of two ``n`` with ``(R + a + e0) / n <= F * (e1 + b)``
  (``F`` = :data:`OVERHEAD_FRACTION`), at most :data:`MAX_ENVS` (an actor's unroll of ``n``
  envs feeds ``n / batch_size`` learner updates: the policy lag grows with ``n``).
  A cheap env with a tiny net (CartPole: R + a ~ 400 us against ~5 us per env) gets hundreds
  of envs; a costly one (Pong: ~350 us per env plus a ~400 us CNN row) a few tens.
- ``num_actors``: ``c`` on 1-2 cores, else ``c - 1`` (a core for the learner and inference);
  at most 2 when the policy is inference-bound (``b >= e1``: one inference thread serves
  at most ``1 / b`` env steps a second, and two actors already overlap one's stepping with
  the other's inference, so more actors only wait).
- ``batch_timeout_ms``: merging two actors' batches saves one forward's fixed cost ``a`` and
  the other actor is half an actor step ``(e0 + n e1) / 2`` away on average; wait that long
  (at most :data:`MAX_TIMEOUT_MS`) only when ``a`` is at least that, else 0 (no wait: on
  this kind of machine 0 was faster in 13 of 16 measured pairs, docs/benchmarks.md).
  One actor never waits.
- ``queue_unrolls`` (the learner queue, in actor unrolls of ``n`` envs): enough for about
  :data:`QUEUE_UPDATES` learner updates of ``batch_size`` envs, at least 2:
  ``max(2, ceil(QUEUE_UPDATES * batch_size / n))``. The queued data is what the policy lag is
  made of when the learner is the bottleneck (8 unrolls of 256 envs at batch 32 held 64
  updates: CartPole solved in 2.85M frames at a lag of ~85 updates, against ~1.5M before).

- ``inference`` (where the policy runs): ``actors`` when the policy costs less per row than
  the environment per step (``b < e1``) and the algorithm acts by sampling its policy
  (IMPALA, APPO); else ``central``. A policy that cheap makes the round trip to central
  inference (``R`` plus the actors waiting on one forward thread) the largest cost of a
  step; run in each actor process (:mod:`seedrl.runtime.actor_inference`) it costs the
  actor ``a / n + b`` a step and no transport. A costly policy (an Atari CNN) stays central:
  one copy, one batched forward pass, the actors free to step (SEED RL's layout). Only
  the processes backend has actor processes; the others always stay central.

``R`` is not probed (it needs the actor processes): :data:`ROUND_TRIP_S`, the measured wake-up
cost of a round trip (docs/benchmarks.md, "Where the overhead is").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

AUTO = "auto"
#: transport cost of one actor round trip (pipe wake-ups on both sides), seconds
ROUND_TRIP_S = 300e-6
#: largest share of an actor's step spent on per-call overhead
OVERHEAD_FRACTION = 0.1
#: most envs per actor the rule picks: policy lag grows with an actor's unroll (shipped CartPole config,
#: batch 32: solved in 2.86M frames at 2 x 256 envs; 2 x 1024 did not solve within 4M frames)
MAX_ENVS = 256
#: an env batch step slower than this at the first probe size is not probed at the second (Atari)
SLOW_ENV_S = 5e-3
#: the statistic of the probe's call times (:func:`time_per_call`)
PROBE_QUANTILE = 0.25
#: batch sizes the probe times the env and the forward pass at: far apart, so the per-env slope is not
#: the difference of two nearly equal times (with 8 and 64, CartPole's forward slope read 0 - 3.5 us/row
#: over 22 starts, and put the policy centrally in 2 of them)
PROBE_SIZES = (8, 256)
#: learner updates of data the auto queue holds
QUEUE_UPDATES = 8
#: longest batching wait the rule picks, ms
MAX_TIMEOUT_MS = 5.0


@dataclass(frozen=True)
class Costs:
    """What :func:`choose_layout` needs, in seconds: env step and policy forward as lines in the batch size."""

    cores: int
    env_fixed_s: float
    env_step_s: float
    forward_fixed_s: float
    forward_step_s: float


@dataclass(frozen=True)
class Layout:
    num_actors: int
    num_envs: int
    batch_timeout_ms: float
    queue_unrolls: int
    inference: str = "central"


def choose_layout(costs: Costs, *, num_actors: int | None = None, num_envs: int | None = None,
                  batch_timeout_ms: float | None = None, queue_unrolls: int | None = None, inference: str | None = None,
                  batch_size: int = 32, round_trip_s: float = ROUND_TRIP_S, actors_can_act: bool = True) -> Layout:
    """The layout of the module docstring's rule; a value given here (the config's, not ``auto``) is kept.

    ``actors_can_act``: the run may put the policy in the actor processes (processes backend,
    an algorithm that samples its policy)."""
    c = costs
    if inference is None:
        inference = "actors" if actors_can_act and c.forward_step_s < c.env_step_s else "central"
    fixed = round_trip_s + c.forward_fixed_s + c.env_fixed_s
    per_env = max(c.env_step_s + c.forward_step_s, 1e-9)
    if num_envs is None:
        need = fixed / (OVERHEAD_FRACTION * per_env)
        num_envs = min(MAX_ENVS, 1 << max(0, math.ceil(math.log2(max(need, 1.0)))))
    if num_actors is None:
        num_actors = max(1, c.cores if c.cores <= 2 else c.cores - 1)
        if c.forward_step_s >= c.env_step_s:
            num_actors = min(num_actors, 2)
    if batch_timeout_ms is None:
        half_step = (c.env_fixed_s + num_envs * c.env_step_s) / 2
        wait = inference == "central" and num_actors > 1 and c.forward_fixed_s >= half_step
        batch_timeout_ms = round(min(MAX_TIMEOUT_MS, 1e3 * half_step), 3) if wait else 0.0
    if queue_unrolls is None:
        queue_unrolls = max(2, math.ceil(QUEUE_UPDATES * batch_size / num_envs))
    return Layout(int(num_actors), int(num_envs), float(batch_timeout_ms), int(queue_unrolls), inference)


def fit_line(sizes: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """``(fixed, per_item)`` of the least-squares line ``seconds = fixed + per_item * size``, both >= 0."""
    x, y = np.asarray(sizes, float), np.asarray(seconds, float)
    slope = float(np.polyfit(x, y, 1)[0]) if len(set(sizes)) > 1 else 0.0
    slope = max(slope, 0.0)
    fixed = max(float(np.mean(y - slope * x)), 0.0)
    return fixed, slope


def time_per_call(fn: Callable[[], Any], seconds: float, quantile: float = PROBE_QUANTILE) -> float:
    """Seconds per call of ``fn`` over ~``seconds`` (after one warm-up call): the ``quantile`` of the calls' times.

    A low quantile, not the median: on a busy machine another process's burst lasts many calls, and
    what the rule needs is the cost of the work, not of the burst."""
    fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.quantile(times, quantile))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def probe_costs(env_cfg, model, *, seed: int = 0, sizes: tuple[int, int] = PROBE_SIZES, seconds: float = 1.0) -> Costs:
    """Measure :class:`Costs` for ``env_cfg`` and ``model`` in about ``seconds`` (half env, half forward)."""
    import torch

    from seedrl.envs import make_env_batch
    from seedrl.runtime.inference import sample_actions

    env_times, fwd_times = [], []
    share = seconds / (2 * len(sizes))
    for n in sizes:
        if env_times and env_times[0] > SLOW_ENV_S:  # a costly env: its per-env cost is all that matters
            sizes = sizes[:1]
            break
        envs = make_env_batch(env_cfg, n, seed)
        try:
            shape = (n, *(envs.action_space.shape or ()))
            actions = np.zeros(shape, np.int64)
            obs = envs.reset()
            env_times.append(time_per_call(lambda: envs.step(actions), share))
        finally:
            envs.close()
        obs_t = torch.as_tensor(np.asarray(obs))
        first, prev_a, prev_r = torch.zeros(n, dtype=torch.bool), torch.zeros(shape, dtype=torch.int64), torch.zeros(n)
        gen = torch.Generator().manual_seed(0)

        def forward() -> None:
            with torch.inference_mode():
                logits, _, _ = model.step(obs_t, model.initial_state(n), first, prev_a, prev_r)
                sample_actions(logits, gen)

        fwd_times.append(time_per_call(forward, share))
    if len(sizes) == 1:  # one size: all of it per env (the conservative reading for the rule)
        return Costs(usable_cores(), 0.0, env_times[0] / sizes[0], 0.0, fwd_times[0] / sizes[0])
    env_fixed, env_step = fit_line(sizes, env_times)
    fwd_fixed, fwd_step = fit_line(sizes, fwd_times)
    return Costs(usable_cores(), env_fixed, env_step, fwd_fixed, fwd_step)


def auto_keys(cfg) -> dict[str, bool]:
    """Which layout keys of a ``TrainConfig`` are ``auto``."""
    return {"env.num_envs": cfg.env.num_envs == AUTO, "runtime.num_actors": cfg.runtime.num_actors == AUTO,
            "runtime.batch_timeout_ms": cfg.runtime.batch_timeout_ms == AUTO,
            "runtime.queue_unrolls": cfg.runtime.queue_unrolls == AUTO, "runtime.inference": cfg.runtime.inference == AUTO}


def resolve_layout(cfg, observation_space, action_space, *, probe: Callable[..., Costs] | None = None):
    """``(cfg with the auto keys filled in, record or None)``; nothing is probed when no key is ``auto``.

    The record (for ``layout.json`` and the log) holds the chosen layout, which keys were
    chosen and the measured costs."""
    auto = auto_keys(cfg)
    if not any(auto.values()):
        return cfg, None
    from seedrl.models.config import build_model
    from seedrl.runtime.algorithms import game_algo

    model = build_model(cfg.model, observation_space, action_space).eval()
    costs = (probe or probe_costs)(cfg.env, model, seed=cfg.seed)
    rt = cfg.runtime
    chosen = choose_layout(
        costs,
        num_actors=None if auto["runtime.num_actors"] else rt.num_actors,
        num_envs=None if auto["env.num_envs"] else cfg.env.num_envs,
        batch_timeout_ms=None if auto["runtime.batch_timeout_ms"] else rt.batch_timeout_ms,
        queue_unrolls=None if auto["runtime.queue_unrolls"] else rt.queue_unrolls,
        inference=None if auto["runtime.inference"] else rt.inference,
        batch_size=rt.batch_size,
        actors_can_act=rt.backend == "processes" and game_algo(cfg.algo).acts_on_actors,
    )
    cfg = dataclasses.replace(
        cfg, env=dataclasses.replace(cfg.env, num_envs=chosen.num_envs),
        runtime=dataclasses.replace(rt, num_actors=chosen.num_actors, batch_timeout_ms=chosen.batch_timeout_ms,
                                    queue_unrolls=chosen.queue_unrolls, inference=chosen.inference))
    record = {**dataclasses.asdict(chosen), "auto": [k for k, v in auto.items() if v], "costs": dataclasses.asdict(costs),
              "round_trip_s": ROUND_TRIP_S}
    return cfg, record


def describe(record: dict) -> str:
    """One line: the chosen layout, what was chosen and the measured costs behind it."""
    c = record["costs"]
    return (f"layout: {record['num_actors']} actors x {record['num_envs']} envs, {record['inference']} inference, batch timeout "
            f"{record['batch_timeout_ms']:g} ms, learner queue {record['queue_unrolls']} unrolls (auto: {', '.join(record['auto'])}; env {1e6 * c['env_fixed_s']:.0f} us + "
            f"{1e6 * c['env_step_s']:.2f} us/env, forward {1e6 * c['forward_fixed_s']:.0f} us + "
            f"{1e6 * c['forward_step_s']:.2f} us/row, {c['cores']} cores)")


def record_layout(record: dict, run_dir: Path) -> Path:
    """Write ``<run_dir>/layout.json`` and print (and log) the one-line description."""
    from tqdm import tqdm

    path = Path(run_dir) / "layout.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    line = describe(record)
    log.info(line)
    tqdm.write(line)
    return path
