"""Tiny local models and tokenizer for the LM tests and benchmark (no hub access).

``build_tokenizer(dir)`` trains a byte-level BPE (~300 tokens) on a toy corpus and saves a
``PreTrainedTokenizerFast`` with ``<pad>``=0, ``</s>``=1 (EOS), ``<s>``=2 (BOS), ``<unk>``=3.
``build_model(kind, dir)`` saves a randomly initialised tiny ``gpt2`` / ``llama`` / ``qwen2``
/ ``t5`` (and the tokenizer) with ``save_pretrained``, so tests load it back through the
same ``LMPolicy.from_pretrained`` path a hub id takes.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a cat sat on the mat and looked at the dog",
    "one two three four five six seven eight nine ten",
    "alice gave bob an apple; bob gave carol a pear.",
    "question: what is two plus three? answer: five",
    "the sun rises in the east and sets in the west",
    "STOP here. Then continue with more words, numbers 0123456789 and symbols !?#",
] * 20
SPECIALS = ["<pad>", "</s>", "<s>", "<unk>"]
PAD, EOS, BOS, UNK = 0, 1, 2, 3


def build_tokenizer(path: str | Path, *, with_pad: bool = True, vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    kw = {"pad_token": "<pad>"} if with_pad else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", bos_token="<s>", unk_token="<unk>", **kw)
    fast.save_pretrained(str(path))
    return fast


def model_config(kind: str, vocab: int, **over):
    import transformers as tf

    common = dict(vocab_size=vocab, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS)
    if kind == "gpt2":
        cfg = tf.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3, **common)
    elif kind == "llama":
        cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3, **common)
    elif kind == "qwen2":
        cfg = tf.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3,
                             use_sliding_window=False, **common)
    elif kind == "t5":
        cfg = tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                          relative_attention_max_distance=16, decoder_start_token_id=PAD, initializer_factor=1.0,
                          dropout_rate=0.0, **common)
    else:
        raise ValueError(kind)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def build_model(kind: str, path: str | Path, *, seed: int = 0, with_pad: bool = True, **over) -> Path:
    import transformers as tf

    path = Path(path)
    tok = build_tokenizer(path, with_pad=with_pad)
    torch.manual_seed(seed)
    cfg = model_config(kind, len(tok), **over)
    auto = tf.AutoModelForSeq2SeqLM if kind == "t5" else tf.AutoModelForCausalLM
    model = auto.from_config(cfg)
    model.save_pretrained(str(path))
    return path
