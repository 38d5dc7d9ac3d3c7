"""Key maps: which keys held down give which action.

A key is a browser ``KeyboardEvent.code`` (``ArrowLeft``, ``Space``, ``KeyZ``,
``Digit1``...); an entry may join several with ``+`` (``ArrowUp+Space``).
The action for a set ``H`` of held keys is that of the entry with the most keys
among those whose keys are all in ``H`` (ties: the entry listed first); with no
such entry it is the ``default`` action (the no-op, played at each frame in
which no mapped key is held). ``Escape`` ends the episode and ``Enter`` plays
the default action (turn by turn) or starts an episode (at a frame rate): neither
may be mapped.

Default maps, by action space:

- ``Discrete(2)`` (CartPole...): ``ArrowLeft`` -> 0, ``ArrowRight`` -> 1, default 0;
- ``Discrete(n)`` with action meanings (Atari): each meaning spelled with
  arrows and ``Space`` for ``FIRE`` (``UPRIGHTFIRE`` -> ``ArrowUp+ArrowRight+Space``),
  default ``NOOP``;
- other ``Discrete(n)``, n <= 10: ``Digit0`` .. ``Digit{n-1}``, default 0.

Anything else (``Box`` actions, larger discrete spaces) needs a map given with
``--keys``: a JSON object ``{"keys": {KEY: ACTION, ...}, "default": ACTION}``
(or just the ``keys`` object), where an action is an integer, or for ``Box``
spaces a list of numbers inside the space's bounds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from gymnasium import spaces

from seedrl.errors import InputFileError

RESERVED = ("Escape", "Enter")
_CODE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_MEANING_KEYS = {"UP": "ArrowUp", "DOWN": "ArrowDown", "LEFT": "ArrowLeft", "RIGHT": "ArrowRight", "FIRE": "Space"}


class KeyMapError(InputFileError):
    """A key map that cannot drive the environment; the message names the field and the value."""


@dataclass(frozen=True)
class KeyMap:
    """``entries``: (keys, action) pairs in priority order for equal sizes; ``default``: the no-key action."""

    entries: tuple[tuple[frozenset[str], Any], ...]
    default: Any

    def action(self, held: Iterable[str]) -> Any:
        """The action of the held keys (the largest entry they cover, else the default)."""
        held = set(held)
        best, size = self.default, 0
        for keys, action in self.entries:
            if len(keys) > size and keys <= held:
                best, size = action, len(keys)
        return best

    @property
    def keys(self) -> list[str]:
        """Every single key that takes part in an entry (the page tracks these)."""
        return sorted({k for keys, _ in self.entries for k in keys})

    def to_json(self) -> dict:
        """``{"keys": {"A+B": action}, "default": action}``: what :func:`parse_key_map` reads back."""
        keys = {"+".join(sorted(held)): plain_action(a) for held, a in self.entries}
        return {"keys": keys, "default": plain_action(self.default)}


def plain_action(action: Any) -> Any:
    """An action as JSON: an int, or nested lists of numbers."""
    return np.asarray(action).tolist()


def _check_action(space: spaces.Space, value: Any, field: str) -> Any:
    """``value`` as the space's action (np.int64 or a float array), or :class:`KeyMapError` naming ``field``."""
    if isinstance(space, spaces.Discrete):
        if isinstance(value, bool) or not isinstance(value, int):
            raise KeyMapError(f"key map {field}: {value!r} is not an integer action of {space}")
        if not space.contains(np.int64(value)):
            raise KeyMapError(f"key map {field}: {value!r} is outside {space} "
                              f"(actions {space.start}..{space.start + space.n - 1})")
        return np.int64(value)
    if isinstance(space, spaces.Box):
        try:
            arr = np.asarray(value, dtype=space.dtype).reshape(space.shape)
        except (TypeError, ValueError):
            raise KeyMapError(f"key map {field}: {value!r} is not an action of shape {space.shape} for {space}") from None
        if not isinstance(value, (list, int, float)) or not space.contains(arr):
            raise KeyMapError(f"key map {field}: {value!r} is outside {space}")
        return arr
    raise KeyMapError(f"actions of type {type(space).__name__} ({space}) cannot be played from the keyboard")


