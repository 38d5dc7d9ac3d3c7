"""KV-cached sampler with continuous batching.

Scheduling: requests wait in a FIFO; a request with ``n`` samples is ``n`` sequences.
Every :meth:`Sampler.step` (1) admits waiting sequences into free rows (prefill of the
new prompts only; the ``n`` samples of one prompt admitted together share one prefill
and copy its K/V), (2) runs ONE batched decode forward over all active rows, whatever
their lengths (each row has its own position; see :mod:`seedrl.models.lm.decoders`; on
the causal fast path the new prompts' prefill rides in the same forward),
(3) samples one token per row with vectorised torch ops and (4) retires finished rows,
whose slots the next step refills. Cache buffers are preallocated and grow by doubling.

Sampling of row ``b`` with logits ``z`` (temperature ``T``, top-k ``k``, top-p ``p``):
``z' = z / T``; keep the ``k`` largest (``k = 0``: all); then keep the smallest prefix of
the sorted distribution whose mass reaches ``p``; sample by inverse CDF with one uniform
``u`` per row and step from a counter-based generator (splitmix64 of the request seed,
the sample index and the step), so a seeded request draws the same numbers whatever the
batch composition (its tokens can differ only if a float-rounding difference of the
batched matmuls moves a CDF boundary across ``u``). ``T = 0`` is greedy (argmax).

Each completion carries two per-token log-probs of the sampled token ``y_n``:
``logprobs = log softmax(z)[y_n]`` (raw model, temperature 1: what ``LMPolicy.score``
recomputes) and ``sampling_logprobs = log q(y_n)`` under the actual filtered tempered
distribution (0 for greedy). ``finish_reason``: ``"eos"`` (an EOS id, kept as the last
token), ``"stop"`` (a stop token id, kept; or a stop string: the tokens up to the one that
completed it are kept, ``text`` is cut before the stop string unless
``include_stop_str_in_output``), ``"length"`` (``max_new_tokens`` or the context is full).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from seedrl.models.lm.decoders import make_backend
from seedrl.models.lm.threads import DecodeThreads

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _signed(x: int) -> int:
    x &= _M64
    return x - (1 << 64) if x >= 1 << 63 else x


def _mix_int(x: int) -> int:
    """splitmix64 finaliser on Python ints (mod 2^64)."""
    x = (x + _GOLDEN) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    return (x >> s) & ((1 << (64 - s)) - 1)


def counter_uniform(keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) doubles: splitmix64(key + (step + 1) * golden), vectorised on int64 (wrapping)."""
    x = keys + (steps + 1) * _signed(_GOLDEN)
    x = (x ^ _srl(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _srl(x, 27)) * _signed(0x94D049BB133111EB)
    x = x ^ _srl(x, 31)
    return _srl(x, 11).double() * (2.0 ** -53)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    n: int = 1
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        checks = [("temperature", self.temperature >= 0), ("top_k", self.top_k >= 0),
                  ("top_p", 0 < self.top_p <= 1), ("max_new_tokens", self.max_new_tokens >= 1),
                  ("n", self.n >= 1), ("stop_strings", all(isinstance(s, str) and s for s in self.stop_strings))]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)!r} is out of range")


@dataclass
class Completion:
    tokens: list[int]
    text: str
    logprobs: list[float]
    sampling_logprobs: list[float]
    finish_reason: str
    prompt_index: int = 0
    sample_index: int = 0
    weights_version: int = 0  # policy.version when the last token was sampled
    weights_version_start: int = 0  # policy.version when the sequence was admitted


