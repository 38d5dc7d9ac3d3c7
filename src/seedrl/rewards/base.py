"""The reward protocol: a batch of (prompt, completion, example) -> float32 [B].

Every reward in seedrl is a callable

    reward_fn(prompts: list[str], completions: list[str], examples: list[dict]) -> np.ndarray

returning one float32 reward per completion (shape ``[B]``). ``examples[i]``
is the task example the i-th prompt was rendered from (its fields: the source
document, the reference answer...), so rewards can compare a completion with
ground truth. Any plain callable with that signature can be used; subclasses
of :class:`RewardFn` get validation for free:

* the raw output is converted to ``float32`` and must have shape ``[B]``
  (a wrong shape raises :class:`RewardError` naming the reward and both
  shapes);
* non-finite values (NaN, +-inf) are handled by ``nan``:

  - ``nan="error"`` (default): raise :class:`RewardError` naming the reward,
    the first offending index and value, and how many there are;
  - ``nan="zero"``: replace them with 0.0 (count in :attr:`RewardFn.num_nonfinite`).

:class:`CallableReward` wraps a function (per example or batched) and
:class:`CombinedReward` forms ``r = sum_k w_k r_k``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from seedrl.errors import UserError

NAN_MODES = ("error", "zero")


class RewardError(UserError):
    """A reward function returned something unusable (shape, NaN, failure)."""


def _check_nan_mode(nan: str) -> str:
    if nan not in NAN_MODES:
        raise ValueError(f"nan={nan!r}: expected one of {NAN_MODES}")
    return nan


def validate_rewards(values: Any, batch_size: int, *, name: str, nan: str = "error") -> tuple[np.ndarray, int]:
    """Coerce ``values`` to float32 ``[batch_size]``; returns (rewards, #non-finite replaced).

    Raises :class:`RewardError` naming ``name`` for a wrong shape, a
    non-numeric value, or (``nan="error"``) a non-finite value.
    """
    _check_nan_mode(nan)
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().float().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise RewardError(f"reward {name!r}: returned non-numeric values ({values!r:.80}): {e}") from None
    if arr.shape != (batch_size,):
        raise RewardError(
            f"reward {name!r}: expected shape ({batch_size},) (one reward per completion), got shape {arr.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        if nan == "error":
            i = int(bad[0])
            raise RewardError(
                f"reward {name!r}: non-finite reward {float(arr[i])} at index {i} "
                f"({bad.size} of {batch_size} non-finite; pass nan='zero' to replace them with 0)"
            )
        arr = arr.copy()
        arr[bad] = 0.0
    return arr, int(bad.size)


def check_batch(prompts: Sequence[str], completions: Sequence[str], examples: Sequence[Mapping] | None, name: str):
    """Validate the three batch arguments; returns (prompts, completions, examples) as lists."""
    prompts, completions = list(prompts), list(completions)
    if len(prompts) != len(completions):
        raise RewardError(f"reward {name!r}: {len(prompts)} prompts but {len(completions)} completions")
    examples = [{} for _ in completions] if examples is None else list(examples)
    if len(examples) != len(completions):
        raise RewardError(f"reward {name!r}: {len(examples)} examples but {len(completions)} completions")
    for kind, items in (("prompt", prompts), ("completion", completions)):
        for i, s in enumerate(items):
            if not isinstance(s, str):
                raise RewardError(f"reward {name!r}: {kind} {i} is a {type(s).__name__}, expected str ({s!r:.60})")
    return prompts, completions, examples


class RewardFn:
    """Base class: implement :meth:`compute`; ``__call__`` validates.

    Attributes:
        name: used in every error message (default: the class name).
        nan: ``"error"`` or ``"zero"`` (see the module docstring).
        num_nonfinite: how many non-finite rewards the last call replaced.
    """

    name: str = ""
    nan: str = "error"

    def __init__(self, *, name: str | None = None, nan: str = "error") -> None:
        self.name = name or self.name or type(self).__name__
        self.nan = _check_nan_mode(nan)
        self.num_nonfinite = 0

    def compute(self, prompts: list[str], completions: list[str], examples: list[dict]) -> Any:
        raise NotImplementedError

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], examples: Sequence[Mapping] | None = None
    ) -> np.ndarray:
        prompts, completions, examples = check_batch(prompts, completions, examples, self.name)
        if not completions:
            return np.zeros(0, np.float32)
        raw = self.compute(prompts, completions, examples)
        rewards, self.num_nonfinite = validate_rewards(raw, len(completions), name=self.name, nan=self.nan)
        return rewards

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CallableReward(RewardFn):
    """Wrap a Python function as a :class:`RewardFn`.

    ``batched=False``: ``fn(prompt, completion, example) -> float`` is called
    once per completion (an exception is re-raised as :class:`RewardError`
    naming the index). ``batched=True``: ``fn(prompts, completions, examples)
    -> sequence of B floats`` is called once.
    """

    def __init__(self, fn: Callable, *, batched: bool = False, name: str | None = None, nan: str = "error") -> None:
        if not callable(fn):
            raise TypeError(f"CallableReward: fn must be callable, got {type(fn).__name__}")
        super().__init__(name=name or getattr(fn, "__name__", None) or type(fn).__name__, nan=nan)
        self.fn, self.batched = fn, bool(batched)

    def compute(self, prompts, completions, examples):
        if self.batched:
            return self.fn(prompts, completions, examples)
        out = np.empty(len(completions), np.float32)
        for i, (p, c, e) in enumerate(zip(prompts, completions, examples)):
            try:
                value = self.fn(p, c, e)
            except Exception as err:
                raise RewardError(f"reward {self.name!r}: failed on index {i}: {type(err).__name__}: {err}") from err
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                raise RewardError(
                    f"reward {self.name!r}: index {i} returned {type(value).__name__} {value!r:.60}, expected a float"
                ) from None
        return out


def load_reward_callable(spec: str, key: str = "task.reward") -> CallableReward:
    """The batched reward ``'module:function'`` names (``module`` importable from the working
    directory or ``sys.path``); a spec that does not import or is not callable is a
    :class:`RewardError` naming ``key`` and the spec."""
    import importlib
    import sys

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RewardError(f"{key}={spec!r}: expected 'module:function' (e.g. my_rewards:score)")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # a module beside the config, as `python -m` would find it
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise RewardError(f"{key}={spec!r}: cannot import module {module_name!r}: {type(err).__name__}: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RewardError(f"{key}={spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardError(f"{key}={spec!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return CallableReward(obj, batched=True, name=spec)


def check_reward_on(reward: RewardFn, prompts: Sequence[Any], key: str) -> None:
    """A trial call before training: ``reward`` on ``prompts`` (drawn :class:`TextPrompt`-likes with
    ``text`` and ``example``) and empty completions must give one finite float each, or a
    :class:`RewardError` names ``key`` now rather than at update ~15."""
    if not prompts:
        return
    texts, examples = [p.text for p in prompts], [p.example for p in prompts]
    try:
        reward(texts, [""] * len(texts), examples)
    except RewardError as err:
        raise RewardError(f"{key}: a trial call on {len(texts)} prompts failed: {err}") from err
    except Exception as err:
        raise RewardError(f"{key}: a trial call on {len(texts)} prompts (empty completions) raised "
                          f"{type(err).__name__}: {err}") from err


def as_reward_fn(fn: Any) -> RewardFn:
    """A :class:`RewardFn` as is; any other callable as a batched :class:`CallableReward`."""
    if isinstance(fn, RewardFn):
        return fn
    if callable(fn):
        return CallableReward(fn, batched=True)
    raise TypeError(f"expected a reward function, got {type(fn).__name__} {fn!r:.60}")


class CombinedReward(RewardFn):
    """A weighted sum ``r_i = sum_k w_k * r_k(prompts, completions, examples)_i``.

    ``components`` is a list of ``(reward_fn, weight)`` pairs (a bare reward
    fn gets weight 1). Each component validates its own output (its errors
    name it); :meth:`breakdown` also returns the unweighted per-component
    rewards, keyed by component name (duplicates get ``#k`` suffixes), for
    logging.
    """

    def __init__(self, components: Sequence[Any], *, name: str | None = None, nan: str = "error") -> None:
        super().__init__(name=name or "combined", nan=nan)
        pairs = []
        for k, item in enumerate(components):
            fn, weight = item if isinstance(item, tuple) else (item, 1.0)
            try:
                weight = float(weight)
            except (TypeError, ValueError):
                raise ValueError(f"CombinedReward: component {k} weight {weight!r} is not a number") from None
            if not np.isfinite(weight):
                raise ValueError(f"CombinedReward: component {k} weight {weight} is not finite")
            pairs.append((as_reward_fn(fn), weight))
        if not pairs:
            raise ValueError("CombinedReward: needs at least one (reward_fn, weight) component")
        self.components = pairs
        names: list[str] = []
        for fn, _ in pairs:
            n = fn.name
            names.append(n if n not in names else f"{n}#{len(names)}")
        self.component_names = names

    def breakdown(self, prompts, completions, examples=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Returns (total reward [B], {component name: unweighted rewards [B]})."""
        parts = {n: fn(prompts, completions, examples) for n, (fn, _) in zip(self.component_names, self.components)}
        total = np.zeros(len(completions), np.float64)
        for n, (_, w) in zip(self.component_names, self.components):
            total += w * parts[n].astype(np.float64)
        rewards, self.num_nonfinite = validate_rewards(total, len(completions), name=self.name, nan=self.nan)
        return rewards, parts

    def compute(self, prompts, completions, examples):
        return self.breakdown(prompts, completions, examples)[0]
