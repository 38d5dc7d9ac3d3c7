"""Language runs on Ray (``runtime.backend: ray``): the same roles as the threaded run, as Ray actors.

The roles of :func:`seedrl.runtime.lm_loop.train_lm`, placed by resource
requests (:class:`~seedrl.runtime.lm_config.LMRayConfig`):

- **generation servers**: one Ray actor per served model (``policy``,
  ``reference``, and what the algorithm's update serves of its own: BOND's
  anchor, GKD's teacher), each running the
  :class:`~seedrl.models.lm.server.GenerationServer` of the threaded run
  over that one model (continuous batching of every request it receives).
  The actor is asynchronous: any number of calls wait in it at once while
  the server's thread batches them. It requests ``generation_cpus`` /
  ``generation_gpus`` (``runtime.ray.generation.<model>`` overrides one
  model's); with GPUs its model moves to the GPU Ray assigns and what it
  returns comes back on the CPU;
- **the reward**, when it holds a model (a reward model, an NLI classifier,
  or a sum with one of them): one Ray actor requesting ``reward_cpus`` /
  ``reward_gpus`` that the actors call. A reward without a model (a toy
  world's, a callable) is shipped to each actor and runs there;
- **actors** (``runtime.num_actors`` Ray actors of ``actor_cpus``): one call
  ``play(prompt) -> Group`` asks the generation servers for the requested
  samples, scores them and returns the group. The prompt is drawn by the
  driver, under the same lock and from the same task as the threaded run,
  so the prompt order and its checkpoint are unchanged; one driver thread
  per actor keeps one call outstanding, records the group (one writer, in
  the driver) and puts it on the learner's bounded queue (backpressure:
  while the queue is full no call is issued). An actor whose process dies
  is restarted by Ray (``runtime.max_restarts``) and the prompt it held is
  played again there;
- **the learner** stays in the driver: the same update objects, which see
  :class:`RayGeneration` as their ``server`` (the generation server's client
  interface: ``submit``, ``score``, ``distributions``, ``update_weights``,
  ``version``; each returns a ``concurrent.futures.Future`` or, for
  weights, the new version). Weights go out as one :func:`ray.put` of the
  state dict and one call to the model's generation server, which loads
  them between two decode steps and bumps the model's version (the
  completions it returns carry it: the learner's ``policy_lag`` is measured
  as before). The call is waited for, so versions arrive in order.

A generation server that dies fails what waits on it, an actor's call or the
learner's own request, with :class:`~seedrl.runtime.errors.InferenceLost`
naming the model: the run saves a checkpoint and raises
:class:`~seedrl.runtime.errors.InferenceFailed`; ``--resume`` starts every
role again from it. Servers are not restarted in place (requests in flight
and the weights version they held would be lost). Every Ray actor and the
placement group of the run are killed at the end, failed or not. Ray is
imported by this module only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any, Callable, Mapping, Sequence

import ray
import torch

from concurrent.futures import Future

from seedrl.config import ConfigError
from seedrl.runtime.errors import InferenceLost
from seedrl.models.lm.policy import LMPolicy
from seedrl.models.lm.server import GenerationServer
from seedrl.runtime.lm_updates import make_group
from seedrl.runtime.ray_backend import connect, kill_all, make_placement, placed, remove_placement


def _lost(model: str, err: BaseException) -> InferenceLost:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return InferenceLost(f"generation server {model!r} was lost: {reason}")


def _result(model: str, ref):
    """``ray.get(ref)`` of a call to ``model``'s generation server; its death is :class:`InferenceLost`."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as err:
        raise _lost(model, err) from None


def _future(model: str, ref) -> Future:
    """A ``concurrent.futures.Future`` of a call to ``model``'s generation server (its death: :class:`InferenceLost`)."""
    out: Future = Future()

    def done(f):
        err = f.exception()
        if err is None:
            out.set_result(f.result())
        else:
            out.set_exception(_lost(model, err) if isinstance(err, ray.exceptions.RayActorError) else err)

    ref.future().add_done_callback(done)
    return out


