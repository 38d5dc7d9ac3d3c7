"""A tiny NLI classifier for the facts world, trained from scratch (``seedrl lm setup-toy --world facts``).

Pairs (premise = a document of :class:`~seedrl.envs.text.toy.FactsWorld`, hypothesis = a
summary), labelled by the world's exact checker (:meth:`FactsWorld.entails`: entailed
iff the summary says something and every claimed fact is in the document):

* positives: the document's facts, a random non-empty subset of them, in document or
  shuffled order;
* negatives: a positive with one unsupported fact inserted at a random place, of one of
  the kinds in :data:`NEGATIVES`: ``altered`` (a document fact with one word changed:
  colour, animal or object), ``swapped`` (the entity of one document fact with the
  relation and object of another: shares all its words with the document),
  ``well_known`` (the world's background-knowledge fact about a document entity: the
  hallucination the world's references carry) and ``new`` (a random fact);
* :data:`SILENT` negatives (claim nothing): the empty summary, a filler the document lacks;
* :data:`GARBLED` negatives (degenerate text made of the document's own words, which RL
  finds when the classifier never saw it): a positive with one of its sentences broken,
  ``repeated`` (a word or phrase of the sentence repeated 2-5 times in a row: "the gray
  mouse likes the likes the likes ...") or ``broken`` (the sentence truncated mid-way,
  one word dropped, or its words shuffled), either replacing the sentence or added beside
  it, and when it is the summary's last sentence sometimes without its full stop (cut off
  mid-sentence). A broken sentence is neither a fact nor a sentence of the document, so the
  checker calls the summary not entailed although it claims no unsupported fact.

Half the pairs are positives. The model (``arch``) is a DeBERTa-v2 sequence classifier with relative-position
attention only (default; ``bert``: BERT with absolute positions) (a few layers, 64
wide, no dropout) over a word-level tokenizer of the world's vocabulary
(``[CLS] premise [SEP] summary [SEP]`` with segment ids), labels
``{0: "entailment", 1: "not_entailment"}`` so that :class:`~seedrl.rewards.nli.NLIReward`
finds the entailment class; it is saved with its tokenizer by ``save_pretrained`` and
loads with ``NLIReward.from_pretrained(path)``. Held-out pairs come from another seed's
documents; their accuracy (overall, positives, and per negative kind) is returned and
written to ``nli_eval.json`` next to the model directory.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seedrl.envs.text.toy import (ANIMALS, COLOURS, FILLERS, RELATIONS, FactsWorld, fact_sentence, parse_facts,
                                  split_sentences, well_known_fact)

__all__ = ["ARCHS", "GARBLED", "LABELS", "NEGATIVES", "SILENT", "garble_sentence", "NLIConfig", "build_model", "make_pairs", "make_tokenizer", "train_toy_nli", "word_pair_tokenizer"]

LABELS = {0: "entailment", 1: "not_entailment"}
NEGATIVES = ("altered", "swapped", "well_known", "new")
#: negatives that claim no fact: the empty summary and a filler sentence the document does not hold
SILENT = ("empty", "filler")
#: negatives made of the document's words in a broken sentence: repetitions, truncated/ungrammatical sentences
GARBLED = ("repeated", "broken")
EVAL_FILE = "nli_eval.json"
#: ``bert``: absolute learned positions; ``deberta``: DeBERTa-v2 with relative-position attention only
ARCHS = ("bert", "deberta")


@dataclass
class NLIConfig:
    """Size and training of the toy NLI classifier."""

    hidden: int = 64
    layers: int = 3
    heads: int = 4
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    train_documents: int = 20000
    eval_documents: int = 1000
    threads: int = 1
    arch: str = "deberta"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch={self.arch!r}: expected one of {ARCHS}")


def _unsupported(kind: str, facts: list, rng: np.random.Generator) -> tuple | None:
    """One fact not in ``facts`` of the given kind (None when the kind is impossible here)."""
    have = set(map(tuple, facts))
    for _ in range(20):
        c, a, r, o = facts[rng.integers(len(facts))]
        if kind == "altered":
            slot = rng.integers(3)
            if slot == 0:
                c = COLOURS[rng.integers(len(COLOURS))]
            elif slot == 1:
                a = ANIMALS[rng.integers(len(ANIMALS))]
            else:
                o = RELATIONS[r][rng.integers(len(RELATIONS[r]))]
            cand = (c, a, r, o)
        elif kind == "swapped":
            other = facts[rng.integers(len(facts))]
            cand = (c, a, other[2], other[3])
        elif kind == "well_known":
            cand = well_known_fact(c, a)
        else:
            rel = list(RELATIONS)[rng.integers(len(RELATIONS))]
            cand = (COLOURS[rng.integers(len(COLOURS))], ANIMALS[rng.integers(len(ANIMALS))], rel,
                    RELATIONS[rel][rng.integers(len(RELATIONS[rel]))])
        if cand not in have:
            return cand
    return None


def garble_sentence(kind: str, sentence: str, rng: np.random.Generator) -> str:
    """``sentence`` (a fact sentence, without its full stop) made degenerate: ``repeated`` repeats a
    span of 1-3 of its words 2-5 times in a row (the text after the span kept or cut off);
    ``broken`` truncates it, drops one word or shuffles its words. May return a valid sentence
    (e.g. the leading "the" dropped): :func:`make_pairs` checks and draws again."""
    words = sentence.split()
    if kind == "repeated":
        n = int(rng.integers(1, 4))
        start = int(rng.integers(len(words) - n + 1))
        span = words[start:start + n]
        rest = words[start + n:] if rng.random() < 0.5 else []
        return " ".join(words[:start + n] + span * int(rng.integers(1, 5)) + rest)
    if kind != "broken":
        raise ValueError(f"kind={kind!r}: expected one of {GARBLED}")
    how = rng.integers(3)
    if how == 0:
        return " ".join(words[:int(rng.integers(1, len(words)))])
    if how == 1:
        drop = int(rng.integers(len(words)))
        return " ".join(words[:drop] + words[drop + 1:])
    return " ".join(words[i] for i in rng.permutation(len(words)))


def _garbled_summary(kind: str, keep: list, document: str, rng: np.random.Generator) -> str | None:
    """A positive's sentences with one of them garbled (:func:`garble_sentence`), replacing it or
    beside it; None when 20 draws gave no sentence that is both unparsed and not the document's."""
    sentences = [fact_sentence(f).rstrip(".") for f in keep]
    doc_sentences = set(split_sentences(document))
    for _ in range(20):
        i = int(rng.integers(len(sentences)))
        bad = garble_sentence(kind, sentences[i], rng)
        if parse_facts(bad)[0] or bad in doc_sentences:
            continue
        out = list(sentences)
        if rng.random() < 0.5:
            out[i] = bad
        else:
            out.insert(i + 1, bad)
        text = ". ".join(out)
        return text if out[-1] == bad and rng.random() < 0.5 else text + "."  # cut off mid-sentence, or not
    return None


