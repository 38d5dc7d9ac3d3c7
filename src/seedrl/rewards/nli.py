"""Faithfulness as entailment: an NLI classifier scores source -> completion.

For completion ``y_i`` of an example whose source document is
``x_i = examples[i][source_field]`` (premise ``x``, hypothesis ``y``):

    r_i = max_j log p(entailment | chunk_j(x_i), y_i)        (output="log_prob")
    r_i = max_j     p(entailment | chunk_j(x_i), y_i)        (output="prob")

(the two agree up to ``exp``, since log is monotone). ``p`` is the softmax of
the classifier's logits; the entailment class is found in
``config.id2label`` by a case-insensitive ``"entail"`` match that excludes
``not_entailment`` / ``non-entailment`` (or given as ``entailment_label=``,
a label name or index).

Chunking. A premise that does not fit next to the hypothesis is split into
token windows. With ``L`` the model's input budget (``max_length``), ``s``
the special tokens of a sentence pair and ``h`` the hypothesis length in
tokens, each window holds ``c = min(L - s - h, max_premise_tokens)`` premise
tokens; windows start every ``chunk_stride`` tokens (default ``c // 2``, so
neighbouring windows overlap by half and any span of up to ``c // 2``
tokens lies wholly inside one window; a stride larger than ``c`` is reduced to
``c`` so that every premise token is seen) and the last window ends at the
premise's last token. A premise of ``p <= c`` tokens is one window. The
hypothesis keeps at most ``max_hypothesis_tokens`` tokens (default
``(L - s) // 2``; longer ones are cut at the end, with a warning), so that a
window always holds at least half the budget. All (window, hypothesis)
pairs of a batch are scored together, ``batch_size`` pairs per forward.

Windows are cut at token boundaries and sent as text (character spans from
the tokenizer's offsets, or decoded tokens for a slow tokenizer). Re-encoding
a cut can take more tokens than it was cut from (byte-level BPE: a window that
starts at a word without its leading space splits it differently), and the
pair would then be truncated, dropping the window's last words unscored. So
each (window, hypothesis) pair is re-encoded and, while it exceeds ``L``, the
window loses its last token; when that uncovers premise tokens the next
planned window would not reach, a further window starting no later than the
shrunk end (and ``stride`` after the window's start when it can) takes them.
Every premise token thus lies in some window that is scored whole;
``truncation="only_first"`` remains only as a guard.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seedrl.rewards._hf import classify, load_classifier, model_max_length, prepare_pad
from seedrl.rewards.base import RewardError, RewardFn

OUTPUTS = ("log_prob", "prob")
_NEGATED = re.compile(r"\b(not|non)[\s_\-]*entail")


def find_entailment_label(id2label: Mapping[Any, str] | None, label: str | int | None = None) -> int:
    """The class index of "entailment" in ``id2label`` (see the module docstring)."""
    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    listing = ", ".join(f"{k}: {v!r}" for k, v in sorted(labels.items()))
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if int(label) not in labels:
            raise ValueError(f"entailment_label={label}: not a class index; the model's labels are {{{listing}}}")
        return int(label)
    if label is not None:
        hits = [k for k, v in labels.items() if v.lower() == str(label).lower()]
        if not hits:
            raise ValueError(f"entailment_label={label!r}: no such label; the model's labels are {{{listing}}}")
        return hits[0]
    hits = [k for k, v in labels.items() if "entail" in v.lower() and not _NEGATED.search(v.lower())]
    if len(hits) != 1:
        why = "no label matches 'entail'" if not hits else f"several labels match 'entail' ({hits})"
        raise ValueError(
            f"cannot find the entailment class: {why}; the model's labels (config.id2label) are {{{listing}}}. "
            "Pass entailment_label= (a label name or index)"
        )
    return hits[0]


def chunk_windows(num_tokens: int, chunk: int, stride: int) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` covering ``num_tokens`` (see the module docstring)."""
    if chunk < 1:
        raise ValueError(f"chunk size {chunk} must be >= 1")
    if num_tokens <= chunk:
        return [(0, num_tokens)]
    stride = max(1, min(stride, chunk))
    starts = list(range(0, num_tokens - chunk, stride))
    starts.append(num_tokens - chunk)
    return [(a, a + chunk) for a in starts]


