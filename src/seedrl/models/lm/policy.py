"""``LMPolicy``: a Hugging Face causal or encoder-decoder language model as a policy.

A policy ``pi_theta`` over completions ``y = (y_1..y_L)`` given a prompt ``x``:

    log pi(y | x) = sum_n log p_theta(y_n | x, y_<n)

:meth:`LMPolicy.score` returns the per-token terms (prompt and padding masked,
EOS kept as an ordinary label), their sum, the per-position entropies
``H_n = -sum_v p(v | x, y_<n) log p(v | x, y_<n)`` and optionally the logits.
All distributions may be tempered: ``p_T(v) = softmax(z / T)_v``. ``score`` is
differentiable (the learner calls it under autograd).

Masks always come from the prompt/completion *lengths*, never from
``token == pad``: with ``pad_token="eos"`` the pad id equals the EOS id and a
sampled EOS stays a label.

Causal models see ``prompt + completion`` right-padded with an attention mask
(positions ``0..P+C-1``); logits at ``P-1+n`` predict ``y_n``. Encoder-decoder
models (T5) encode the prompt and teacher-force the decoder on
``[decoder_start] + y[:-1]``.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelNotFoundError(FileNotFoundError):
    """``from_pretrained`` got a path that does not exist (or a hub id that is not cached)."""


class PromptTooLongError(ValueError):
    """A prompt does not fit the model context (the message names the prompt index)."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters (Hu et al. 2021): ``W x + (alpha / r) B A x`` with ``A: r x in``, ``B: out x r``.

    ``target_modules=None`` lets peft pick its default modules for the architecture.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None


@dataclass
class TokenDistributions:
    """A model's tempered next-token distributions at the completion positions ``[B, L]``:
    ``logprobs`` ``[B, L, V]`` (full vocabulary) or ``topk`` (its ``k`` most likely tokens and
    the log of the rest of the mass, see :class:`~seedrl.ops.divergences.TopKTeacher`); ``mask``
    marks completion tokens (EOS included, padding not). :meth:`teacher` is what
    :func:`~seedrl.ops.divergences.token_divergence` takes."""

    mask: torch.Tensor
    logprobs: torch.Tensor | None = None
    topk: Any = None

    def teacher(self):
        return self.topk if self.topk is not None else self.logprobs

    def clone(self) -> TokenDistributions:
        """A copy of normal tensors (one made outside ``torch.inference_mode`` may enter autograd)."""
        from seedrl.ops.divergences import TopKTeacher

        t = self.topk
        top = None if t is None else TopKTeacher(t.logprobs.clone(), t.indices.clone(), t.rest_logprob.clone())
        return TokenDistributions(self.mask.clone(), None if self.logprobs is None else self.logprobs.clone(), top)


