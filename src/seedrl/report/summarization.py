"""Summarization metrics: faithfulness, ROUGE, length, extractiveness, reward-hacking signals.

Pure functions of texts (and of scores computed elsewhere); nothing here loads a model.
Words are the lower-cased runs of ``[a-z0-9]`` (as ``rouge-score`` tokenizes, no stemming).
For a summary ``S`` (|S| words) of a document ``A`` (|A| words):

* **entailment rate** by the NLI model: the fraction of summaries with
  ``p(entailment | A, S) >= threshold`` (0.5), from probabilities given by the caller
  (:class:`~seedrl.rewards.nli.NLIReward` with ``output="prob"``, or ``exp`` of its
  log-probs); ``nli_prob`` is their mean. By the exact checker: the fraction that a
  ``checker(summary, document) -> bool`` (a world's ground truth, e.g.
  :meth:`FactsWorld.entails`) accepts; ``hallucination_rate`` is the fraction for which
  ``hallucinates(summary, document)`` is true (facts world: >= 1 unsupported fact).
* **ROUGE-1/2/L F** against the reference (``rouge-score``'s F-measure, no stemmer):
  ROUGE-n F = 2PR/(P+R) with P = matched n-grams / n-grams of S, R = / n-grams of the
  reference (clipped counts); ROUGE-L uses the longest common subsequence.
* **length**: words (and model tokens when given).
* **novel n-gram fraction** (n = 1, 2, 3): of the summary's n-grams (with repeats), the
  fraction that is not an n-gram of the document; undefined (skipped in means) when the
  summary has no n-gram.
* **coverage and density** (Grusky et al. 2018, Newsroom): greedy extractive fragments
  ``F(A, S)`` (:func:`fragments`: at each summary position the longest run shared with
  the document, then skip past it), ``coverage = sum_f |f| / |S|`` (in [0, 1]: the share
  of summary words inside a copied fragment) and ``density = sum_f |f|^2 / |S|`` (the
  mean length of the fragment each word sits in: high when whole passages are copied);
  ``compression = |A| / |S|``.
* **reward-hacking signals** the entailment-feedback paper warns about: *shrinking*
  (``length_ratio`` = mean words / the baseline's mean words, the baseline being the
  initial (SFT) policy's summaries or else the references; flagged below
  :data:`SHRINK_RATIO`) and *copying* (``density_ratio`` = density / the baseline's
  density, flagged above :data:`COPY_RATIO`, or the summaries nearly novel-free
  (``novel_1 < COPY_NOVEL``) while covering most of the document
  (``doc_copied >= COPY_DOC``, the share of document words inside fragments)).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ["COPY_DOC", "COPY_NOVEL", "COPY_RATIO", "SHRINK_RATIO", "extractiveness", "fragments", "novel_ngram_fraction",
           "rouge_f", "summarization_metrics", "words"]

SHRINK_RATIO = 0.75
COPY_RATIO = 1.5
COPY_NOVEL = 0.02
COPY_DOC = 0.9
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased ``[a-z0-9]+`` runs (rouge-score's tokenization without stemming)."""
    return _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def novel_ngram_fraction(summary: Sequence[str], document: Sequence[str], n: int) -> float:
    """Fraction of the summary's n-grams (with repeats) absent from the document; NaN if it has none."""
    grams = _ngrams(summary, n)
    if not grams:
        return math.nan
    known = set(_ngrams(document, n))
    return sum(g not in known for g in grams) / len(grams)


def fragments(document: Sequence[str], summary: Sequence[str]) -> list[tuple[str, ...]]:
    """Greedy extractive fragments of ``summary`` in ``document`` (Grusky et al. 2018, Newsroom).

    From summary position ``i``, the longest run ``summary[i:i+k] == document[j:j+k]`` over all
    ``j`` (the first such ``j`` on ties) is a fragment when ``k >= 1``; ``i`` then moves past
    it (or by one word when nothing matches)."""
    out, i = [], 0
    while i < len(summary):
        best = 0
        for j in range(len(document)):
            k = 0
            while i + k < len(summary) and j + k < len(document) and summary[i + k] == document[j + k]:
                k += 1
            best = max(best, k)
        if best:
            out.append(tuple(summary[i:i + best]))
        i += max(best, 1)
    return out