@dataclass
class Request:
    prompt_ids: Sequence[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    callback: Callable[[GenerationHandle], None] | None = None


class GenerationHandle:
    """Result of :meth:`Sampler.submit`: ``done`` once all ``n`` samples finished;
    ``completions`` in sample order; the request ``callback`` runs (in the sampling
    thread) when done."""

    def __init__(self, request_id: int, request: Request):
        self.request_id, self.request = request_id, request
        self.completions: list[Completion | None] = [None] * request.params.n
        self._left = request.params.n

    @property
    def done(self) -> bool:
        return self._left == 0

    def result(self) -> list[Completion]:
        if not self.done:
            raise RuntimeError(f"request {self.request_id} is not finished (call step()/run_until_idle())")
        return list(self.completions)

    def _deliver(self, index: int, completion: Completion) -> None:
        self.completions[index] = completion
        self._left -= 1
        if self._left == 0 and self.request.callback is not None:
            self.request.callback(self)


@dataclass
class _Seq:
    handle: GenerationHandle
    index: int
    prompt: list[int]
    limit: int
    version_start: int = 0
    end_step: int = 0


class Sampler:
    """Continuous-batching sampler over one :class:`~seedrl.models.lm.policy.LMPolicy`.

    ``max_batch`` rows decode together; ``max_len`` bounds prompt + completion tokens of a
    causal row (default: the model context, else 2048) and the decoder length of a
    seq2seq row. Not thread-safe: one thread drives ``submit``/``step`` (the
    :class:`~seedrl.models.lm.server.GenerationServer` does this for many clients).

    ``pack_weights`` (GPT-2 / Llama-family fast path, fp32 on CPU): keep a oneDNN-blocked
    copy of the projection and ``lm_head`` weights, refreshed when a weight changes in
    place (GPT-2 small, batch 8: ~25% faster decode for ~0.5 GB more memory). ``None``
    (default) packs when that copy needs at most 1 GiB; ``False`` never packs (the
    projections still run through oneDNN, on the weights themselves).

    ``threads``: intra-op threads of each decode step (:mod:`seedrl.models.lm.threads`):
    ``None`` (default) keeps the caller's count; an int fixes it; ``"auto"`` measures the
    caller's count against fewer during the first steps and keeps the faster (small models on
    a busy machine or with sleeping OpenMP workers decode faster on one thread; log-probs may
    then differ in the last float bits from a fixed count's). The choice: ``sampler.threads.chosen``.
    """

    def __init__(self, policy, *, max_batch: int = 32, max_len: int | None = None, fast: bool = True,
                 pack_weights: bool | None = None, threads: int | str | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        self.threads = DecodeThreads(threads)
        ctx = policy.context_length
        self.policy, self.max_batch = policy, max_batch
        self.max_len = min(max_len or ctx or 2048, ctx or 1 << 62)
        self.backend = make_backend(policy, max_batch, self.max_len, fast=fast, pack_weights=pack_weights)
        self.waiting: deque[_Seq] = deque()
        self.rows: list[_Seq] = []
        self._ids = itertools.count()
        dev = policy.device
        B = max_batch
        z = lambda *shape, dtype=torch.long, fill=0: torch.full(shape, fill, dtype=dtype, device=dev)  # noqa: E731
        self.cur, self.pos, self.gen, self.limit = z(B), z(B), z(B), z(B)
        self.temp, self.topk, self.topp = z(B, dtype=torch.float32), z(B), z(B, dtype=torch.float32)
        self.eos, self.stops = z(B, max(1, len(policy.eos_token_ids)), fill=-1), z(B, 1, fill=-1)
        self.h_tok, self.h_lp, self.h_slp = z(B, 0), z(B, 0, dtype=torch.float32), z(B, 0, dtype=torch.float32)
        self.u = z(B, 0, dtype=torch.float64)  # per-row uniforms, one per step, drawn at admission
        self._steps = 0  # decode steps so far; row r finishes by length at step rows[r].end_step
        self._flags = _Flags()
        self._ar = torch.arange(B, device=dev)
        start = policy.config.decoder_start_token_id if policy.is_encoder_decoder else None
        self._start = policy.pad_token_id if start is None else int(start)

    # ------------------------------------------------------------------ requests
    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.rows)

    def submit(self, request: Request | Sequence[int], params: SamplingParams | None = None,
               callback: Callable[[GenerationHandle], None] | None = None) -> GenerationHandle:
        if not isinstance(request, Request):
            request = Request(list(request), params or SamplingParams(), callback)
        prompt = [int(t) for t in request.prompt_ids]
        rid, p = next(self._ids), request.params
        if not prompt:
            raise ValueError(f"request {rid}: prompt_ids is empty; a prompt needs at least one token")
        if min(prompt) < 0 or max(prompt) >= self.policy.vocab_size:
            raise ValueError(f"request {rid}: prompt token ids must lie in [0, {self.policy.vocab_size})")
        if self.policy.is_encoder_decoder:
            limit = min(p.max_new_tokens, self.max_len)
        else:
            if len(prompt) >= self.max_len:
                raise ValueError(f"request {rid}: prompt has {len(prompt)} tokens, no room to generate within "
                                 f"max_len={self.max_len} (context_length={self.policy.context_length})")
            limit = min(p.max_new_tokens, self.max_len - len(prompt))
        handle = GenerationHandle(rid, request)
        for i in range(p.n):
            self.waiting.append(_Seq(handle, i, prompt, limit))
        return handle

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None) -> list[Completion]:
        """Submit all prompts, run to completion; completions prompt-major (``n`` per prompt)."""
        handles = [self.submit(p, params) for p in prompts]
        self.run_until_idle()
        out = []
        for i, h in enumerate(handles):
            for c in h.result():
                c.prompt_index = i
                out.append(c)
        return out

    def run_until_idle(self) -> None:
        while self.has_work:
            self.step()

    # ------------------------------------------------------------------ scheduling
    def _row_tensors(self):
        return (self.cur, self.pos, self.gen, self.limit, self.temp, self.topk, self.topp,
                self.eos, self.stops, self.h_tok, self.h_lp, self.h_slp, self.u)

    def _grow_history(self, width: int) -> None:
        if width <= self.h_tok.shape[1]:
            return
        width = max(width, 2 * self.h_tok.shape[1])
        for name in ("h_tok", "h_lp", "h_slp", "u"):
            old = getattr(self, name)
            new = torch.zeros((old.shape[0], width), dtype=old.dtype, device=old.device)
            new[:, : old.shape[1]] = old
            setattr(self, name, new)

    def _admit(self) -> None:
        n, free = len(self.rows), self.max_batch - len(self.rows)
        if not self.waiting or free == 0:
            return
        batch = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        first: dict[int, int] = {}
        uniq, sibs = [], []
        for s in batch:
            (sibs if s.handle.request_id in first else uniq).append(s)
            first.setdefault(s.handle.request_id, n + len(uniq) - 1)
        order = uniq + sibs
        seq2seq = self.policy.is_encoder_decoder
        need = max(s.limit + (0 if seq2seq else len(s.prompt) - 1) for s in order)
        self.backend.reserve(need, max(len(s.prompt) for s in order) if seq2seq else 0)
        self._grow_history(max(s.limit for s in order))
        siblings = None
        if sibs:  # the n samples of one prompt: one prefill, then copies of its rows
            siblings = (torch.arange(n + len(uniq), n + len(order), device=self.cur.device),
                        torch.tensor([first[s.handle.request_id] for s in sibs], device=self.cur.device))
        self.backend.prefill(n, [s.prompt for s in uniq], siblings)  # the causal fast path runs it in the decode below
        version = self.policy.version
        stop_w = max(len(s.handle.request.params.stop_token_ids) for s in order)
        if stop_w > self.stops.shape[1]:
            extra = self.stops.new_full((self.max_batch, stop_w - self.stops.shape[1]), -1)
            self.stops = torch.cat([self.stops, extra], 1)
        eos = sorted(self.policy.eos_token_ids)
        # the new rows' state, one tensor write per field (a write per row and field cost ~15 small ops a row)
        k, dev = len(order), self.cur.device
        rows, ps = slice(n, n + k), [s.handle.request.params for s in order]
        for s in order:
            s.version_start, s.end_step = version, self._steps + s.limit
        longs = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731

        def put(buf: torch.Tensor, values: list) -> None:
            buf[rows] = torch.tensor(values, dtype=buf.dtype, device=dev)

        put(self.cur, [self._start if seq2seq else s.prompt[-1] for s in order])
        put(self.pos, [0 if seq2seq else len(s.prompt) - 1 for s in order])
        self.gen[rows] = 0
        put(self.limit, [s.limit for s in order])
        put(self.temp, [p.temperature for p in ps])
        put(self.topk, [p.top_k for p in ps])
        put(self.topp, [p.top_p for p in ps])
        seeds = [p.seed if p.seed is not None else int(torch.randint(0, 1 << 62, ())) for p in ps]  # torch's global RNG
        keys = longs([_signed(_mix_int(_mix_int(seed) ^ _mix_int(s.index + 1))) for seed, s in zip(seeds, order)])
        self.u[rows] = counter_uniform(keys[:, None], torch.arange(self.u.shape[1], device=dev)[None, :])
        self.eos[rows] = -1
        if eos:
            ends = torch.tensor([not p.ignore_eos for p in ps], device=dev)[:, None]
            self.eos[rows, : len(eos)] = torch.where(ends, longs(eos), -1)
        self.stops[rows] = -1
        for j, p in enumerate(ps):
            if p.stop_token_ids:
                self.stops[n + j, : len(p.stop_token_ids)] = longs(list(p.stop_token_ids))
        self.rows.extend(order)
        self._flags = _Flags.of(self.rows, bool(eos))

    def _sample(self, logits: torch.Tensor, n: int):
        """Tokens, raw log-probs and sampling log-probs for rows 0..n-1 (see module docstring)."""
        f, V = self._flags, logits.shape[-1]
        if f.all_t1 and not f.any_filter:  # plain sampling: one exp serves the log-probs and the CDF
            m = logits.amax(-1, keepdim=True)
            e = torch.exp(logits - m)  # the CDF needs no normalising: u is scaled by its last entry
            lse = m + e.sum(-1, keepdim=True).log_()
            tok, slp = self._pick(logits, lse, e.double().cumsum_(-1), None, n)
            return tok.squeeze(1), (logits.gather(1, tok) - lse).squeeze(1), slp.squeeze(1)
        lse = torch.logsumexp(logits, -1, keepdim=True)
        if f.all_greedy:
            tok = logits.argmax(-1, keepdim=True)
            return tok.squeeze(1), (logits.gather(1, tok) - lse).squeeze(1), torch.zeros_like(lse).squeeze(1)
        temp, topk, topp = self.temp[:n], self.topk[:n], self.topp[:n]
        greedy = temp == 0
        scaled, slse, order = logits, lse, None
        if not f.all_t1:
            scaled = logits / torch.where(greedy, 1.0, temp)[:, None]
        if f.any_filter:
            scaled, order = scaled.sort(-1, descending=True)
            ranks = torch.arange(V, device=logits.device)[None, :]
            scaled = scaled.masked_fill(ranks >= torch.where(topk > 0, topk, V)[:, None], float("-inf"))
            probs = torch.softmax(scaled, -1)
            before = probs.cumsum(-1) - probs  # mass of the strictly better tokens
            scaled = scaled.masked_fill((before >= topp[:, None]) & (topp < 1)[:, None], float("-inf"))
        if scaled is not logits:
            slse = torch.logsumexp(scaled, -1, keepdim=True)
        tok, slp = self._pick(scaled, slse, torch.exp(scaled - slse).double().cumsum_(-1), order, n)
        if f.any_greedy:
            tok = torch.where(greedy[:, None], logits.argmax(-1, keepdim=True), tok)
            slp = torch.where(greedy[:, None], 0.0, slp)
        return tok.squeeze(1), (logits.gather(1, tok) - lse).squeeze(1), slp.squeeze(1)

    def _pick(self, scaled, slse, cdf, order, n: int):
        """Inverse-CDF draw of rows 0..n-1 from ``cdf`` (of ``scaled``, any positive scale; ``order``:
        sorted position -> token, or None): tokens and sampling log-probs, ``[n, 1]`` each."""
        u = self.u[self._ar[:n], self.gen[:n]]
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=scaled.shape[-1] - 1)
        tok = pick if order is None else order.gather(1, pick)
        return tok, scaled.gather(1, pick) - slse

    def step(self) -> int:
        """Admit waiting sequences, decode one token for every active row; returns the number
        of tokens produced (0 when idle)."""
        with torch.inference_mode():
            self._admit()
            n = len(self.rows)
            if n == 0:
                return 0
            with self.threads.step():
                logits = self.backend.decode(n, self.cur[:n], self.pos[:n])
                tok, lp, slp = self._sample(logits, n)
            ar, g = self._ar[:n], self.gen[:n]
            self.h_tok[ar, g], self.h_lp[ar, g], self.h_slp[ar, g] = tok, lp, slp
            self.gen[:n] += 1
            self.pos[:n] += 1
            self.cur[:n] = tok
            self._steps += 1
            f = self._flags
            finished: dict[int, tuple[str, str | None]] = {}
            if f.check_ends:
                is_eos = (tok[:, None] == self.eos[:n]).any(1)
                is_stop = (tok[:, None] == self.stops[:n]).any(1)
                hit = is_eos | is_stop
                if bool(hit.any()):
                    for r in hit.nonzero().flatten().tolist():
                        finished[r] = ("eos" if is_eos[r] else "stop", None)
            if self._steps >= f.first_end:
                for r, s in enumerate(self.rows):
                    if s.end_step <= self._steps and r not in finished:
                        finished[r] = ("length", None)
            for r in f.string_rows:
                if r not in finished:
                    cut = self._find_stop(r, self.rows[r])
                    if cut is not None:
                        finished[r] = ("stop", cut)
            if finished:
                self._retire(finished)
            return n

    def _find_stop(self, r: int, s: _Seq) -> str | None:
        p = s.handle.request.params
        text = self.policy.decode(self.h_tok[r, : int(self.gen[r])].tolist())
        hits = [(i, stop) for stop in p.stop_strings if (i := text.find(stop)) >= 0]
        if not hits:
            return None
        i, stop = min(hits)
        return text[: i + len(stop)] if p.include_stop_str_in_output else text[:i]

    def _retire(self, finished: dict[int, tuple[str, str | None]]) -> None:
        version = self.policy.version
        for r, (reason, text) in finished.items():
            s, g = self.rows[r], int(self.gen[r])
            tokens = self.h_tok[r, :g].tolist()
            c = Completion(tokens, self.policy.decode(tokens) if text is None else text,
                           self.h_lp[r, :g].tolist(), self.h_slp[r, :g].tolist(), reason,
                           sample_index=s.index, weights_version=version, weights_version_start=s.version_start)
            s.handle._deliver(s.index, c)
        n = len(self.rows)
        keep = [r for r in range(n) if r not in finished]
        m = len(keep)
        movers = [r for r in keep if r >= m]
        holes = [r for r in range(m) if r in finished]
        if movers:
            dst = torch.tensor(holes, device=self.cur.device)
            src = torch.tensor(movers, device=self.cur.device)
            self.backend.copy_rows(dst, src)
            for t in self._row_tensors():
                t[dst] = t[src]
            for h, mv in zip(holes, movers):
                self.rows[h] = self.rows[mv]
        del self.rows[m:]
        self._flags = _Flags.of(self.rows, bool(self.policy.eos_token_ids))


@dataclass
class _Flags:
    """Python-side summary of the active rows, so a step skips work no row needs."""

    all_greedy: bool = False
    any_greedy: bool = False
    all_t1: bool = True
    any_filter: bool = False
    check_ends: bool = False
    first_end: float = float("inf")
    string_rows: tuple[int, ...] = ()

    @classmethod
    def of(cls, rows: list[_Seq], has_eos: bool) -> _Flags:
        ps = [s.handle.request.params for s in rows]
        return cls(
            all_greedy=all(p.temperature == 0 for p in ps),
            any_greedy=any(p.temperature == 0 for p in ps),
            all_t1=all(p.temperature == 1 for p in ps),
            any_filter=any(p.top_k > 0 or p.top_p < 1 for p in ps),
            check_ends=any(p.stop_token_ids or (has_eos and not p.ignore_eos) for p in ps),
            first_end=min((s.end_step for s in rows), default=float("inf")),
            string_rows=tuple(r for r, p in enumerate(ps) if p.stop_strings),
        )