def _to_cpu(value):
    """``value`` with every tensor inside (dataclass fields, lists, dicts) on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _to_cpu(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


class GenerationActor:
    """The body of one served model's Ray actor: a :class:`GenerationServer` over that model
    (``threads``: its torch threads; ``sampler_threads``: the sampler's per-step setting, ``generation.threads``)."""

    def __init__(self, name: str, model: LMPolicy, *, max_batch: int, seed: int, threads: int, gpus: float,
                 sampler_threads: int | str | None = None):
        torch.set_num_threads(max(1, threads))
        torch.manual_seed(seed)  # requests without a seed draw theirs from torch's RNG
        self.gpu = gpus > 0
        if self.gpu:
            model.model.to("cuda")
        self.name = name
        self.server = GenerationServer({name: model}, max_batch=max_batch, threads=sampler_threads).start()

    async def _wait(self, future):
        out = await asyncio.wrap_future(future)
        return _to_cpu(out) if self.gpu else out

    async def submit(self, prompt_ids, params):
        return await self._wait(self.server.submit(self.name, prompt_ids, params))

    async def score(self, prompt_ids, completion_ids, temperature):
        return await self._wait(self.server.score(self.name, prompt_ids, completion_ids, temperature))

    async def distributions(self, prompt_ids, completion_ids, temperature, top_k):
        return await self._wait(self.server.distributions(self.name, prompt_ids, completion_ids, temperature, top_k))

    async def update_weights(self, state: Mapping[str, torch.Tensor]) -> int:
        return await asyncio.wrap_future(self.server.update_weights(self.name, state, wait=False))

    async def version(self) -> int:
        return self.server.version(self.name)

    async def stats(self) -> dict:
        return dict(self.server.stats[self.name])

    async def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def stop(self) -> None:
        self.server.stop()


class RewardActor:
    """The body of the reward's Ray actor (a reward that holds a model)."""

    def __init__(self, reward_fn: Callable, threads: int):
        torch.set_num_threads(max(1, threads))
        self.reward_fn = reward_fn

    def score(self, prompts, completions, examples):
        return self.reward_fn(prompts, completions, examples)


class RemoteReward:
    """A reward computed by a :class:`RewardActor`: the batched reward protocol, one Ray call per batch."""

    def __init__(self, handle):
        self.handle = handle

    def __call__(self, prompts, completions, examples):
        return ray.get(self.handle.score.remote(list(prompts), list(completions), list(examples)))


class PromptPlayer:
    """The body of one actor's Ray actor: ``play(prompt)`` -> the prompt's :class:`Group`."""

    def __init__(self, servers: Mapping[str, Any], requests: Sequence, reward_fn: Callable):
        self.servers, self.requests, self.reward_fn = dict(servers), list(requests), reward_fn

    def play(self, prompt):
        # every request of the prompt is in flight before the first is waited for
        refs = [self.servers[req.model].submit.remote(prompt.tokens, params) if req.n else None
                for req, params in self.requests]
        samples = [[] if r is None else _result(req.model, r) for r, (req, _) in zip(refs, self.requests)]
        return make_group(prompt, samples, self.reward_fn)

    def pid(self) -> int:
        import os

        return os.getpid()


class RemotePlay:
    """The driver's side of one actor: ``play(prompt, stop)`` -> its group, or None once ``stop`` is set."""

    def __init__(self, handle):
        self.handle = handle

    def __call__(self, prompt, stop: threading.Event):
        ref = self.handle.play.remote(prompt)
        while not stop.is_set():
            ready, _ = ray.wait([ref], timeout=0.1)
            if ready:
                return ray.get(ref)
        return None


def holds_model(reward_fn) -> bool:
    """Whether a reward holds a model (``model`` attribute; for sums, any component)."""
    if hasattr(reward_fn, "model"):
        return True
    return any(holds_model(fn) for fn, _ in getattr(reward_fn, "components", ()))


def _weights_state(weights) -> dict[str, torch.Tensor]:
    state = weights.state_dict() if isinstance(weights, LMPolicy) else weights
    return {k: v.detach() for k, v in state.items()}


class RayGeneration:
    """The learner's client of the generation servers on Ray: the :class:`GenerationServer` client API.

    ``handles``: served model name -> its :class:`GenerationActor`'s handle."""

    def __init__(self, handles: Mapping[str, Any]):
        self.handles = dict(handles)
        self.models = self.handles  # what the threaded server calls its served models (names)

    def _handle(self, model: str):
        if model not in self.handles:
            raise KeyError(f"model={model!r} is not served (have {sorted(self.handles)})")
        return self.handles[model]

    def submit(self, model: str, prompt_ids, params=None):
        return _future(model, self._handle(model).submit.remote(list(prompt_ids), params))

    def score(self, model: str, prompt_ids, completion_ids, temperature: float = 1.0):
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"prompt_ids has {len(prompt_ids)} rows, completion_ids {len(completion_ids)}")
        return _future(model, self._handle(model).score.remote([list(p) for p in prompt_ids],
                                                               [list(c) for c in completion_ids], float(temperature)))

    def distributions(self, model: str, prompt_ids, completion_ids, temperature: float = 1.0, top_k: int = 0):
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"prompt_ids has {len(prompt_ids)} rows, completion_ids {len(completion_ids)}")
        return _future(model, self._handle(model).distributions.remote(
            [list(p) for p in prompt_ids], [list(c) for c in completion_ids], float(temperature), int(top_k)))

    def update_weights(self, model: str, weights, *, wait: bool = True, timeout: float | None = None):
        """Publish ``weights`` (a policy or a state dict) to ``model``'s server: one :func:`ray.put`, one call;
        returns the model's new version (``wait``) or a future of it."""
        future = _future(model, self._handle(model).update_weights.remote(ray.put(_weights_state(weights))))
        return future.result(timeout) if wait else future

    def version(self, model: str) -> int:
        return _result(model, self._handle(model).version.remote())

    @property
    def stats(self) -> dict[str, dict]:
        names = list(self.handles)
        return dict(zip(names, ray.get([self.handles[n].stats.remote() for n in names])))

    def node_ids(self) -> dict[str, str]:
        names = list(self.handles)
        return dict(zip(names, ray.get([self.handles[n].node_id.remote() for n in names])))

    def stop(self) -> None:
        pass  # the roles kill the servers (RayLMRoles.stop)