class NLIReward(RewardFn):
    """Entailment of the completion by the example's source (batched, chunked)."""

    def __init__(
        self, model: Any, tokenizer: Any, *, source_field: str = "document", output: str = "log_prob",
        entailment_label: str | int | None = None, max_length: int | None = None,
        max_premise_tokens: int | None = None, chunk_stride: int | None = None,
        max_hypothesis_tokens: int | None = None, batch_size: int = 32, name: str | None = None, nan: str = "error",
    ) -> None:
        super().__init__(name=name or "nli", nan=nan)
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}: expected one of {OUTPUTS}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        for arg, v in (("max_premise_tokens", max_premise_tokens), ("chunk_stride", chunk_stride),
                       ("max_hypothesis_tokens", max_hypothesis_tokens)):
            if v is not None and v < 1:
                raise ValueError(f"{arg}={v}: must be >= 1")
        self.entailment_index = find_entailment_label(getattr(model.config, "id2label", None), entailment_label)
        prepare_pad(model, tokenizer, what=f"NLI reward {self.name!r}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.source_field, self.output = source_field, output
        self.max_length = model_max_length(model, tokenizer, max_length)
        self.num_special = int(tokenizer.num_special_tokens_to_add(pair=True))
        room = self.max_length - self.num_special
        if room < 2:
            raise ValueError(f"max_length={self.max_length} leaves {room} tokens for premise and hypothesis")
        self.max_hypothesis_tokens = min(max_hypothesis_tokens or room // 2, room - 1)
        self.max_premise_tokens, self.chunk_stride = max_premise_tokens, chunk_stride
        self.batch_size = int(batch_size)
        self.last_num_chunks = np.zeros(0, np.int64)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, source_field: str = "document", output: str = "log_prob",
        max_premise_tokens: int | None = None, chunk_stride: int | None = None, tokenizer_path=None,
        device: str = "cpu", dtype: Any = None, **kwargs: Any,
    ) -> NLIReward:
        """Load an NLI ``AutoModelForSequenceClassification`` + tokenizer by hub id or local path."""
        name = kwargs.pop("name", None) or os.path.basename(os.fspath(path).rstrip("/")) or "nli"
        model, tokenizer = load_classifier(
            path, what=f"NLI reward {name!r}", tokenizer_path=tokenizer_path, device=device, dtype=dtype
        )
        return cls(
            model, tokenizer, source_field=source_field, output=output, max_premise_tokens=max_premise_tokens,
            chunk_stride=chunk_stride, name=name, **kwargs,
        )

    # ------------------------------------------------------------------ pieces
    def _spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Per text, the character span of each token (no special tokens)."""
        tok = self.tokenizer
        if getattr(tok, "is_fast", False):
            enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
            return [[(int(a), int(b)) for a, b in offs] for offs in enc["offset_mapping"]]
        return [[(i, i + 1) for i in range(len(tok.encode(t, add_special_tokens=False)))] for t in texts]

    def _cut(self, text: str, spans: list[tuple[int, int]], start: int, end: int) -> str:
        if end <= start:
            return ""
        if getattr(self.tokenizer, "is_fast", False):
            return text[spans[start][0] : spans[end - 1][1]]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.decode(ids[start:end])

    def pairs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> tuple[list[str], list[str], np.ndarray]:
        """All (window text, hypothesis text) pairs and the example index of each."""
        hyp_spans = self._spans(list(hypotheses))
        prem_spans = self._spans(list(premises))
        room = self.max_length - self.num_special
        windows, hyps, owner = [], [], []
        truncated = 0
        for i, (prem, hyp) in enumerate(zip(premises, hypotheses)):
            h = len(hyp_spans[i])
            if h > self.max_hypothesis_tokens:
                truncated += 1
                hyp = self._cut(hyp, hyp_spans[i], 0, self.max_hypothesis_tokens)
                h = self.max_hypothesis_tokens
            chunk = room - h
            if self.max_premise_tokens is not None:
                chunk = min(chunk, self.max_premise_tokens)
            stride = self.chunk_stride if self.chunk_stride is not None else max(1, chunk // 2)
            for window in self._fitted_windows(prem, prem_spans[i], hyp, chunk, stride):
                windows.append(window)
                hyps.append(hyp)
                owner.append(i)
        if truncated:
            warnings.warn(
                f"NLI reward {self.name!r}: {truncated} hypotheses longer than {self.max_hypothesis_tokens} tokens "
                "were cut at the end (max_hypothesis_tokens)", stacklevel=3,
            )
        return windows, hyps, np.asarray(owner, np.int64)

    def _pair_length(self, window: str, hypothesis: str) -> int:
        return len(self.tokenizer(window, hypothesis, add_special_tokens=True)["input_ids"])

    def _fitted_windows(self, text: str, spans: list[tuple[int, int]], hyp: str, chunk: int, stride: int) -> list[str]:
        """The planned token windows (:func:`chunk_windows`) as texts whose pair with ``hyp``
        re-encodes within ``max_length``, extended to keep every token covered (module docstring)."""
        plan = deque(chunk_windows(len(spans), chunk, stride))
        out = []
        while plan:
            a, b = plan.popleft()
            end = b
            window = self._cut(text, spans, a, end)
            while end > a + 1 and self._pair_length(window, hyp) > self.max_length:
                end -= 1
                window = self._cut(text, spans, a, end)
            out.append(window)
            if end < b and (not plan or plan[0][0] > end):  # tokens end..b-1 would be left out
                plan.appendleft((max(a + 1, min(a + stride, end)), b))
        return out

    def pair_log_probs(self, windows: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """log p(entailment | window, hypothesis) for each pair, float32."""
        logits = classify(
            self.model, self.tokenizer, windows, hypotheses, batch_size=self.batch_size,
            max_length=self.max_length, truncation="only_first", side="right",
        ).astype(np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return log_probs[:, self.entailment_index].astype(np.float32)

    def compute(self, prompts, completions, examples) -> np.ndarray:
        premises = []
        for i, ex in enumerate(examples):
            if self.source_field not in ex:
                raise RewardError(
                    f"reward {self.name!r}: example {i} has no field {self.source_field!r} (the premise); "
                    f"its fields are {sorted(ex)}"
                )
            value = ex[self.source_field]
            if not isinstance(value, str):
                raise RewardError(
                    f"reward {self.name!r}: example {i} field {self.source_field!r} is a {type(value).__name__}, "
                    "expected str"
                )
            premises.append(value)
        windows, hyps, owner = self.pairs(premises, completions)
        scores = self.pair_log_probs(windows, hyps)
        best = np.full(len(completions), -np.inf, np.float32)
        np.maximum.at(best, owner, scores)
        self.last_num_chunks = np.bincount(owner, minlength=len(completions))
        return best if self.output == "log_prob" else np.exp(best)