@dataclass
class Scores:
    """Per-token scores of completions, ``[B, L]`` with ``L = max completion length``.

    ``token_logprobs[b, n] = log p_T(y_n | x, y_<n)`` (0 where ``mask`` is False),
    ``sequence_logprobs[b] = sum_n token_logprobs[b, n]``, ``entropies[b, n]`` the
    entropy of the tempered next-token distribution, ``logits`` (optional) the raw
    (untempered) logits ``[B, L, V]`` at the completion positions, ``hidden`` (optional)
    the last hidden state ``[B, L, H]`` there (the state ``(x, y_<n)`` each row acts in).
    """

    token_logprobs: torch.Tensor
    mask: torch.Tensor
    sequence_logprobs: torch.Tensor
    entropies: torch.Tensor
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _check_source(name_or_path: str | os.PathLike, local_files_only: bool) -> tuple[str, bool]:
    """Return ``(source, local_only)``; raise :class:`ModelNotFoundError` for missing local paths."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelNotFoundError(f"model path {str(path)!r} has no config.json (save it with save_pretrained)")
        return str(path), True
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelNotFoundError(f"model path {str(path.absolute())!r} does not exist")
    return text, local_files_only


class LMPolicy:
    """A language model, its tokenizer and the log-prob / sampling API the agents use.

    Attributes: ``model`` (the module to train; a peft model when LoRA is on),
    ``base_model`` (the underlying transformers model), ``tokenizer``, ``config``,
    ``is_encoder_decoder``, ``pad_token_id``, ``eos_token_ids`` (frozenset),
    ``context_length`` (max positions, ``None`` when unbounded, e.g. T5), ``version``
    (bumped by every in-place weight load).
    """

    def __init__(self, model, tokenizer, *, pad_token_id: int, eos_token_ids: Sequence[int]):
        self.model = model
        self.base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.tokenizer = tokenizer
        self.config = self.base_model.config
        self.is_encoder_decoder = bool(getattr(self.config, "is_encoder_decoder", False))
        self.pad_token_id = int(pad_token_id)
        self.eos_token_ids = frozenset(int(e) for e in eos_token_ids)
        self.version = 0
        limit = None if self.is_encoder_decoder else (
            getattr(self.config, "n_positions", None) or getattr(self.config, "max_position_embeddings", None))
        self.context_length: int | None = int(limit) if limit else None
        self.vocab_size = int(self.base_model.get_output_embeddings().weight.shape[0])
        fwd = inspect.signature(self.base_model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in fwd
        self._sampler = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        lora: LoraSettings | None = None,
        trust_remote_code: bool = False,
        pad_token: str | None = None,
        local_files_only: bool | None = None,
    ) -> LMPolicy:
        """Load config, model and tokenizer from a local directory or a hub id.

        The architecture family comes from ``AutoConfig`` (``is_encoder_decoder`` ->
        ``AutoModelForSeq2SeqLM``, else ``AutoModelForCausalLM``). A tokenizer without a
        pad token is refused unless ``pad_token="eos"`` (pad = EOS; masks still come
        from lengths) or ``pad_token`` names a token of the vocabulary.
        ``local_files_only`` defaults to ``HF_HUB_OFFLINE``.
        """
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        source, local_only = _check_source(name_or_path, local_files_only)
        kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
        try:
            config = AutoConfig.from_pretrained(source, **kw)
        except OSError as exc:
            raise ModelNotFoundError(
                f"model {source!r}: not a local directory and not in the local Hugging Face cache "
                f"(no hub access here: save the model with save_pretrained and pass its directory): {exc}"
            ) from exc
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = auto.from_pretrained(source, dtype=resolve_dtype(dtype), **kw).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(source, **kw)
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            if pad_token is None:
                raise ValueError(
                    f"tokenizer of {source!r} has no pad token (pad_token_id=None); pass pad_token='eos' "
                    "to pad with EOS (masks come from lengths, EOS stays a label) or pad_token='<token>'"
                )
            if pad_token == "eos":
                if tokenizer.eos_token_id is None:
                    raise ValueError(f"pad_token='eos' but tokenizer of {source!r} has no eos token either")
                pad_id = tokenizer.eos_token_id
            else:
                pad_id = tokenizer.convert_tokens_to_ids(pad_token)
                if pad_id is None or pad_id == tokenizer.unk_token_id:
                    raise ValueError(f"pad_token={pad_token!r} is not in the vocabulary of {source!r}")
            tokenizer.pad_token_id = pad_id
        eos = set()
        for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            eos.update([value] if isinstance(value, int) else (value or []))
        if lora is not None:
            model = apply_lora(model, lora, seq2seq=bool(getattr(config, "is_encoder_decoder", False)))
        return cls(model, tokenizer, pad_token_id=pad_id, eos_token_ids=sorted(eos))

    # ------------------------------------------------------------------ tokens
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize_prompts(
        self, texts: Sequence[str], max_prompt_tokens: int | None = None, *,
        truncation: str = "error", add_special_tokens: bool = True,
    ) -> list[list[int]]:
        """Token ids of each prompt. A prompt longer than ``max_prompt_tokens`` (or, for
        causal models, than ``context_length - 1``: one position must stay free for
        the first new token) raises :class:`PromptTooLongError` naming its index,
        unless ``truncation="left"`` keeps its last tokens."""
        if truncation not in ("error", "left"):
            raise ValueError(f"truncation={truncation!r} must be 'error' or 'left'")
        limits = [v for v in (max_prompt_tokens, self.context_length and self.context_length - 1) if v]
        limit = min(limits) if limits else None
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"prompt {i} is {type(text).__name__}, expected str")
            ids = list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
            if limit is not None and len(ids) > limit:
                if truncation == "error":
                    raise PromptTooLongError(
                        f"prompt {i} has {len(ids)} tokens, more than the limit {limit} "
                        f"(max_prompt_tokens={max_prompt_tokens}, context_length={self.context_length}); "
                        "pass truncation='left' to keep its last tokens")
                ids = ids[-limit:]
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ scoring
    def _batch(self, seqs: Sequence[Sequence[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            if len(s):
                ids[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[b, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def check_rows(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]):
        """``(prompt lengths, completion lengths)`` of a scoring batch; refuses a row count
        mismatch, an empty prompt and (causal models) a row longer than the context."""
        B = len(prompt_ids)
        if len(completion_ids) != B:
            raise ValueError(f"completion_ids has {len(completion_ids)} rows, prompt_ids has {B}")
        P = [len(p) for p in prompt_ids]
        C = [len(c) for c in completion_ids]
        for b in range(B):
            if P[b] == 0:
                raise ValueError(f"prompt {b} is empty; a prompt needs at least one token")
            if not self.is_encoder_decoder and self.context_length and P[b] + C[b] > self.context_length:
                raise PromptTooLongError(f"row {b}: prompt {P[b]} + completion {C[b]} tokens exceed "
                                         f"context_length={self.context_length}")
        return P, C

    def completion_logits(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]):
        """Raw logits ``[B, L, V]`` whose row ``n`` predicts completion token ``n``."""
        return self.completion_outputs(prompt_ids, completion_ids)[0]

    def completion_outputs(self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *,
                           hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits [B, L, V], last hidden state [B, L, H] or None)`` at the positions whose
        row ``n`` predicts completion token ``n`` (the state ``(x, y_<n)``; a value head reads it)."""
        B = len(prompt_ids)
        P, C = self.check_rows(prompt_ids, completion_ids)
        L = max(C, default=0)
        if self.is_encoder_decoder:
            enc, enc_mask = self._batch(prompt_ids, max(P))
            start = self.config.decoder_start_token_id
            start = self.pad_token_id if start is None else start
            dec, dec_mask = self._batch([[start, *c[:-1]] for c in completion_ids], max(L, 1))
            dec_mask[:, 0] = 1  # never a fully masked decoder row (NaN-free even for empty completions)
            out = self.model(input_ids=enc, attention_mask=enc_mask, decoder_input_ids=dec,
                             decoder_attention_mask=dec_mask, use_cache=False, output_hidden_states=hidden)
            return out.logits[:, :L], (out.decoder_hidden_states[-1][:, :L] if hidden else None)
        seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
        width = max(len(s) for s in seqs)
        ids, mask = self._batch(seqs, width)
        first = min(P) - 1  # earliest position whose logits are needed
        kw = {"logits_to_keep": width - first} if self._logits_to_keep else {}
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=hidden, **kw)
        logits = out.logits
        pos = completion_positions(P, C, logits.device)
        rows = torch.arange(B, device=logits.device)[:, None]
        states = out.hidden_states[-1][rows, pos] if hidden else None  # hidden states cover every position
        return logits[rows, pos - (width - logits.shape[1])], states

    def score(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *,
        return_logits: bool = False, temperature: float = 1.0, return_hidden: bool = False,
    ) -> Scores:
        """``log p_T(y_n | x, y_<n)`` of every completion token (see module docstring);
        ``return_hidden`` also keeps the last hidden state of each position (``Scores.hidden``)."""
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be > 0 for scoring")
        B, C = len(prompt_ids), [len(c) for c in completion_ids]
        L = max(C, default=0)
        logits, hidden = self.completion_outputs(prompt_ids, completion_ids, hidden=return_hidden)
        dev = logits.device
        mask = _length_mask(C, dev)
        targets = torch.zeros((B, L), dtype=torch.long, device=dev)
        for b, c in enumerate(completion_ids):
            if len(c):
                targets[b, : len(c)] = torch.as_tensor(list(c), dtype=torch.long)
        if targets.numel() and (targets.max() >= logits.shape[-1] or targets.min() < 0):
            raise ValueError(f"completion token ids must lie in [0, {logits.shape[-1]})")
        logp = F.log_softmax(logits.float() / temperature, dim=-1)
        tok = logp.gather(-1, targets[..., None]).squeeze(-1)
        ent = -(logp.exp() * logp).sum(-1)
        zero = torch.zeros((), device=dev)
        tok = torch.where(mask, tok, zero)
        ent = torch.where(mask, ent, zero)
        return Scores(tok, mask, tok.sum(-1), ent, logits if return_logits else None, hidden)

    def next_token_distributions(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *,
        temperature: float = 1.0, top_k: int = 0, logits_fn=None,
    ) -> TokenDistributions:
        """``log softmax(z_n / T)`` at every completion position (what a teacher gives a
        distilled student): all ``V`` log-probs, or with ``0 < top_k < V`` the ``top_k``
        largest with their indices and ``log(mass outside them)`` (a logsumexp, exact).
        ``logits_fn(prompt_ids, completion_ids)``: another forward pass with the contract of
        :meth:`completion_logits` (the sampler's cached-path backend, inference only)."""
        from seedrl.ops.divergences import TopKTeacher

        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r} must be > 0")
        if top_k < 0:
            raise ValueError(f"top_k={top_k!r} must be >= 0 (0 = the full vocabulary)")
        logits = (logits_fn or self.completion_logits)(prompt_ids, completion_ids)
        mask = _length_mask([len(c) for c in completion_ids], logits.device)
        logp = F.log_softmax(logits.float() / temperature, dim=-1)
        if 0 < top_k < logp.shape[-1]:
            vals, idx = logp.topk(top_k, dim=-1)
            rest = torch.logsumexp(logp.scatter(-1, idx, float("-inf")), dim=-1)
            return TokenDistributions(mask, topk=TopKTeacher(vals, idx, rest))
        return TokenDistributions(mask, logprobs=logp)

    # ------------------------------------------------------------------ sampling
    def generate(self, prompts, params=None, *, max_batch: int = 32, max_len: int | None = None):
        """Sample completions (texts or token-id lists) through a cached :class:`Sampler`."""
        from seedrl.models.lm.sampler import Sampler

        if prompts and isinstance(prompts[0], str):
            prompts = self.tokenize_prompts(prompts)
        s = self._sampler
        if s is None or s.max_batch != max_batch or (max_len is not None and s.max_len != max_len):
            s = self._sampler = Sampler(self, max_batch=max_batch, max_len=max_len)
        return s.generate(prompts, params)

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict_from(self, other: LMPolicy | Mapping[str, torch.Tensor]) -> LMPolicy:
        """Copy weights in place (no disk, same parameter objects) from another policy or a
        state dict with exactly the same keys and shapes; bumps ``version``."""
        src = other.model.state_dict() if isinstance(other, LMPolicy) else other
        dst = self.model.state_dict()
        missing, unexpected = sorted(set(dst) - set(src)), sorted(set(src) - set(dst))
        if missing or unexpected:
            raise KeyError(f"state dict keys differ: missing {missing[:5]} unexpected {unexpected[:5]}")
        for k, t in dst.items():
            if tuple(src[k].shape) != tuple(t.shape):
                raise ValueError(f"weight {k!r}: shape {tuple(src[k].shape)} != {tuple(t.shape)}")
        with torch.no_grad():
            for k, t in dst.items():
                t.copy_(src[k])
        self.version += 1
        return self

    def train(self, mode: bool = True) -> LMPolicy:
        self.model.train(mode)
        return self

    def eval(self) -> LMPolicy:
        return self.train(False)

    def parameters(self):
        return self.model.parameters()