def extractiveness(summary: str, document: str) -> dict[str, float]:
    """Coverage, density, compression, document share copied and novel n-gram fractions (n=1..3)."""
    s, a = words(summary), words(document)
    frags = fragments(a, s)
    copied = sum(len(f) for f in frags)
    out = {
        "coverage": copied / len(s) if s else math.nan,
        "density": sum(len(f) ** 2 for f in frags) / len(s) if s else math.nan,
        "compression": len(a) / len(s) if s else math.nan,
        "doc_copied": min(copied, len(a)) / len(a) if a else math.nan,
    }
    for n in (1, 2, 3):
        out[f"novel_{n}"] = novel_ngram_fraction(s, a, n)
    return out


def rouge_f(summaries: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-pair ROUGE-1/2/L F-measures (``rouge-score``, no stemmer)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rows = [scorer.score(ref, hyp) for hyp, ref in zip(summaries, references)]
    return {k: np.array([r[k].fmeasure for r in rows], np.float64) for k in ("rouge1", "rouge2", "rougeL")}


def _mean(values) -> float:
    arr = np.asarray(list(values), np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def summarization_metrics(
    summaries: Sequence[str], documents: Sequence[str], references: Sequence[str] | None = None, *,
    nli_probs: Sequence[float] | None = None, checker: Callable[[str, str], bool] | None = None,
    hallucinates: Callable[[str, str], bool] | None = None, num_tokens: Sequence[int] | None = None,
    baseline: Mapping[str, float] | None = None, threshold: float = 0.5,
) -> dict[str, float]:
    """Means over the summaries of the metrics in the module docstring.

    ``baseline`` holds ``length_words`` and ``density`` of the summaries to compare with
    (the initial policy's, from an earlier call); without it the references' are used (when
    given) for ``length_ratio`` / ``density_ratio``. Flags ``shrinking`` / ``copying`` are 0/1.
    """
    n = len(summaries)
    if len(documents) != n or (references is not None and len(references) != n):
        raise ValueError(f"summaries ({n}), documents ({len(documents)}) and references "
                         f"({None if references is None else len(references)}) must have the same length")
    out: dict[str, float] = {"num_summaries": float(n)}
    if not n:
        return out
    if nli_probs is not None:
        p = np.asarray(nli_probs, np.float64)
        if p.shape != (n,) or np.any((p < 0) | (p > 1)):
            raise ValueError(f"nli_probs: expected {n} probabilities in [0, 1], got shape {p.shape}")
        out["entail_nli"] = float(np.mean(p >= threshold))
        out["nli_prob"] = float(p.mean())
    if checker is not None:
        out["entail_exact"] = _mean(float(bool(checker(s, d))) for s, d in zip(summaries, documents))
    if hallucinates is not None:
        out["hallucination_rate"] = _mean(float(bool(hallucinates(s, d))) for s, d in zip(summaries, documents))
    if references is not None:
        out.update({k: float(v.mean()) for k, v in rouge_f(summaries, references).items()})
    lengths = [len(words(s)) for s in summaries]
    out["length_words"] = _mean(lengths)
    if num_tokens is not None:
        out["length_tokens"] = _mean(num_tokens)
    ext = [extractiveness(s, d) for s, d in zip(summaries, documents)]
    for key in ext[0]:
        out[key] = _mean(e[key] for e in ext)
    base = dict(baseline or {})
    if not base and references is not None:
        base = {"length_words": _mean(len(words(r)) for r in references),
                "density": _mean(extractiveness(r, d)["density"] for r, d in zip(references, documents))}
    if base.get("length_words"):
        out["length_ratio"] = out["length_words"] / base["length_words"]
        out["shrinking"] = float(out["length_ratio"] < SHRINK_RATIO)
    if base.get("density") and not math.isnan(out["density"]):
        out["density_ratio"] = out["density"] / base["density"]
    copy = out.get("density_ratio", 0.0) > COPY_RATIO or (out["novel_1"] < COPY_NOVEL and out["doc_copied"] >= COPY_DOC)
    out["copying"] = float(copy)
    return out