def _check_keys(name: Any) -> frozenset[str]:
    if not isinstance(name, str) or not name:
        raise KeyMapError(f"key map keys: {name!r} is not a key name")
    keys = frozenset(k.strip() for k in name.split("+"))
    for key in keys:
        if not _CODE.match(key):
            raise KeyMapError(f"key map keys.{name}: {key!r} is not a KeyboardEvent.code (ArrowLeft, Space, KeyZ, Digit1...)")
        if key in RESERVED:
            raise KeyMapError(f"key map keys.{name}: {key!r} is reserved ({RESERVED[0]} ends the episode, "
                              f"{RESERVED[1]} plays the default action)")
    return keys


def parse_key_map(data: Any, space: spaces.Space) -> KeyMap:
    """A :class:`KeyMap` from the JSON form, checked against ``space`` (no ``default``: a Discrete space's first action)."""
    if not isinstance(data, dict):
        raise KeyMapError(f"key map: expected a JSON object of key -> action, got {type(data).__name__}")
    if "keys" in data:
        unknown = sorted(set(data) - {"keys", "default"})
        if unknown:
            raise KeyMapError(f"key map: unknown field {unknown[0]!r} (fields: keys, default)")
        keys, default = data["keys"], data.get("default")
        if not isinstance(keys, dict):
            raise KeyMapError(f"key map keys: expected an object of key -> action, got {type(keys).__name__}")
    else:
        keys, default = data, None
    if not keys:
        raise KeyMapError("key map keys: empty; map at least one key to an action")
    entries, seen = [], {}
    for name, action in keys.items():
        held = _check_keys(name)
        if held in seen:
            raise KeyMapError(f"key map keys.{name}: the same keys as {seen[held]!r}")
        seen[held] = name
        entries.append((held, _check_action(space, action, f"keys.{name}")))
    if default is None:
        if not isinstance(space, spaces.Discrete):
            raise KeyMapError(f"key map default: missing; {space} has no no-op to play when no key is held")
        default = int(space.start)
    return KeyMap(tuple(entries), _check_action(space, default, "default"))


def meaning_keys(meaning: str) -> str | None:
    """``"UPRIGHTFIRE"`` -> ``"ArrowUp+ArrowRight+Space"``; None for ``NOOP`` or a meaning not made of the five words."""
    rest, keys = meaning.upper(), []
    while rest:
        word = next((w for w in _MEANING_KEYS if rest.startswith(w)), None)
        if word is None:
            return None
        keys.append(_MEANING_KEYS[word])
        rest = rest[len(word):]
    return "+".join(keys) or None


def default_key_map(space: spaces.Space, meanings: Sequence[str] | None = None) -> KeyMap:
    """The default map for ``space`` (see the module doc); :class:`KeyMapError` when there is none."""
    if isinstance(space, spaces.Discrete) and meanings is not None and len(meanings) == space.n:
        keys, default = {}, None
        for i, meaning in enumerate(meanings):
            action = int(space.start) + i
            if meaning.upper() == "NOOP" and default is None:
                default = action
            combo = meaning_keys(meaning)
            if combo is not None and combo not in keys:
                keys[combo] = action
        if keys:
            return parse_key_map({"keys": keys, "default": default}, space)
    if isinstance(space, spaces.Discrete) and space.n == 2:
        return parse_key_map({"ArrowLeft": int(space.start), "ArrowRight": int(space.start) + 1}, space)
    if isinstance(space, spaces.Discrete) and space.n <= 10:
        return parse_key_map({f"Digit{i}": int(space.start) + i for i in range(space.n)}, space)
    raise KeyMapError(f"--keys: no default key map for {space} actions; give one, e.g. "
                      '--keys \'{"keys": {"ArrowLeft": ..., "ArrowRight": ...}, "default": ...}\'')


def load_key_map(text: str | None, space: spaces.Space, meanings: Sequence[str] | None = None) -> KeyMap:
    """The map of ``--keys`` (inline JSON, or a JSON file's path), else the default map of ``space``.

    A given map without ``default`` plays a ``Discrete`` space's first action (Atari's ``NOOP``)."""
    if text is None:
        return default_key_map(space, meanings)
    source = "--keys"
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise KeyMapError(f"--keys: {text!r} is neither a JSON object nor a JSON file")
        source, text = f"--keys file {str(path)!r}", path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError as err:
        raise KeyMapError(f"{source}: not valid JSON ({err})") from None
    return parse_key_map(data, space)
