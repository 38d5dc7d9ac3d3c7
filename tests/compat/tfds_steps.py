"""Comparing seedrl episodes with what tfds's loader yields (``tfds.as_numpy`` episodes)."""

from __future__ import annotations

from typing import Any, Callable, Iterable


def flat(tree: Any, prefix: str = "") -> dict:
    """A nested dict -> ``{'a/b': leaf}`` (the store's field paths)."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}/{k}" if prefix else k))
        return out
    return {prefix: tree}


def assert_steps_match(ours: Iterable, theirs: list, check: Callable[[str, Any, Any], None]) -> list[dict]:
    """Every step field of every episode, ``check(path, our value, tfds's value)``; returns tfds's
    episodes without their steps (the episode-level features), one per episode."""
    ours = list(ours)
    assert len(ours) == len(theirs)
    rest = []
    for mine, episode in zip(ours, theirs):
        episode = dict(episode)
        steps = list(episode.pop("steps"))
        assert len(steps) == len(mine)
        for t, step in enumerate(steps):
            values = flat(step)
            assert set(values) == set(mine.columns), set(values) ^ set(mine.columns)
            for path, value in values.items():
                check(path, mine.columns[path][t], value)
        rest.append(episode)
    return rest
