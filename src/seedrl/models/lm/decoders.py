"""KV-cached forward passes used by the sampler ("backends").

Cache layout: per layer, keys and values live in zero-initialised buffers
``[rows, kv_heads, capacity, head_dim]``. Row ``r`` holds one sequence and its token at
position ``t`` sits in column ``t`` (left-aligned: every row has its own position clock,
so rows of different lengths share one buffer without padding the short ones on the
left). The sampler keeps the active rows compact in ``0..n-1`` (``copy_rows`` moves a
surviving row into the hole a finished one left).

* ``prefill(row0, prompts, siblings)``: causal models write the K/V of ``prompt[:-1]`` into
  rows ``row0..row0+k-1`` (right-padded; pad columns hold finite values that a decode step
  overwrites before they are ever unmasked), then copy them to the ``siblings = (dst, src)``
  rows; encoder-decoder models run the encoder once and store the cross-attention K/V. The
  causal fast path defers this to the next ``decode``, which runs the prompts' tokens in its
  own forward (a tiny model's forward costs its ~90 kernel launches whatever the tokens, so
  a step that admits prompts costs one forward, not two).
* ``decode(n, tokens, positions)``: one forward of the current token of rows ``0..n-1``
  (row ``b``'s token at position ``positions[b]``), writing its K/V at column
  ``positions[b]`` and attending to columns ``<= positions[b]`` (additive mask
  ``[n, 1, 1, T]`` of 0 / -inf, ``T = max(positions) + 1``); returns logits ``[n, V]``.

The fast paths call the model's own submodules (embeddings, norms, projections, MLPs;
LoRA-wrapped ones included) and replace only the attention/cache plumbing, so their
log-probs agree with a full ``model(...)`` forward to float rounding. In the GPT-2 /
Llama-family path, plain fp32 CPU ``nn.Linear`` / ``Conv1D`` projections (``lm_head``
included) run as oneDNN inner products on the same weights, or on a oneDNN-blocked copy
of them (``pack``; see :class:`_Gemm`), with tanh-GELU and residual adds fused. Dropout
is never applied. Other architectures use :class:`UncachedBackend` (full re-forward per step).
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from transformers.activations import NewGELUActivation
from transformers.pytorch_utils import Conv1D

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
#: products of fewer multiply-adds (rows x weight elements) run through the module's own forward, not oneDNN (:class:`_Gemm`)
ONEDNN_MIN_MACS = 1 << 20
PACK_AUTO_BYTES = 1 << 30  # CausalBackend(pack=None) packs the weights when their copy needs no more


class _KV:
    """Per-layer key/value buffers that grow (by copy, doubling up to ``limit``) to the
    capacity asked for."""

    def __init__(self, layers: int, rows: int, heads: int, head_dim: int, dtype, device, limit: int = 1 << 62):
        self.shape, self.limit = (rows, heads, 0, head_dim), limit
        self.dtype, self.device = dtype, device
        self.k = [torch.zeros(self.shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(self.shape, dtype=dtype, device=device) for _ in range(layers)]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    def reserve(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        new = max(capacity, min(-(-2 * self.capacity // 16) * 16, self.limit))
        rows, heads, _, dim = self.shape
        for buf in (self.k, self.v):
            for i, old in enumerate(buf):
                grown = torch.zeros((rows, heads, new, dim), dtype=self.dtype, device=self.device)
                grown[:, :, : old.shape[2]] = old
                buf[i] = grown

    def copy_rows(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        for buf in (self.k, self.v):
            for t in buf:
                t[dst] = t[src]


def _prefill_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``[k, 1, width, width]``: causal and key < length; key 0 always visible (no empty rows)."""
    ar = torch.arange(width, device=lengths.device)
    mask = (ar[None, :] <= ar[:, None])[None] & (ar[None, None, :] < lengths[:, None, None])
    mask[:, :, 0] = True
    return mask[:, None]