def completion_positions(P: Sequence[int], C: Sequence[int], device) -> torch.Tensor:
    """``[B, max(C)]`` index of the position whose logits predict completion token ``n`` of a
    causal row ``prompt + completion`` (``P[b] - 1 + n``; past the row's end its last one)."""
    L = max(C, default=0)
    return torch.tensor([[P[b] - 1 + min(n, max(C[b] - 1, 0)) for n in range(L)] for b in range(len(P))],
                        dtype=torch.long, device=device).reshape(len(P), L)


def _length_mask(lengths: Sequence[int], device) -> torch.Tensor:
    """``[B, max(lengths)]``: True at the first ``lengths[b]`` positions of row ``b``."""
    L = max(lengths, default=0)
    return torch.arange(L, device=device)[None, :] < torch.tensor(list(lengths), device=device, dtype=torch.long)[:, None]


def apply_lora(model, lora: LoraSettings, *, seq2seq: bool):
    """Wrap ``model`` with peft LoRA adapters (only adapter weights trainable)."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    if lora.r <= 0:
        raise ValueError(f"lora.r={lora.r} must be positive")
    conv1d = any(isinstance(m, Conv1D) for m in model.modules())  # GPT-2 stores weights as [in, out]
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules) if lora.target_modules else None,
                     fan_in_fan_out=conv1d, task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM")
    return get_peft_model(model, cfg)
