"""Hypothesis strategies and builders for RLDS episodes (shared by the data tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from seedrl.data import Episode, StepSpec

NUMERIC_DTYPES = [
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool",
]
NAN_PAYLOAD = np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f", dtype=np.float64)[0]


def random_values(rng: np.random.Generator, dtype: str, shape: tuple) -> np.ndarray:
    """Values that exercise the full bit range: extremes, NaN payloads, -0.0."""
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        out = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        if out.size:
            out.flat[0] = info.max
        return out
    raw = rng.integers(0, 256, size=(*shape, dt.itemsize), dtype=np.uint8)
    out = raw.view(dt).reshape(shape).copy()  # any bit pattern: NaNs with payloads, infs, subnormals
    if out.size and dt == np.float64:
        out.flat[0] = NAN_PAYLOAD
    return out


@st.composite
def step_specs(draw) -> tuple[dict, list[str]]:
    """A recipe for steps: {path: (dtype, shape-or-'varying')} over a nested observation."""
    n_obs = draw(st.integers(1, 3))
    obs = {}
    for i in range(n_obs):
        kind = draw(st.sampled_from(["fixed", "scalar", "varying", "str", "bytes"]))
        dtype = draw(st.sampled_from(NUMERIC_DTYPES))
        if kind == "fixed":
            obs[f"o{i}"] = (dtype, tuple(draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))))
        elif kind == "scalar":
            obs[f"o{i}"] = (dtype, ())
        elif kind == "varying":
            obs[f"o{i}"] = (dtype, "varying")
        else:
            obs[f"o{i}"] = (kind, ())
    action = (draw(st.sampled_from(NUMERIC_DTYPES)), tuple(draw(st.lists(st.integers(1, 2), max_size=2))))
    reward = (draw(st.sampled_from(["float32", "float64", "float16"])), draw(st.sampled_from([(), (0,), (2,)])))
    return {"obs": obs, "action": action, "reward": reward, "nested_tuple": draw(st.booleans())}


def make_value(rng, dtype, shape):
    if dtype == "str":
        return "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, size=rng.integers(0, 5)))
    if dtype == "bytes":
        return bytes(rng.integers(0, 256, size=rng.integers(0, 5), dtype=np.uint8))
    if shape == "varying":
        return random_values(rng, dtype, (int(rng.integers(0, 5)),))
    return random_values(rng, dtype, shape)


def make_steps(recipe: dict, n: int, seed: int, terminal: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    steps = []
    for i in range(n):
        obs = {k: make_value(rng, *v) for k, v in recipe["obs"].items()}
        action = make_value(rng, *recipe["action"])
        if recipe["nested_tuple"]:
            action = (action, make_value(rng, "int32", ()))
        steps.append(
            {
                "observation": obs,
                "action": action,
                "reward": make_value(rng, *recipe["reward"]),
                "discount": np.float32(0.0 if (terminal and i == n - 1) else 1.0),
                "is_first": i == 0,
                "is_last": i == n - 1,
                "is_terminal": terminal and i == n - 1,
            }
        )
    return steps


def recipe_spec(recipe: dict) -> StepSpec:
    """The exact spec for a recipe (varying fields marked, whatever the draws)."""
    varying = [f"observation/{k}" for k, v in recipe["obs"].items() if v[1] == "varying"]
    return StepSpec.infer(make_steps(recipe, 2, 0), varying=varying)


def make_episode(recipe: dict, n: int, seed: int, **metadata) -> Episode:
    return Episode.from_steps(make_steps(recipe, n, seed), metadata, spec=recipe_spec(recipe))


def simple_steps(n: int, seed: int = 0, frame: tuple = (4, 4), terminal: bool = True) -> list[dict]:
    """CartPole-like steps with a small uint8 frame, for non-property tests."""
    rng = np.random.default_rng(seed)
    return [
        {
            "observation": {"frame": rng.integers(0, 255, frame, dtype=np.uint8), "pos": rng.normal(size=2)},
            "action": np.int64(rng.integers(0, 3)),
            "reward": np.float32(rng.normal()),
            "discount": np.float32(0.0 if terminal and i == n - 1 else 1.0),
            "is_first": i == 0,
            "is_last": i == n - 1,
            "is_terminal": terminal and i == n - 1,
        }
        for i in range(n)
    ]