def _pad(seqs, width: int, value: int, device) -> torch.Tensor:
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for b, s in enumerate(seqs):
        if len(s):
            out[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out.to(device)


def _linear(mod, x: torch.Tensor) -> torch.Tensor:
    """``mod(x)`` for a 2-D ``x``, skipping module dispatch for plain Linear / GPT-2 Conv1D
    (LoRA-wrapped or other modules are called as they are)."""
    t = type(mod)
    if t is torch.nn.Linear:
        return F.linear(x, mod.weight, mod.bias)
    if t is Conv1D:
        return torch.addmm(mod.bias, x, mod.weight)
    return mod(x)


def _onednn_linear_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except Exception:  # noqa: BLE001 - an odd build without the op: the plain path
        return False


class _Gemm:
    """Projections of the causal fast path (prefill and decode) through oneDNN
    (``torch.ops.mkldnn._linear_pointwise``).

    At the skinny shapes of decoding (``n`` rows of a few to a few dozen tokens) MKL's
    ``addmm`` reaches a fraction of the memory bandwidth, oneDNN's inner-product about
    twice as much (GPT-2 small, batch 8: ``lm_head`` 22 -> 10 ms). It also fuses the
    tanh-GELU after ``c_fc`` and the residual add after the output projections. fp32 CPU
    weights of plain ``nn.Linear`` / GPT-2 ``Conv1D`` only (a ``Conv1D`` weight is passed
    as its transposed view, no copy); LoRA-wrapped and other modules, other dtypes and
    devices take the module's own forward. ``pack=True`` keeps a oneDNN-blocked copy of
    every weight (one more copy of the model, ~25% faster GEMMs), repacked when the
    parameter changes (in-place updates bump its version counter).

    Products under :data:`ONEDNN_MIN_MACS` multiply-adds (rows x weight elements) also take
    the module's own forward (MKL): a oneDNN call costs ~25 us before any arithmetic, more
    than a small product's whole time (1 thread: ``[8, 64] x [64, 192]`` 31 us against
    ``F.linear``'s 8; ``[16, 256] x [256, 768]`` about even; ``lm_head``
    ``[16, 256] x [256, 8192]`` packed 990 us against 1,180)."""

    def __init__(self, enabled: bool, pack: bool = False, batch_hint: int = 8):
        self.enabled, self.pack = enabled and _onednn_linear_available(), pack
        self.batch_hint = max(1, batch_hint)
        self._packed: dict[int, tuple] = {}
        if self.enabled:
            self.pw = torch.ops.mkldnn._linear_pointwise.default
            self.pw_binary = torch.ops.mkldnn._linear_pointwise.binary

    def weight(self, mod) -> torch.Tensor | None:
        """The weight oneDNN multiplies by (``[out, in]``), or ``None`` for the module's own forward.

        Cached per module: the entry is rebuilt when the module's weight is another tensor, and
        (packed copies only) when the weight changed in place (its version counter moved)."""
        hit = self._packed.get(id(mod))
        if hit is not None and hit[0] is mod:
            _, params, p, ver, w = hit
            if params.get("weight") is p and (not self.pack or w is None or p._version == ver):
                return w
        return self._weight_entry(mod)

    def _weight_entry(self, mod) -> torch.Tensor | None:
        t = type(mod)
        params = mod._parameters
        p = params.get("weight")
        w = None
        if t in (torch.nn.Linear, Conv1D) and p.dtype == torch.float32 and p.device.type == "cpu":
            w = p if t is torch.nn.Linear else p.t()
        ver = 0
        if w is not None and self.pack:
            try:
                ver = p._version
            except RuntimeError:  # an inference tensor has no version counter: no safe cache
                return w
            w = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), self.batch_hint)
        self._packed[id(mod)] = (mod, params, p, ver, w)
        return w

    def routed_weight(self, mod, rows: int) -> torch.Tensor | None:
        """:meth:`weight` for a product of ``rows`` rows, ``None`` when it is too small for oneDNN."""
        p = mod._parameters.get("weight") if self.enabled else None
        if p is None or rows * p.numel() < ONEDNN_MIN_MACS:  # decided before any packed copy is made
            return None
        return self.weight(mod)

    def __call__(self, mod, x: torch.Tensor, *, gelu_tanh: bool = False, act=None,
                 add: torch.Tensor | None = None) -> torch.Tensor:
        """``add + act(mod(x))`` for a 2-D ``x`` (``act`` / ``add`` optional; ``gelu_tanh``:
        ``act`` is exactly tanh-GELU and may be fused)."""
        w = self.routed_weight(mod, x.shape[0])
        if w is None:
            y = _linear(mod, x)
            if act is not None:
                y = act(y)
            return y if add is None else add + y
        bias = mod._parameters["bias"]
        if add is not None and act is None:
            y = self.pw_binary(x, add, w, bias, "add")
        elif gelu_tanh:
            y = self.pw(x, w, bias, "gelu", [], "tanh")
        else:
            y = self.pw(x, w, bias, "none", [], "")
        if act is not None and not gelu_tanh:
            y = act(y)
        return y if add is None or act is None else add + y


