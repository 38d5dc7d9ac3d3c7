"""``ServerGroup``: several generation servers behind one server's client API, routed by model name.

A :class:`~seedrl.models.lm.server.GenerationServer` runs every model it serves on one thread,
one after another. When two models are busy at once — GKD at λ = 1: the student decodes the
next batch's samples while the teacher computes the distributions of the batch before — one
thread serialises them and the learner waits on the sum. ``ServerGroup`` puts each group of
models on a server (a thread) of its own, so their work overlaps on separate cores; callers
see the same ``submit`` / ``score`` / ``distributions`` / ``update_weights`` / ``version`` /
``generate``, ``models`` and ``stats`` as with one server. Which model a call goes to is fixed
at construction; nothing moves between servers.

``generation.server_threads: per_model`` builds one (:func:`serve_models`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from seedrl.models.lm.sampler import SamplingParams


class ServerGroup:
    """Route each model's calls to the server that holds it; start and stop them together."""

    def __init__(self, servers: Sequence[Any]):
        if not servers:
            raise ValueError("ServerGroup needs at least one server")
        self.servers = list(servers)
        self._route: dict[str, Any] = {}
        for server in self.servers:
            for name in server.models:
                if name in self._route:
                    raise ValueError(f"model {name!r} is served by two servers of the group")
                self._route[name] = server

    def _server(self, model: str):
        try:
            return self._route[model]
        except KeyError:
            raise KeyError(f"model={model!r} is not served (have {sorted(self._route)})") from None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ServerGroup:
        for server in self.servers:
            server.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        for server in self.servers:
            server.stop(timeout)

    def __enter__(self) -> ServerGroup:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ what is served
    @property
    def models(self) -> dict[str, Any]:
        return {name: model for server in self.servers for name, model in server.models.items()}

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        return {name: counts for server in self.servers for name, counts in server.stats.items()}

    # ------------------------------------------------------------------ client API (thread-safe, as each server's)
    def submit(self, model: str, prompt_ids: Sequence[int], params: SamplingParams | None = None) -> Future:
        return self._server(model).submit(model, prompt_ids, params)

    def score(self, model: str, prompt_ids, completion_ids, temperature: float = 1.0) -> Future:
        return self._server(model).score(model, prompt_ids, completion_ids, temperature)

    def distributions(self, model: str, prompt_ids, completion_ids, temperature: float = 1.0, top_k: int = 0) -> Future:
        return self._server(model).distributions(model, prompt_ids, completion_ids, temperature, top_k)

    def update_weights(self, model: str, weights, *, wait: bool = True, timeout: float | None = None):
        return self._server(model).update_weights(model, weights, wait=wait, timeout=timeout)

    def version(self, model: str) -> int:
        return self._server(model).version(model)

    def generate(self, model: str, prompts, params=None, timeout: float | None = None):
        return self._server(model).generate(model, prompts, params, timeout)


def serve_models(models: Mapping[str, Any], *, per_model: bool, max_batch: int = 32):
    """One :class:`GenerationServer` for all ``models`` (one serving thread), or with ``per_model``
    a :class:`ServerGroup` of one server (thread) per model."""
    from seedrl.models.lm.server import GenerationServer

    if not per_model or len(models) == 1:
        return GenerationServer(dict(models), max_batch=max_batch)
    return ServerGroup([GenerationServer({name: model}, max_batch=max_batch) for name, model in models.items()])