class RayLMRoles:
    """Generation servers, the reward and the actors of one language run as Ray actors.

    ``server`` is the learner's :class:`RayGeneration`; ``plays`` one callable per actor
    (:class:`RemotePlay`) for the driver's actor threads (:func:`seedrl.runtime.lm_loop.run_actor`)."""

    def __init__(self, runtime_cfg, models: Mapping[str, LMPolicy], reward_fn: Callable, requests: Sequence, *,
                 max_batch: int, seed: int, sampler_threads: int | str | None = None):
        self.rt, self.cfg = runtime_cfg, runtime_cfg.ray
        self.models, self.reward_fn, self.requests = dict(models), reward_fn, list(requests)
        self.max_batch, self.seed, self.sampler_threads = max_batch, seed, sampler_threads
        self.remote_reward = holds_model(reward_fn)
        self.actors: list = []
        self.generation: dict[str, Any] = {}
        self.reward_handle = None
        self._placement = None
        self._connected = False
        self._stopped = False
        self.server: RayGeneration | None = None
        self.plays: list[RemotePlay] = []

    def _bundles(self) -> list[dict]:
        def bundle(cpus, gpus):
            return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

        out = [bundle(r["cpus"], r["gpus"]) for r in (self.cfg.resources(m) for m in self.models)]
        if self.remote_reward:
            out.append(bundle(self.cfg.reward_cpus, self.cfg.reward_gpus))
        return out + [bundle(self.cfg.actor_cpus, 0)] * self.rt.num_actors

    def _check_gpus(self, bundles: list[dict]) -> None:
        need = sum(b.get("GPU", 0.0) for b in bundles)
        have = ray.cluster_resources().get("GPU", 0.0)
        if need > have:
            raise ConfigError(f"config error: 'runtime.ray.generation_gpus' (with 'runtime.ray.generation' and "
                              f"'runtime.ray.reward_gpus'): the run's Ray actors request {need:g} GPUs, but the Ray "
                              f"cluster has {have:g}", "runtime.ray.generation_gpus")

    def start(self) -> RayLMRoles:
        cfg, bundles = self.cfg, self._bundles()
        cpus = sum(b["CPU"] for b in bundles)
        what = " + ".join(["'runtime.ray.generation_cpus' x models " + str(sorted(self.models)),
                           *(["'runtime.ray.reward_cpus'"] if self.remote_reward else []),
                           "'runtime.ray.actor_cpus' x 'runtime.num_actors'"])
        self._connected = connect(cfg, cpus, needs=what)
        try:
            self._check_gpus(bundles)
            self._placement = make_placement(cfg, bundles)
            where = iter(range(len(bundles)))
            gen_cls = ray.remote(GenerationActor)
            for k, (name, model) in enumerate(self.models.items()):
                res = cfg.resources(name)
                self.generation[name] = gen_cls.options(
                    num_cpus=res["cpus"], num_gpus=res["gpus"], max_restarts=0, max_concurrency=1000,
                    **placed(cfg, self._placement, next(where)),
                ).remote(name, model, max_batch=self.max_batch, seed=self.seed + 1_000_003 * k,
                         threads=int(res["cpus"]), gpus=res["gpus"], sampler_threads=self.sampler_threads)
            reward = self.reward_fn
            if self.remote_reward:
                self.reward_handle = ray.remote(RewardActor).options(
                    num_cpus=cfg.reward_cpus, num_gpus=cfg.reward_gpus, max_restarts=0,
                    **placed(cfg, self._placement, next(where)),
                ).remote(self.reward_fn, int(cfg.reward_cpus))
                reward = RemoteReward(self.reward_handle)
            player = ray.remote(PromptPlayer)
            self.actors = [
                player.options(num_cpus=cfg.actor_cpus, max_restarts=self.rt.max_restarts, max_task_retries=-1,
                               **placed(cfg, self._placement, next(where))).remote(self.generation, self.requests, reward)
                for _ in range(self.rt.num_actors)
            ]
            ray.get([h.version.remote() for h in self.generation.values()])  # the models are loaded
            self.server = RayGeneration(self.generation)
            self.plays = [RemotePlay(h) for h in self.actors]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every Ray actor of the run and its placement group; disconnect if this run connected. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            kill_all(self.actors + list(self.generation.values()) + ([self.reward_handle] if self.reward_handle else []))
            remove_placement(self._placement)
        finally:
            self.actors, self.generation, self.reward_handle = [], {}, None
            if self._connected:
                ray.shutdown()
