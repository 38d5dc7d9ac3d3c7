"""Completions as RLDS steps, for the trajectory store.

One completion is one step::

    {"observation": {"prompt": str, "prompt_tokens": int32[P]},
     "action":      {"completion": str, "completion_tokens": int32[C]},
     "reward": float32, "discount": float32,
     "is_first": bool, "is_last": bool, "is_terminal": bool,
     **metadata}                          # extra step fields, e.g. behaviour log-probs

A single-turn episode is that one step with ``is_first = is_last =
is_terminal = True`` and ``discount = 0`` (no bootstrapping past the end, the
Gymnasium recorder's convention for terminated episodes). A multi-turn
conversation has one step per assistant turn; the last carries
``is_last`` (and ``is_terminal`` unless the turn limit cut it short, in which
case its discount is 1). Unlike Gymnasium recordings there is no extra final
observation step: the conversation after the last completion is the last
prompt plus that completion.

Token ids are stored as int32 (``None`` = not known: an empty array).
Token arrays differ in length from step to step, so the dataset spec must
mark them varying: :func:`completion_spec` does
(``StepSpec.infer(step, varying=...)`` with the token fields and every
array-valued metadata field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from seedrl.data.spec import CORE_FIELDS, StepSpec, tree_flatten

PROMPT, PROMPT_TOKENS = "prompt", "prompt_tokens"
COMPLETION, COMPLETION_TOKENS = "completion", "completion_tokens"
TOKEN_PATHS = (f"observation/{PROMPT_TOKENS}", f"action/{COMPLETION_TOKENS}")
TOKEN_DTYPE = np.int32

__all__ = ["TOKEN_PATHS", "completion_spec", "completion_step", "token_array"]


def token_array(tokens: Any, field: str) -> np.ndarray:
    """Token ids as a 1-D int32 array (None -> empty); errors name ``field``."""
    if tokens is None:
        return np.zeros(0, TOKEN_DTYPE)
    if hasattr(tokens, "detach"):  # torch tensor
        tokens = tokens.detach().cpu().numpy()
    arr = np.asarray(tokens)
    if arr.size == 0 and arr.ndim == 1:
        return np.zeros(0, TOKEN_DTYPE)
    if arr.ndim != 1:
        raise ValueError(f"field '{field}': token ids must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"field '{field}': token ids must be integers, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > np.iinfo(TOKEN_DTYPE).max:
        raise ValueError(f"field '{field}': token id out of range [0, 2**31): min {arr.min()}, max {arr.max()}")
    return arr.astype(TOKEN_DTYPE)


def completion_step(
    prompt_text: str, prompt_tokens: Any, completion_text: str, completion_tokens: Any, reward: float,
    metadata: Mapping[str, Any] | None = None, *, is_first: bool = True, is_last: bool = True,
    is_terminal: bool = True, discount: float | None = None,
) -> dict[str, Any]:
    """One completion as an RLDS step dict (see the module docstring).

    ``metadata`` entries become extra top-level step fields (str, numbers or
    arrays; the same keys and dtypes in every step of a dataset). The
    discount defaults to 0.0 for a terminal step and 1.0 otherwise.
    """
    for field, text in (("observation/prompt", prompt_text), ("action/completion", completion_text)):
        if not isinstance(text, str):
            raise TypeError(f"field '{field}': expected str, got {type(text).__name__}")
    try:
        r = np.float32(reward)
    except (TypeError, ValueError):
        raise TypeError(f"field 'reward': expected a number, got {type(reward).__name__} {reward!r:.60}") from None
    if np.ndim(reward) != 0:
        raise TypeError(f"field 'reward': expected a scalar, got shape {np.shape(reward)}")
    if discount is None:
        discount = 0.0 if is_terminal else 1.0
    if is_terminal and not is_last:
        raise ValueError("is_terminal=True requires is_last=True")
    step = {
        "observation": {PROMPT: prompt_text, PROMPT_TOKENS: token_array(prompt_tokens, TOKEN_PATHS[0])},
        "action": {COMPLETION: completion_text, COMPLETION_TOKENS: token_array(completion_tokens, TOKEN_PATHS[1])},
        "reward": r,
        "discount": np.float32(discount),
        "is_first": bool(is_first),
        "is_last": bool(is_last),
        "is_terminal": bool(is_terminal),
    }
    for key, value in (metadata or {}).items():
        if key in step:
            raise ValueError(f"metadata key {key!r} clashes with the step field of that name; rename it")
        step[key] = value
    return step


def completion_spec(steps: Mapping[str, Any] | Sequence[Mapping[str, Any]], varying: Iterable[str] = ()) -> StepSpec:
    """The StepSpec of completion steps: token arrays and array metadata vary in length."""
    first = steps if isinstance(steps, Mapping) else steps[0]
    _, leaves = tree_flatten(first)
    arrays = [
        p for p, v in leaves.items()
        if p not in CORE_FIELDS and not isinstance(v, (str, bytes)) and np.ndim(v) >= 1
    ]
    return StepSpec.infer(steps, varying=set(TOKEN_PATHS) | set(arrays) | set(varying))
