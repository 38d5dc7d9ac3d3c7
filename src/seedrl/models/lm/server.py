"""``GenerationServer``: centralized inference for language models (SEED RL style).

Several named models (``policy``, ``reference``, ``teacher``, ...) live side by side, each
with its own continuous-batching :class:`~seedrl.models.lm.sampler.Sampler`. Any number
of actor threads call the thread-safe :meth:`GenerationServer.submit` /
:meth:`GenerationServer.score` / :meth:`GenerationServer.update_weights`; each returns a
``concurrent.futures.Future``. One serving thread owns every model and loops:

1. drain the command inbox: new generation requests join their model's waiting queue
   (they enter the running batch at the next decode step: continuous batching); score
   requests are queued; distribution requests (a teacher's next-token log-probs over
   given completions, :meth:`GenerationServer.distributions`) run right away; weight
   updates are applied in place right there, i.e. *between* decode steps (no disk;
   sequences in flight continue with the new weights and their already-cached
   keys/values);
2. one decode step for every model with work (round robin), and one batched
   ``LMPolicy.score`` call per model over all pending score requests;
3. block on the inbox when no model has work.

Every :class:`~seedrl.models.lm.sampler.Completion` carries ``weights_version`` (the
model's ``version`` when its last token was sampled) and ``weights_version_start``
(at admission), so the learner can measure policy lag as
``learner_version - weights_version_start``.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping, Sequence
from concurrent.futures import Future

import torch

from seedrl.models.lm.policy import LMPolicy, Scores
from seedrl.models.lm.sampler import Request, Sampler, SamplingParams
from seedrl.models.lm.serving_thread import STOP as _STOP
from seedrl.models.lm.serving_thread import InboxServer


class GenerationServer(InboxServer):
    """Serve generation and scoring for named :class:`LMPolicy` models from one thread.

    ``max_batch`` / ``max_len`` configure every model's sampler (a mapping name -> value
    sets them per model); ``threads`` sets every sampler's decode threads (``Sampler``'s
    argument). Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, models: Mapping[str, LMPolicy], *, max_batch: int | Mapping[str, int] = 32,
                 max_len: int | None | Mapping[str, int | None] = None, max_score_rows: int = 64,
                 threads: int | str | None = None):
        if not models:
            raise ValueError("GenerationServer needs at least one model")
        pick = lambda v, name: v.get(name) if isinstance(v, Mapping) else v  # noqa: E731
        self.models = dict(models)
        self.samplers = {name: Sampler(m, max_batch=pick(max_batch, name) or 32, max_len=pick(max_len, name),
                                       threads=threads) for name, m in self.models.items()}
        self.max_score_rows = max_score_rows
        self._init_inbox()
        self._scores: dict[str, list] = {name: [] for name in self.models}
        self._futures: dict[str, set[Future]] = {name: set() for name in self.models}
        self.stats = {name: {"steps": 0, "tokens": 0, "requests": 0, "score_batches": 0, "weight_updates": 0}
                      for name in self.models}

    # ------------------------------------------------------------------ lifecycle: InboxServer's
    def _check(self, model: str) -> None:
        if model not in self.models:
            raise KeyError(f"model={model!r} is not served (have {sorted(self.models)})")
        if not self._running:
            raise self._not_running()

    # ------------------------------------------------------------------ client API (thread-safe)
    def submit(self, model: str, prompt_ids: Sequence[int], params: SamplingParams | None = None) -> Future:
        """Queue one prompt; the future resolves to its ``params.n`` completions."""
        self._check(model)
        fut: Future = Future()
        self._inbox.put(("generate", model, (list(prompt_ids), params or SamplingParams()), fut))
        return fut

    def score(self, model: str, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
              temperature: float = 1.0) -> Future:
        """Queue log-prob scoring (e.g. under the reference model); resolves to :class:`Scores`
        (no gradient) for these rows. Pending requests of one model are scored in one batch."""
        self._check(model)
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"prompt_ids has {len(prompt_ids)} rows, completion_ids {len(completion_ids)}")
        fut: Future = Future()
        rows = ([list(p) for p in prompt_ids], [list(c) for c in completion_ids], float(temperature))
        self._inbox.put(("score", model, rows, fut))
        return fut

    def distributions(self, model: str, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                      temperature: float = 1.0, top_k: int = 0) -> Future:
        """Queue the model's next-token distributions over these completions (a teacher's, for
        distillation); resolves to :class:`~seedrl.models.lm.policy.TokenDistributions`: full
        log-probs, or with ``top_k > 0`` the top-k log-probs, indices and rest of the mass."""
        self._check(model)
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"prompt_ids has {len(prompt_ids)} rows, completion_ids {len(completion_ids)}")
        fut: Future = Future()
        self._inbox.put(("distributions", model, ([list(p) for p in prompt_ids], [list(c) for c in completion_ids],
                                                  float(temperature), int(top_k)), fut))
        return fut

    def update_weights(self, model: str, weights: LMPolicy | Mapping[str, torch.Tensor], *, wait: bool = True,
                       timeout: float | None = None) -> int | Future:
        """Copy ``weights`` (a policy or a state dict) into the served model in place between
        two decode steps. Returns the model's new version (``wait=True``, so the caller may
        modify its tensors afterwards) or a future of it."""
        self._check(model)
        fut: Future = Future()
        self._inbox.put(("weights", model, weights, fut))
        return fut.result(timeout) if wait else fut

    def version(self, model: str) -> int:
        return self.models[model].version

    # ------------------------------------------------------------------ serving loop
    def _loop(self) -> None:
        while True:
            busy = any(s.has_work for s in self.samplers.values()) or any(self._scores.values())
            try:
                item = self._inbox.get(block=not busy)
            except queue.Empty:
                item = None
            while item is not None:
                if item is _STOP:
                    return
                self._handle(item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            for name, sampler in self.samplers.items():
                if self._scores[name]:
                    self._run_scores(name)
                if sampler.has_work:
                    try:
                        made = sampler.step()
                    except Exception as exc:  # a bug or a bad model: fail this model's requests, keep serving
                        self._reset(name, exc)
                        continue
                    self.stats[name]["steps"] += 1
                    self.stats[name]["tokens"] += made

    def _handle(self, item) -> None:
        kind, name, payload, fut = item
        if not fut.set_running_or_notify_cancel():
            return
        try:
            if kind == "generate":
                prompt, params = payload
                futures = self._futures[name]

                def done(handle, fut=fut):
                    futures.discard(fut)
                    fut.set_result(handle.result())

                self.samplers[name].submit(Request(prompt, params, done))
                futures.add(fut)
                self.stats[name]["requests"] += 1
            elif kind == "score":
                self._scores[name].append((payload, fut))
            elif kind == "distributions":
                prompts, comps, temp, top_k = payload
                fast = getattr(self.samplers[name].backend, "completion_logits", None)  # the cached path's kernels
                with torch.inference_mode():
                    dist = self.models[name].next_token_distributions(prompts, comps, temperature=temp, top_k=top_k,
                                                                      logits_fn=fast)
                fut.set_result(dist.clone())  # normal tensors: the learner's autograd may save them
            else:
                self.models[name].load_state_dict_from(payload)
                self.stats[name]["weight_updates"] += 1
                fut.set_result(self.models[name].version)
        except Exception as exc:
            fut.set_exception(exc)

    def _run_scores(self, name: str) -> None:
        pending, self._scores[name] = self._scores[name], []
        by_temp: dict[float, list] = {}
        for item in pending:
            by_temp.setdefault(item[0][2], []).append(item)
        for temp, items in by_temp.items():
            while items:
                chunk, rows = [], 0
                while items and (not chunk or rows + len(items[0][0][0]) <= self.max_score_rows):
                    chunk.append(items.pop(0))
                    rows += len(chunk[-1][0][0])
                self._score_chunk(name, temp, chunk)

    def _score_chunk(self, name: str, temp: float, chunk) -> None:
        prompts = [p for (ps, _, _), _ in chunk for p in ps]
        comps = [c for (_, cs, _), _ in chunk for c in cs]
        try:
            with torch.inference_mode():
                s = self.models[name].score(prompts, comps, temperature=temp)
        except Exception as exc:
            for _, fut in chunk:
                fut.set_exception(exc)
            return
        self.stats[name]["score_batches"] += 1
        start = 0
        for (ps, cs, _), fut in chunk:
            b, L = slice(start, start + len(ps)), max((len(c) for c in cs), default=0)
            fut.set_result(Scores(s.token_logprobs[b, :L].clone(), s.mask[b, :L].clone(),
                                  s.sequence_logprobs[b].clone(), s.entropies[b, :L].clone()))
            start += len(ps)

    def _reset(self, name: str, exc: BaseException) -> None:
        for fut in list(self._futures[name]):
            if not fut.done():
                fut.set_exception(exc)
        self._futures[name].clear()
        old = self.samplers[name]
        self.samplers[name] = Sampler(self.models[name], max_batch=old.max_batch, max_len=old.max_len,
                                      threads=old.threads.setting)

    def _fail_all(self, exc: BaseException) -> None:
        for name in self.models:
            for fut in list(self._futures[name]):
                if not fut.done():
                    fut.set_exception(exc)
            self._futures[name].clear()
            for _, fut in self._scores[name]:
                if not fut.done():
                    fut.set_exception(exc)
            self._scores[name] = []
        super()._fail_all(exc)