def make_pairs(world: FactsWorld, num_documents: int, seed: int, silent_rate: float = 0.04,
               garbled_rate: float = 0.08) -> list[dict]:
    """``premise``, ``hypothesis``, ``label`` (0 entailed, 1 not) and ``kind`` per pair; one per document.

    A ``silent_rate`` share of the pairs are :data:`SILENT` negatives (half each): a summary that
    says nothing is not entailed (:meth:`FactsWorld.entails`), and without such pairs a classifier
    calls it entailed, a hole RL finds (docs/rlef.md). A ``garbled_rate`` share are :data:`GARBLED`
    negatives (half each), the repetition hole RL found next. The other pairs are positives with
    probability ``0.5 / (1 − silent_rate − garbled_rate)``, so half of all pairs are positives."""
    for name, rate in (("silent_rate", silent_rate), ("garbled_rate", garbled_rate)):
        if not 0.0 <= rate <= 0.5:
            raise ValueError(f"{name}={rate!r}: must be in [0, 0.5]")
    positive = 0.5 / (1.0 - silent_rate - garbled_rate)
    rng = np.random.default_rng([seed, 7])
    out = []
    for ex in world.examples(num_documents, seed):
        if rng.random() < silent_rate:
            absent = [f for f in FILLERS if split_sentences(f)[0] not in split_sentences(ex["document"])]
            kind = SILENT[rng.integers(len(SILENT))] if absent else "empty"
            summary = "" if kind == "empty" else absent[rng.integers(len(absent))]
            if world.entails(summary, ex["document"]):
                raise AssertionError(f"pair kind {kind} is entailed: {summary!r} / {ex['document']!r}")
            out.append({"premise": ex["document"], "hypothesis": summary, "label": 1, "kind": kind})
            continue
        facts = [tuple(f) for f in ex["facts"]]
        keep = [f for f in facts if rng.random() < 0.7] or [facts[rng.integers(len(facts))]]
        if rng.random() < 0.5:
            keep = [keep[i] for i in rng.permutation(len(keep))]
        kind = "positive"
        if rng.random() < garbled_rate / (1.0 - silent_rate):
            kind = GARBLED[rng.integers(len(GARBLED))]
            summary = _garbled_summary(kind, keep, ex["document"], rng)
            if summary is not None:
                if world.entails(summary, ex["document"]) or world.hallucinates(summary, ex["document"]):
                    raise AssertionError(f"pair kind {kind} is entailed or hallucinates: {summary!r} / {ex['document']!r}")
                out.append({"premise": ex["document"], "hypothesis": summary, "label": 1, "kind": kind})
                continue
            kind = "positive"
        if rng.random() >= positive:
            kind = NEGATIVES[rng.integers(len(NEGATIVES))]
            extra = _unsupported(kind, facts, rng)
            if extra is None:
                kind, extra = "new", _unsupported("new", facts, rng)
            keep.insert(int(rng.integers(len(keep) + 1)), extra)
        summary = " ".join(fact_sentence(f) for f in keep)
        label = 0 if world.entails(summary, ex["document"]) else 1
        if label != (kind != "positive"):
            raise AssertionError(f"pair kind {kind} disagrees with the checker: {summary!r} / {ex['document']!r}")
        out.append({"premise": ex["document"], "hypothesis": summary, "label": label, "kind": kind})
    return out