def _act(mod):
    """The MLP activation as a function; GPT-2's ``gelu_new`` is exactly tanh-GELU (one fused op)."""
    if type(mod) is NewGELUActivation:
        return lambda h: F.gelu(h, approximate="tanh")
    return mod


def _norm(mod):
    """Layer norm as a function; the Llama-family RMSNorm ``w * x / sqrt(mean(x^2) + eps)`` fused;
    ``nn.LayerNorm`` as ``F.layer_norm`` on its parameters (same kernel, no module dispatch)."""
    if type(mod).__name__ in ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"):
        return lambda h: F.rms_norm(h, (h.shape[-1],), mod.weight, mod.variance_epsilon)
    if type(mod) is torch.nn.LayerNorm:  # the module's own kernel, without the module call
        params, shape, eps = mod._parameters, mod.normalized_shape, mod.eps
        return lambda h: F.layer_norm(h, shape, params["weight"], params["bias"], eps)
    return mod


def _decode_attention(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """One query per row: ``softmax(scale * q K^T + mask) V`` as two batched matmuls, ``[n, H * D]``.

    ``q [n, H, 1, D]``; ``K``, ``V [n, Hkv, T, D]``: views of the cache (row stride = capacity,
    no copy); ``mask [n * Hkv, 1, T]`` additive. Query head ``h`` reads key/value head
    ``h // (H / Hkv)`` (grouped-query attention, as HF's ``repeat_kv``), so the ``H / Hkv`` query
    heads of a group are the rows of one matmul. For a single query, SDPA's CPU kernel costs
    ~3x these two calls (tiny GPT-2, 16 rows)."""
    n, H, _, D = q.shape
    kvh, T = K.shape[1], K.shape[2]
    g = H // kvh
    scores = torch.baddbmm(mask, q.reshape(n * kvh, g, D), K.reshape(n * kvh, T, D).transpose(1, 2), alpha=scale)
    return torch.bmm(torch.softmax(scores, -1), V.reshape(n * kvh, T, D)).view(n, H * D)


class CausalBackend:
    """GPT-2 and Llama-style (llama, mistral, qwen2, qwen3) decoder-only models.

    ``onednn``: projections through :class:`_Gemm` (else the modules' own forward);
    ``pack``: keep oneDNN-blocked weight copies (``None``: when they need <= 1 GiB)."""

    is_encoder_decoder = False

    def __init__(self, policy, max_batch: int, max_len: int, *, onednn: bool = True, pack: bool | None = None):
        base = policy.base_model
        cfg = base.config
        if pack is None:  # auto: pack when the extra copy is small (<= 1 GiB)
            pack = sum(m.weight.numel() * m.weight.element_size() for m in base.modules()
                       if type(m) in (torch.nn.Linear, Conv1D)) <= PACK_AUTO_BYTES
        self.gemm = _Gemm(onednn, pack, max_batch)
        self.policy = policy
        self.core = getattr(base, base.base_model_prefix)
        self.lm_head = base.get_output_embeddings()
        self.gpt2 = cfg.model_type == "gpt2"
        p = next(base.parameters())
        if self.gpt2:
            self.layers = self.core.h
            heads = kv_heads = cfg.n_head
            self.head_dim = cfg.n_embd // cfg.n_head
            self.norm = self.core.ln_f
            self.acts = [_act(b.mlp.act) for b in self.layers]
            self.gelu_tanh = [type(b.mlp.act) is NewGELUActivation for b in self.layers]
            self.norms = [(_norm(b.ln_1), _norm(b.ln_2)) for b in self.layers]
        else:
            self.layers = self.core.layers
            heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
            self.head_dim = self.layers[0].self_attn.head_dim
            self.norm = self.core.norm
            self.rope_fn = importlib.import_module(type(self.layers[0].self_attn).__module__).apply_rotary_pos_emb
            self.acts = [b.mlp.act_fn for b in self.layers]
            self.gelu_tanh = [False] * len(self.layers)
            self.norms = [(_norm(b.input_layernorm), _norm(b.post_attention_layernorm)) for b in self.layers]
        self.final_norm = _norm(self.norm)
        self.heads, self.kv_heads, self.gqa = heads, kv_heads, kv_heads != heads
        self.cache = _KV(len(self.layers), max_batch, kv_heads, self.head_dim, p.dtype, p.device, max_len)
        self.device = p.device
        self._ar = torch.arange(max(max_batch, heads), device=p.device)
        self._cols = torch.arange(0, device=p.device)
        self._pending: _Prefill | None = None  # a prefill the next decode computes

    def reserve(self, length: int, source_length: int = 0) -> None:
        self.cache.reserve(length)
        if self._cols.numel() < self.cache.capacity:
            self._cols = torch.arange(self.cache.capacity, device=self.device)

    def copy_rows(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        self._flush()
        self.cache.copy_rows(dst, src)

    def _attend(self, i: int, x: torch.Tensor, h: torch.Tensor, attention, rope) -> torch.Tensor:
        """``x`` + self-attention of ``h``: ``[n, L, E]`` rows (prefill layout: ``q``, ``k``, ``v`` reach
        ``attention`` as ``[n, H, L, D]``) or ``[N, E]`` tokens (decode layout: ``[N, H, 1, D]``).
        ``attention(i, q, k, v, scale)`` writes the cache as it needs and returns ``[tokens, H * D]``."""
        blk, lin = self.layers[i], self.gemm
        lead, E = h.shape[:-1], h.shape[-1]
        h2 = h.reshape(-1, E)
        if self.gpt2:
            a = blk.attn
            qkv = lin(a.c_attn, h2).view(*lead, 3, self.heads, self.head_dim)
            q, k, v = qkv.unbind(-3)
        else:
            a = blk.self_attn
            q = lin(a.q_proj, h2).view(*lead, self.heads, self.head_dim)
            k = lin(a.k_proj, h2).view(*lead, self.kv_heads, self.head_dim)
            v = lin(a.v_proj, h2).view(*lead, self.kv_heads, self.head_dim)
            if hasattr(a, "q_norm"):
                q, k = a.q_norm(q), a.k_norm(k)
        if len(lead) == 1:  # decode: [N, H, D] -> [N, H, 1, D]
            q, k, v = q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2)
        else:  # prefill: [n, L, H, D] -> [n, H, L, D]
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if not self.gpt2:
            q, k = self.rope_fn(q, k, *rope)
        o = attention(i, q, k, v, a.scaling)
        return lin(a.c_proj if self.gpt2 else a.o_proj, o, add=x.reshape(-1, E)).view(x.shape)

    def _rows_attention(self, q, k, v, mask: torch.Tensor, scale: float) -> torch.Tensor:
        """Causal attention of whole rows ``[n, H, L, D]`` (prefill layout) -> ``[n * L, H * D]``."""
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=self.gqa)
        return o.transpose(1, 2).reshape(-1, self.heads * self.head_dim)

    def _mlp(self, i: int, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x`` + MLP of ``h``."""
        m, act, lin = self.layers[i].mlp, self.acts[i], self.gemm
        E = h.shape[-1]
        h, res = h.reshape(-1, E), x.reshape(-1, E)
        if self.gpt2:
            out = lin(m.c_proj, lin(m.c_fc, h, act=act, gelu_tanh=self.gelu_tanh[i]), add=res)
        else:
            out = lin(m.down_proj, lin(m.gate_proj, h, act=act) * lin(m.up_proj, h), add=res)
        return out.view(x.shape)

    def _run(self, ids: torch.Tensor, pos: torch.Tensor, attention) -> torch.Tensor:
        """The decoder stack on token ids ``[N]`` at positions ``[N]`` (decode layout) or ``[n, L]``."""
        if self.gpt2:
            x, rope = self.core.wte(ids) + self.core.wpe(pos), None
        else:
            x = self.core.embed_tokens(ids)
            cos, sin = self.core.rotary_emb(x, pos if pos.dim() == 2 else pos[:, None])
            rope = (cos, sin) if pos.dim() == 2 else (cos[:, :1], sin[:, :1])
        for i in range(len(self.layers)):
            n1, n2 = self.norms[i]
            x = self._attend(i, x, n1(x), attention, rope)
            x = self._mlp(i, x, n2(x))
        return x

    def prefill(self, row0: int, prompts, siblings: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Rows ``row0..row0+k-1`` take these prompts; ``siblings = (dst, src)`` rows then copy their
        cache. Deferred: the next :meth:`decode` computes the K/V of every ``prompt[:-1]`` in the
        same forward as its decode tokens (one pass over the layers instead of two; each row's
        last prompt token is that decode's token). A second prefill or a :meth:`copy_rows`
        before that decode first runs this one on its own (:meth:`_flush`)."""
        self._flush()
        pending = _Prefill.of(row0, prompts, siblings, self.device)
        if pending.width > 0:
            self._pending = pending
        elif siblings is not None:  # one-token prompts: no K/V to compute, only the rows to copy
            self.cache.copy_rows(*siblings)

    def _flush(self) -> None:
        """Run a deferred prefill on its own (a forward over the prompts only)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return

        def attention(i, q, k, v, scale):
            pending.write(self.cache, i, k, v)
            return self._rows_attention(q, k, v, pending.mask, scale)

        self._run(pending.ids, pending.pos, attention)

    def completion_logits(self, prompt_ids, completion_ids) -> torch.Tensor:
        """:meth:`LMPolicy.completion_logits <seedrl.models.lm.policy.LMPolicy.completion_logits>`
        through this path (inference only: no gradient through the oneDNN projections): the
        stack over the right-padded rows ``prompt + completion`` (causal and padding mask, no
        cache), then the final norm and ``lm_head`` at the completion positions only."""
        from seedrl.models.lm.policy import completion_positions

        P, C = self.policy.check_rows(prompt_ids, completion_ids)
        seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
        width, B = max(len(s) for s in seqs), len(seqs)
        ids = _pad(seqs, width, 0, self.device)
        pos = torch.arange(width, device=self.device).expand(B, width)
        mask = _prefill_mask(torch.tensor([len(s) for s in seqs], device=self.device), width)
        if max(C, default=0) == 0:
            return torch.zeros((B, 0, self.lm_head.weight.shape[0]), device=self.device)
        x = self._run(ids, pos, lambda i, q, k, v, scale: self._rows_attention(q, k, v, mask, scale))
        x = x[torch.arange(B, device=self.device)[:, None], completion_positions(P, C, self.device)]
        return self.gemm(self.lm_head, self.final_norm(x).reshape(-1, x.shape[-1])).view(B, x.shape[1], -1).float()

    def decode(self, n: int, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, V]`` of rows ``0..n-1``'s tokens; a deferred :meth:`prefill`'s prompts go
        through the same forward: their padded ``prompt[:-1]`` tokens follow the ``n`` decode
        tokens, every projection and MLP runs once over all of them, and only attention is
        split (the prompts' causal attention among themselves, written to the cache first; then
        every decode token's attention over its row's cache, new rows included)."""
        pending, self._pending = self._pending, None
        T = int(positions.max()) + 1
        future = (self._cols[:T][None, :] > positions[:, None])[:, None, None, :]
        mask = torch.zeros(future.shape, dtype=self.cache.dtype, device=self.device).masked_fill_(future, -torch.inf)
        kvh, D, cap = self.kv_heads, self.head_dim, self.cache.capacity
        fp32 = self.cache.dtype == torch.float32
        if fp32:  # [n * kv_heads, 1, T], for _decode_attention
            mask = mask.expand(n, kvh, 1, T).reshape(n * kvh, 1, T)
        # flat row of (row b, head h, column positions[b]) in a [rows * kv_heads * capacity, D] view
        at = ((self._ar[:n, None] * kvh + self._ar[None, :kvh]) * cap + positions[:, None]).reshape(-1)
        ids, pos = tokens, positions
        if pending is not None:
            ids, pos = torch.cat([tokens, pending.ids.reshape(-1)]), torch.cat([positions, pending.pos.reshape(-1)])

        def attention(i, q, k, v, scale):
            ck, cv = self.cache.k[i], self.cache.v[i]
            prompt_out = None
            if pending is not None:  # the prompts' tokens follow the n decode tokens: [k * W, H, 1, D] -> [k, H, W, D]
                qp, kp, vp = (t[n:].squeeze(2).unflatten(0, pending.ids.shape).transpose(1, 2) for t in (q, k, v))
                pending.write(self.cache, i, kp, vp)
                prompt_out = self._rows_attention(qp, kp, vp, pending.mask, scale)
                q, k, v = q[:n], k[:n], v[:n]
            ck.view(-1, D).index_copy_(0, at, k.reshape(-1, D))
            cv.view(-1, D).index_copy_(0, at, v.reshape(-1, D))
            K, V = ck[:n, :, :T], cv[:n, :, :T]
            if fp32:  # batched matmuls on the cache views
                o = _decode_attention(q, K, V, mask, scale)
            else:
                o = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, scale=scale, enable_gqa=self.gqa)
                o = o.squeeze(2).reshape(-1, self.heads * self.head_dim)
            return o if prompt_out is None else torch.cat([o, prompt_out])

        x = self._run(ids, pos, attention)
        x = self.final_norm(x[:n] if pending is not None else x)
        return self.gemm(self.lm_head, x).float()


