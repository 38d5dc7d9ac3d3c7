"""Learned reward models: a sequence classifier with one output.

``r_i = f_theta(x_i)`` where ``f_theta`` is an
``AutoModelForSequenceClassification`` whose head has exactly one output
(``config.num_labels == 1``) and ``x_i`` is built from prompt i and
completion i according to ``input_format``:

* ``"pair"`` (default): the tokenizer's sentence-pair encoding of
  ``(prompt, completion)`` (separator / segment ids as the model was trained);
* ``"concat"``: the single text ``prompt + completion``;
* a callable ``(prompt, completion, example) -> str``: a single text (e.g. a
  chat template rendering).

Truncation. Inputs longer than ``max_length`` tokens (default: the model's
limit) are truncated on ``truncation_side``: ``"left"`` (default) removes
tokens from the start, keeping the end of the completion, which is what a
reward model must see; ``"right"`` removes them from the end. For
``"pair"`` inputs the longer of the two sequences is trimmed first
(HF ``longest_first``), on the same side.

The raw score (the logit) is returned, optionally affinely normalised:
``(r - shift) * scale``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from seedrl.rewards._hf import (
    TRUNCATION_SIDES,
    classify,
    load_classifier,
    model_max_length,
    prepare_pad,
)
from seedrl.rewards.base import RewardError, RewardFn

INPUT_FORMATS = ("pair", "concat")


class RewardModel(RewardFn):
    """A one-output sequence classifier as a batched :class:`RewardFn`."""

    def __init__(
        self, model: Any, tokenizer: Any, *, input_format: str | Callable = "pair", max_length: int | None = None,
        truncation_side: str = "left", batch_size: int = 32, shift: float = 0.0, scale: float = 1.0,
        pad_token: str | None = None, name: str | None = None, nan: str = "error",
    ) -> None:
        super().__init__(name=name or "reward_model", nan=nan)
        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != 1:
            raise ValueError(
                f"reward model {self.name!r}: expected a classifier with one output (num_labels=1), got "
                f"num_labels={num_labels} (labels {getattr(model.config, 'id2label', None)}); for an NLI model use NLIReward"
            )
        if not callable(input_format) and input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format={input_format!r}: expected one of {INPUT_FORMATS} or a callable")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"truncation_side={truncation_side!r}: expected one of {TRUNCATION_SIDES}")
        prepare_pad(model, tokenizer, what=f"reward model {self.name!r}", pad_token=pad_token)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.input_format, self.truncation_side = input_format, truncation_side
        self.max_length = model_max_length(model, tokenizer, max_length)
        self.batch_size, self.shift, self.scale = int(batch_size), float(shift), float(scale)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, tokenizer_path: str | os.PathLike | None = None, device: str = "cpu",
        dtype: Any = None, pad_token: str | None = None, **kwargs: Any,
    ) -> RewardModel:
        """Load model and tokenizer by hub id or local path (``tokenizer_path`` defaults to ``path``)."""
        name = kwargs.pop("name", None) or os.path.basename(os.fspath(path).rstrip("/")) or "reward_model"
        model, tokenizer = load_classifier(
            path, what=f"reward model {name!r}", tokenizer_path=tokenizer_path, device=device, dtype=dtype,
            pad_token=pad_token,
        )
        return cls(model, tokenizer, name=name, **kwargs)

    def texts(self, prompts, completions, examples) -> tuple[list[str], list[str] | None]:
        """The model inputs: (texts, text pairs or None)."""
        if self.input_format == "pair":
            return list(prompts), list(completions)
        if self.input_format == "concat":
            return [p + c for p, c in zip(prompts, completions)], None
        out = []
        for i, (p, c, e) in enumerate(zip(prompts, completions, examples)):
            text = self.input_format(p, c, e)
            if not isinstance(text, str):
                raise RewardError(f"reward {self.name!r}: input_format returned {type(text).__name__} for index {i}")
            out.append(text)
        return out, None

    def compute(self, prompts, completions, examples) -> np.ndarray:
        texts, pairs = self.texts(prompts, completions, examples)
        logits = classify(
            self.model, self.tokenizer, texts, pairs, batch_size=self.batch_size, max_length=self.max_length,
            truncation="longest_first", side=self.truncation_side,
        )
        return (logits[:, 0] - self.shift) * self.scale
