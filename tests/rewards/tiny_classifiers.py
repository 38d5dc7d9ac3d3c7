"""Tiny classifiers for reward tests, built locally (imported by conftest.py).

* ``nli_tokenizer``: a BERT-style word-level tokenizer (``[CLS] a [SEP] b [SEP]``
  with segment ids) over a fixed vocabulary.
* ``BagOfWords``: a test-only ``AutoModelForSequenceClassification`` (registered
  with the Auto classes, so it loads through the same from_pretrained path)
  whose logits are a known function of the tokens:

  - mode "overlap" (3 labels, NLI): with m = number of hypothesis tokens
    (segment 1) absent from the premise (segment 0), the entailment logit is
    -scale * m and the two others 0; ``label_order[j]`` is the role of class j
    (0 entailment, 1 neutral, 2 contradiction);
  - mode "count" (1 label): logit = scale * (count of token ``target_id``).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from seedrl.lm.toy_nli import word_pair_tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = ["the", "a", "red", "blue", "green", "fox", "bird", "cat", "lives", "in", "forest", "river", "eats", "seeds", "fish", "good", "bad", "filler", "word", "sky", "was", "clear", "it", "quiet", "day"]


def make_nli_tokenizer(max_length: int = 32) -> PreTrainedTokenizerFast:
    return word_pair_tokenizer(WORDS, max_length=max_length)


class BagOfWordsConfig(PretrainedConfig):
    model_type = "seedrl-test-bag-of-words"

    def __init__(self, vocab_size=64, mode="overlap", target_id=0, ignore_ids=(0, 1, 2, 3),
                 label_order=(0, 1, 2), max_position_embeddings=64, **kw):
        super().__init__(**kw)
        self.vocab_size, self.mode, self.target_id = vocab_size, mode, target_id
        self.ignore_ids, self.label_order = list(ignore_ids), list(label_order)
        self.max_position_embeddings = max_position_embeddings


class BagOfWords(PreTrainedModel):
    config_class = BagOfWordsConfig
    base_model_prefix = "bow"

    def __init__(self, config):
        super().__init__(config)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        cfg = self.config
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        keep = mask.bool() & ~torch.isin(input_ids, torch.tensor(cfg.ignore_ids))
        onehot = torch.nn.functional.one_hot(input_ids, cfg.vocab_size).float() * keep[..., None]
        if cfg.mode == "count":
            return SequenceClassifierOutput(logits=self.scale * onehot[..., cfg.target_id].sum(1, keepdim=True))
        seg = token_type_ids.bool()
        premise = (onehot * (~seg)[..., None]).sum(1) > 0  # [B, V]
        hyp = (onehot * seg[..., None]).sum(1)  # counts [B, V]
        missing = (hyp * (~premise)).sum(1)
        entail = -self.scale * missing
        zeros = torch.zeros_like(entail)
        by_role = [entail, zeros, zeros]  # entailment, neutral, contradiction
        logits = torch.stack([by_role[cfg.label_order[j]] for j in range(3)], dim=1)
        return SequenceClassifierOutput(logits=logits)


try:
    AutoConfig.register(BagOfWordsConfig.model_type, BagOfWordsConfig)
    AutoModelForSequenceClassification.register(BagOfWordsConfig, BagOfWords)
except ValueError:  # already registered in this process
    pass


def overlap_log_prob(premise: str, hypothesis: str, scale: float = 1.0) -> float:
    """Closed form of the overlap model: log softmax([-s m, 0, 0])[entailment]."""
    m = sum(w not in set(premise.split()) for w in hypothesis.split())
    return float(-scale * m - np.log(np.exp(-scale * m) + 2.0))