class _Prefill:
    """A prefill of ``k`` causal prompts into rows ``row0..``: their ``prompt[:-1]`` right-padded to
    ``width`` (``ids``, ``pos`` ``[k, width]``), the causal and length ``mask``, and the sibling
    rows that copy their cache once it is written."""

    def __init__(self, row0: int, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, siblings):
        self.rows, self.ids, self.pos, self.mask, self.siblings = slice(row0, row0 + ids.shape[0]), ids, pos, mask, siblings
        self.width = ids.shape[1]

    @classmethod
    def of(cls, row0: int, prompts, siblings, device) -> "_Prefill":
        lengths = [len(p) - 1 for p in prompts]
        width = max(lengths)
        ids = _pad([p[:-1] for p in prompts], width, 0, device)
        pos = torch.arange(width, device=device).expand(len(prompts), width)
        mask = _prefill_mask(torch.tensor(lengths, device=device), width) if width else None  # width 0: never run
        return cls(row0, ids, pos, mask, siblings)

    def write(self, cache: _KV, i: int, key: torch.Tensor, val: torch.Tensor) -> None:
        """Layer ``i``'s K/V ``[k, kv_heads, width, D]`` into the rows, then into their siblings."""
        cache.k[i][self.rows, :, : self.width] = key
        cache.v[i][self.rows, :, : self.width] = val
        if self.siblings is not None:
            dst, src = self.siblings
            cache.k[i][dst] = cache.k[i][src]
            cache.v[i][dst] = cache.v[i][src]


