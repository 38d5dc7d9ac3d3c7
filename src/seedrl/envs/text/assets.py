"""Tokenizer and tiny models for a toy world, saved like hub checkpoints.

``build_toy_assets(out_dir, world, seed)`` writes, all loadable with the
same calls users make with a hub id:

* ``out_dir``: the tokenizer (``AutoTokenizer.from_pretrained(out_dir)``)
  and a randomly initialised tiny GPT-2 (``AutoModelForCausalLM``);
* ``out_dir/t5`` (``t5=True``): a tiny T5 with the same vocabulary
  (``AutoModelForSeq2SeqLM``) and its tokenizer;
* ``out_dir/toy_world.json``: world name, seed, tokenizer kind, special ids.

Tokenizer kinds (both decode(encode(text)) == text for world text):

* ``"word"`` (default): a word-level vocabulary over pieces cut by the regex
  ``' ?[letters]+ | digit | ' ?[punctuation]' | whitespace char`` (a word
  carries its leading space; digits are single tokens), built by counting the
  pieces of the world's corpus (ids by decreasing count, then
  alphabetically: deterministic); pieces are concatenated back on decode.
  Unseen pieces become ``<unk>``.
* ``"bpe"``: byte-level BPE (GPT-2 style, digits split individually) trained
  on the corpus with ``vocab_size`` entries; no ``<unk>`` ever needed.

Special tokens: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then
``<|system|>``, ``<|user|>``, ``<|assistant|>``. Encoding a text prepends
``<bos>`` (Llama style; pass ``add_special_tokens=False`` to get the bare
ids, e.g. for a completion); ``<eos>`` is never added, SFT targets must
append it. The T5 tokenizer instead appends ``<eos>`` (T5 style). The chat
template renders ``<bos>`` then ``<|role|>content\\n`` per message (assistant
content followed by ``<eos>``) and, for a generation prompt,
``<|assistant|>``. For world text the tokenization of ``prompt + reference``
is the tokenization of ``prompt`` followed by that of ``reference``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seedrl.envs.text.toy import get_world

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIALS = (PAD, BOS, EOS, UNK, *ROLE_TOKENS)
PIECE_REGEX = r" ?[^\W\d_]+|\d| ?[^\w\s]|\s"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
KINDS = ("word", "bpe")

__all__ = ["ToyAssets", "build_toy_assets", "build_toy_tokenizer"]


@dataclass(frozen=True)
class ToyAssets:
    path: str  # tokenizer + causal LM
    tokenizer_path: str
    causal_lm_path: str
    seq2seq_path: str | None
    world: str
    vocab_size: int
    pad_token_id: int
    bos_token_id: int
    eos_token_id: int


def _raw_tokenizer(texts: list[str], kind: str, vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "word":
        pre = pre_tokenizers.Split(Regex(PIECE_REGEX), behavior="isolated")
        counts = Counter(p for t in texts for p, _ in pre.pre_tokenize_str(t))
        pieces = sorted((p for p in counts if p not in SPECIALS), key=lambda p: (-counts[p], p))
        vocab = {s: i for i, s in enumerate(SPECIALS)}
        vocab.update({p: len(SPECIALS) + i for i, p in enumerate(pieces)})
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        tok.pre_tokenizer = pre
        tok.decoder = decoders.Fuse()
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
    else:
        raise ValueError(f"tokenizer={kind!r}: expected one of {KINDS}")
    tok.add_special_tokens(list(SPECIALS))
    return tok


def _wrap(tok, *, template: str):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    specials = [(s, tok.token_to_id(s)) for s in (BOS, EOS)]
    if template == "bos":
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=specials)
    else:  # T5 style
        tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A $B:1 {EOS}", special_tokens=specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_toy_tokenizer(world: Any, *, kind: str = "word", corpus_size: int = 2000, seed: int = 0,
                        vocab_size: int = 512, style: str = "bos"):
    """A ``PreTrainedTokenizerFast`` for ``world`` (not saved; see the module docstring)."""
    texts = list(get_world(world).corpus(corpus_size, seed))
    return _wrap(_raw_tokenizer(texts, kind, vocab_size), template=style)


def build_toy_assets(
    out_dir: str | os.PathLike, world: Any = "facts", seed: int = 0, *, tokenizer: str = "word",
    corpus_size: int = 2000, vocab_size: int = 512, t5: bool = False, n_positions: int = 256, n_embd: int = 64,
    n_layer: int = 2, n_head: int = 4,
) -> ToyAssets:
    """Build and save a world's tokenizer and tiny GPT-2 (and T5); returns the paths."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    w = get_world(world)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_toy_tokenizer(w, kind=tokenizer, corpus_size=corpus_size, seed=seed, vocab_size=vocab_size)
    tok.save_pretrained(out)
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    vocab = len(tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gpt2 = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head, **ids,
        ))
        gpt2.generation_config.pad_token_id = tok.pad_token_id
        gpt2.generation_config.eos_token_id = tok.eos_token_id
        gpt2.save_pretrained(out)
        seq2seq = None
        if t5:
            seq2seq = out / "t5"
            t5_tok = build_toy_tokenizer(w, kind=tokenizer, corpus_size=corpus_size, seed=seed, vocab_size=vocab_size,
                                         style="eos")
            t5_tok.save_pretrained(seq2seq)
            model = T5ForConditionalGeneration(T5Config(
                vocab_size=vocab, d_model=n_embd, d_ff=2 * n_embd, d_kv=n_embd // n_head, num_layers=n_layer,
                num_heads=n_head, decoder_start_token_id=tok.pad_token_id, **ids,
            ))
            model.generation_config.decoder_start_token_id = tok.pad_token_id
            model.generation_config.eos_token_id = tok.eos_token_id
            model.save_pretrained(seq2seq)
    info = {"world": w.name, "seed": seed, "tokenizer": tokenizer, "vocab_size": vocab, **ids,
            "t5": str(seq2seq) if seq2seq else None}
    (out / "toy_world.json").write_text(json.dumps(info, indent=1))
    return ToyAssets(str(out), str(out), str(out), str(seq2seq) if seq2seq else None, w.name, vocab, **ids)