def word_pair_tokenizer(words, *, max_length: int = 128, lowercase: bool = False):
    """A BERT-style word-level tokenizer: ``[PAD] [UNK] [CLS] [SEP]`` then ``words`` (ids in that
    order), whitespace/punctuation pre-tokenizer, ``[CLS] a [SEP] b [SEP]`` with segment ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"], model_max_length=max_length,
    )


def make_tokenizer(world: FactsWorld, max_length: int = 128):
    """The world's tokenizer: its vocabulary lower-cased, plus '.' and ':' (split off words)."""
    return word_pair_tokenizer([*sorted({w.lower() for w in world.vocabulary()}), ".", ":"], max_length=max_length,
                               lowercase=True)


def _encode(tokenizer, pairs: list[dict]):
    import torch

    enc = tokenizer([p["premise"] for p in pairs], [p["hypothesis"] for p in pairs], padding=True,
                    truncation=True, return_tensors="pt")
    return enc, torch.tensor([p["label"] for p in pairs])


def accuracy(model, tokenizer, pairs: list[dict], batch_size: int = 256) -> dict[str, float]:
    """Held-out accuracy: overall, on positives and per negative kind (argmax of the logits)."""
    import torch

    right = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            enc, labels = _encode(tokenizer, pairs[i:i + batch_size])
            right += (model(**enc).logits.argmax(-1) == labels).tolist()
    out = {"accuracy": float(np.mean(right))}
    for kind in ("positive", *NEGATIVES, *SILENT, *GARBLED):
        hits = [r for r, p in zip(right, pairs) if p["kind"] == kind]
        if hits:
            out[f"accuracy_{kind}"] = float(np.mean(hits))
    return out


def build_model(cfg: NLIConfig, tokenizer):
    """A fresh classifier of ``cfg``'s size over ``tokenizer`` (no dropout, segment ids, labels :data:`LABELS`)."""
    from transformers import BertConfig, BertForSequenceClassification, DebertaV2Config, DebertaV2ForSequenceClassification

    common = dict(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        intermediate_size=2 * cfg.hidden, max_position_embeddings=128, type_vocab_size=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=2, id2label=dict(LABELS), label2id={v: k for k, v in LABELS.items()},
        pad_token_id=tokenizer.pad_token_id)
    if cfg.arch == "bert":
        return BertForSequenceClassification(BertConfig(**common, **cfg.extra))
    # relative positions (c2p and p2c attention terms), no absolute ones: binding a word to its neighbours
    # ("the red fox" + "eats seeds") is the same pattern wherever the sentence sits
    return DebertaV2ForSequenceClassification(DebertaV2Config(
        **common, relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
        max_relative_positions=64, position_buckets=32, share_att_key=True, norm_rel_ebd="layer_norm",
        pooler_hidden_size=cfg.hidden, pooler_dropout=0.0, layer_norm_eps=1e-7, **cfg.extra))


def train_toy_nli(world: FactsWorld, out: str | Path, *, seed: int = 0, config: NLIConfig | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Train the classifier on ``world``'s pairs, save it (with tokenizer) to ``out`` and return held-out metrics."""
    import torch

    cfg = config or NLIConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(seed)
        tokenizer = make_tokenizer(world)
        model = build_model(cfg, tokenizer)
        train = make_pairs(world, cfg.train_documents, seed)
        held = make_pairs(world, cfg.eval_documents, seed + 1)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * max(0.05, 1 - s / max(cfg.steps, 1)))
        rng = np.random.default_rng([seed, 8])
        start, loss_avg = time.monotonic(), None
        model.train()
        for step in range(cfg.steps):
            batch = [train[i] for i in rng.integers(len(train), size=cfg.batch_size)]
            enc, labels = _encode(tokenizer, batch)
            loss = model(**enc, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
            if progress and (step + 1) % 500 == 0:
                model.eval()
                acc = accuracy(model, tokenizer, held[:300])
                model.train()
                print(f"  nli step {step + 1}/{cfg.steps}  loss {loss_avg:.4f}  {time.monotonic() - start:.0f}s  held-out "
                      + " ".join(f"{k.removeprefix('accuracy_')} {v:.3f}" for k, v in acc.items()), flush=True)
        model.eval()
        metrics = {**accuracy(model, tokenizer, held), "train_loss": loss_avg, "train_seconds": time.monotonic() - start,
                   "train_pairs": len(train), "eval_pairs": len(held), "seed": seed, "config": asdict(cfg)}
        out = Path(out)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out.parent / EVAL_FILE).write_text(json.dumps(metrics, indent=1))
        return metrics
    finally:
        torch.set_num_threads(threads)