class T5Backend:
    """T5-family encoder-decoder: encoder once per request, decoder self-attention KV cache,
    cross-attention K/V computed once; relative position bias per row from its own position."""

    is_encoder_decoder = True

    def __init__(self, policy, max_batch: int, max_len: int):
        base = policy.base_model
        cfg = base.config
        self.base, self.enc, self.dec = base, base.get_encoder(), base.get_decoder()
        self.blocks = self.dec.block
        self.attn0 = self.blocks[0].layer[0].SelfAttention
        self.heads, self.head_dim = cfg.num_heads, cfg.d_kv
        self.scale_out = cfg.d_model ** -0.5 if getattr(cfg, "scale_decoder_outputs", cfg.tie_word_embeddings) else None
        p = next(base.parameters())
        self.device, self.dtype = p.device, p.dtype
        L = len(self.blocks)
        self.cache = _KV(L, max_batch, self.heads, self.head_dim, p.dtype, p.device, max_len)
        self.cross = _KV(L, max_batch, self.heads, self.head_dim, p.dtype, p.device)
        self.src_len = torch.zeros(max_batch, dtype=torch.long, device=p.device)
        self.pad_id = policy.pad_token_id

    def reserve(self, length: int, source_length: int = 0) -> None:
        self.cache.reserve(length)
        self.cross.reserve(source_length)

    def copy_rows(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        self.cache.copy_rows(dst, src)
        self.cross.copy_rows(dst, src)
        self.src_len[dst] = self.src_len[src]

    def prefill(self, row0: int, prompts, siblings: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Encode the prompts into rows ``row0..`` (cross-attention K/V); ``siblings = (dst, src)`` copy them."""
        k, S = len(prompts), max(len(p) for p in prompts)
        ids = _pad(prompts, S, self.pad_id, self.device)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        att = (torch.arange(S, device=self.device)[None, :] < lengths[:, None]).long()
        h = self.enc(input_ids=ids, attention_mask=att).last_hidden_state
        for i, blk in enumerate(self.blocks):
            ca = blk.layer[1].EncDecAttention
            self.cross.k[i][row0 : row0 + k, :, :S] = ca.k(h).view(k, S, self.heads, -1).transpose(1, 2)
            self.cross.v[i][row0 : row0 + k, :, :S] = ca.v(h).view(k, S, self.heads, -1).transpose(1, 2)
        self.src_len[row0 : row0 + k] = lengths
        if siblings is not None:
            self.copy_rows(*siblings)

    def decode(self, n: int, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        dev, neg = self.device, torch.finfo(self.dtype).min
        T = int(positions.max()) + 1
        S = int(self.src_len[:n].max())
        cols = torch.arange(T, device=dev)
        a0 = self.attn0
        buckets = a0._relative_position_bucket(cols[None, :] - positions[:, None], bidirectional=False,
                                               num_buckets=a0.relative_attention_num_buckets,
                                               max_distance=a0.relative_attention_max_distance)
        bias = a0.relative_attention_bias(buckets).permute(0, 2, 1)[:, :, None, :]  # [n, H, 1, T]
        self_mask = bias.masked_fill((cols[None, :] > positions[:, None])[:, None, None, :], neg).to(self.dtype)
        cross_mask = torch.zeros((n, 1, 1, S), dtype=self.dtype, device=dev).masked_fill(
            (torch.arange(S, device=dev)[None, :] >= self.src_len[:n, None])[:, None, None, :], neg)
        rows = torch.arange(n, device=dev)
        x = self.dec.embed_tokens(tokens[:, None])
        shape = (n, 1, self.heads, self.head_dim)
        for i, blk in enumerate(self.blocks):
            sa_layer, ca_layer, ff = blk.layer[0], blk.layer[1], blk.layer[2]
            sa = sa_layer.SelfAttention
            h = sa_layer.layer_norm(x)
            q, k, v = (m(h).view(shape).transpose(1, 2) for m in (sa.q, sa.k, sa.v))
            ck, cv = self.cache.k[i], self.cache.v[i]
            ck[rows, :, positions] = k[:, :, 0]
            cv[rows, :, positions] = v[:, :, 0]
            o = F.scaled_dot_product_attention(q, ck[:n, :, :T], cv[:n, :, :T], attn_mask=self_mask, scale=1.0)
            x = x + sa.o(o.transpose(1, 2).reshape(n, 1, -1))
            ca = ca_layer.EncDecAttention
            q = ca.q(ca_layer.layer_norm(x)).view(shape).transpose(1, 2)
            o = F.scaled_dot_product_attention(q, self.cross.k[i][:n, :, :S], self.cross.v[i][:n, :, :S],
                                               attn_mask=cross_mask, scale=1.0)
            x = x + ca.o(o.transpose(1, 2).reshape(n, 1, -1))
            x = ff(x)
        x = self.dec.final_layer_norm(x[:, -1])
        if self.scale_out is not None:
            x = x * self.scale_out
        return self.base.lm_head(x).float()


class UncachedBackend:
    """Any architecture: re-runs the full forward (``policy.completion_logits``) every step.
    Correct but quadratic in length; used when no cached fast path fits the model."""

    def __init__(self, policy, max_batch: int, max_len: int):
        self.policy = policy
        self.is_encoder_decoder = policy.is_encoder_decoder
        self.prompts: list[list[int]] = [[] for _ in range(max_batch)]
        self.fed: list[list[int]] = [[] for _ in range(max_batch)]

    def reserve(self, length: int, source_length: int = 0) -> None:
        pass

    def copy_rows(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        moved = [(list(self.prompts[s]), list(self.fed[s])) for s in src.tolist()]
        for d, (p, f) in zip(dst.tolist(), moved):
            self.prompts[d], self.fed[d] = p, f

    def prefill(self, row0: int, prompts, siblings: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        for j, p in enumerate(prompts):
            self.prompts[row0 + j] = list(p)
            self.fed[row0 + j] = []
        if siblings is not None:
            self.copy_rows(*siblings)

    def decode(self, n: int, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        for b, t in enumerate(tokens.tolist()):
            self.fed[b].append(t)
        # fed = [x_P, y_1..y_t] (causal; the prompt already ends with x_P) or [start, y_1..y_t]
        # (seq2seq); a dummy last token makes completion_logits return the row predicting y_{t+1}
        prompts, comps = self.prompts[:n], [f[1:] + [0] for f in self.fed[:n]]
        logits = self.policy.completion_logits(prompts, comps)
        last = torch.tensor([len(c) - 1 for c in comps], device=logits.device)
        return logits[torch.arange(n, device=logits.device), last].float()


def make_backend(policy, max_batch: int, max_len: int, *, fast: bool = True, pack_weights: bool | None = None):
    """The cached fast path for the architecture when there is one, else :class:`UncachedBackend`.
    ``pack_weights``: see :class:`CausalBackend` (``None``: pack when the copy is <= 1 GiB)."""
    cfg = policy.config
    mt = getattr(cfg, "model_type", "")
    if fast and mt == "gpt2" and not getattr(cfg, "add_cross_attention", False):
        return CausalBackend(policy, max_batch, max_len, pack=pack_weights)
    if fast and mt in LLAMA_LIKE:
        sliding = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
        if (sliding is None or sliding >= max_len) and types == {"full_attention"}:
            return CausalBackend(policy, max_batch, max_len, pack=pack_weights)
    if fast and mt in ("t5", "mt5") and hasattr(policy.base_model, "get_decoder"):
        return T5Backend(policy, max_batch, max_len)
    return UncachedBackend(policy, max_batch, max_len)
