"""Shared plumbing for rewards backed by Hugging Face sequence classifiers.

Loading (:func:`load_classifier`) goes through the same
``AutoModelForSequenceClassification.from_pretrained`` / ``AutoTokenizer``
path for a hub id or a local directory; failures name the path. Scoring
(:func:`classify`) tokenizes everything once, sorts by length (less padding),
runs batches of ``batch_size`` under ``torch.inference_mode`` and returns the
logits in the original order as float32 ``[N, num_labels]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from seedrl.errors import InputFileError, check_model_folder

TRUNCATION_SIDES = ("left", "right")


def resolve_dtype(dtype: Any):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype={dtype!r}: not a torch dtype name (e.g. 'float32', 'bfloat16')")
    return value


def load_classifier(
    path: str | os.PathLike, *, what: str, tokenizer_path: str | os.PathLike | None = None,
    device: str = "cpu", dtype: Any = None, pad_token: str | None = None,
):
    """(model, tokenizer) from ``from_pretrained``; the model is in eval mode on ``device``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = os.fspath(path)
    check_model_folder(path, what)
    kwargs = {"dtype": resolve_dtype(dtype)} if dtype is not None else {}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise InputFileError(f"{what}: cannot load a sequence-classification model from {path!r}: "
                             f"{_first_line(e)}") from e
    tok_path = os.fspath(tokenizer_path) if tokenizer_path is not None else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
    except (OSError, ValueError) as e:
        raise InputFileError(f"{what}: cannot load a tokenizer from {tok_path!r}: {_first_line(e)}") from e
    prepare_pad(model, tokenizer, what=what, where=tok_path, pad_token=pad_token)
    return model.to(device).eval(), tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def prepare_pad(model, tokenizer, *, what: str, where: str = "", pad_token: str | None = None) -> None:
    """Make batching possible: the tokenizer needs a pad token, the model its id."""
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    if tokenizer.pad_token is None:
        raise InputFileError(
            f"{what}: tokenizer{' at ' + repr(where) if where else ''} has no pad token, so completions cannot be "
            f"batched; pass pad_token= (e.g. pad_token=tokenizer.eos_token, eos={tokenizer.eos_token!r})"
        )
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def model_max_length(model, tokenizer, max_length: int | None) -> int:
    """The token budget per input: ``max_length`` or min(tokenizer, position embeddings)."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    for attr in ("max_position_embeddings", "n_positions"):
        v = getattr(model.config, attr, None)
        if isinstance(v, int) and v > 0:
            limits.append(v)
            break
    if max_length is not None:
        if max_length <= 0:
            raise ValueError(f"max_length={max_length}: must be positive")
        if limits and max_length > min(limits):
            raise ValueError(f"max_length={max_length} exceeds the model's limit of {min(limits)} tokens")
        return int(max_length)
    if not limits:
        raise ValueError("cannot tell the model's maximum input length; pass max_length=")
    # RoBERTa-style models reserve positions for the padding offset.
    offset = 2 if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
    return min(limits) - offset


@contextmanager
def truncation_side(tokenizer, side: str):
    if side not in TRUNCATION_SIDES:
        raise ValueError(f"truncation_side={side!r}: expected one of {TRUNCATION_SIDES}")
    old = tokenizer.truncation_side
    tokenizer.truncation_side = side
    try:
        yield
    finally:
        tokenizer.truncation_side = old


def classify(
    model, tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *, batch_size: int,
    max_length: int, truncation: str | bool = True, side: str = "right",
) -> np.ndarray:
    """Logits float32 ``[N, num_labels]`` for ``texts`` (and text ``pairs``), original order."""
    import torch

    n = len(texts)
    if n == 0:
        return np.zeros((0, model.config.num_labels), np.float32)
    with truncation_side(tokenizer, side):
        enc = tokenizer(
            list(texts), None if pairs is None else list(pairs), truncation=truncation, max_length=max_length,
            padding=False,
        )
    keys = [k for k in enc if k in ("input_ids", "attention_mask", "token_type_ids")]
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    out = np.empty((n, model.config.num_labels), np.float32)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            feats = [{k: enc[k][i] for k in keys} for i in idx]
            batch = tokenizer.pad(feats, padding=True, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out[idx] = model(**batch).logits.float().cpu().numpy()
    return out
