"""Our numpy rlds transformations against the real ``rlds`` package.

``seedrl.data.transforms`` / ``seedrl.data.patterns`` re-implement
``rlds.transformations`` (0.1.8) on in-memory Episodes. Here both run on the
same seeded random episodes (nested dict observation with a uint8 image, a
tuple action, an extra top-level field ``t`` = step index) and their outputs
must agree field by field: bit for bit with dtype and shape for everything
that only moves steps around (windows, shifts, truncation, concatenation,
patterns, zeros), to float tolerance for sums and statistics (rlds sums in
the field dtype, we in float64).

Needs the pinned environment (requirements-compat.txt: TF 2.15, rlds 0.1.8,
dm-reverb, numpy 1.26):
    .venv-compat/bin/python -m pytest tests/compat/test_rlds_transforms_compat.py -q -m compat
"""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
rlds = pytest.importorskip("rlds")
reverb = pytest.importorskip("reverb")

from seedrl.data import patterns as P  # noqa: E402
from seedrl.data import transforms as T  # noqa: E402
from seedrl.data.episode import Episode  # noqa: E402
from seedrl.data.spec import tree_flatten, tree_unflatten  # noqa: E402

pytestmark = pytest.mark.compat

RT = rlds.transformations
SW = reverb.structured_writer

# ------------------------------------------------------------------ helpers


def make_episode(rng: np.random.Generator, n: int, *, terminal: bool, x_dim: int = 2, extra: str | None = None):
    """A random n-step RLDS episode; ``extra`` adds a float32 top-level field of that name."""
    steps = []
    for i in range(n):
        step = {
            "is_first": i == 0,
            "is_last": i == n - 1,
            "is_terminal": bool(terminal and i == n - 1),
            "observation": {
                "x": rng.normal(size=x_dim).astype(np.float32),
                "img": rng.integers(0, 256, (2, 3), dtype=np.uint8),
                "k": np.int64(rng.integers(0, 6)),
            },
            "action": (np.int32(rng.integers(0, 5)), rng.normal(size=2)),
            "reward": np.float32(rng.normal()),
            "discount": np.float32(rng.uniform()),
            "t": np.int64(i),
        }
        if extra:
            step[extra] = np.float32(rng.normal())
        steps.append(step)
    return Episode.from_steps(steps)


def tf_steps(ep: Episode):
    """rlds dataset of steps of one episode."""
    return tf.data.Dataset.from_tensor_slices(ep.steps)


def tf_episodes(eps):
    """rlds dataset of episodes ``{"steps": dataset of steps}``."""
    out = None
    for e in eps:
        d = tf.data.Dataset.from_tensors({"steps": tf_steps(e)})
        out = d if out is None else out.concatenate(d)
    return out


def _leaves(tree) -> dict[str, np.ndarray]:
    return {p: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for p, v in tree_flatten(tree)[1].items()}


def assert_same(ours, theirs, where: str) -> None:
    """Same paths, and per leaf the same dtype, shape and bits."""
    o, t = _leaves(ours), _leaves(theirs)
    assert sorted(o) == sorted(t), f"{where}: our fields {sorted(o)} vs rlds {sorted(t)}"
    for p in o:
        np.testing.assert_array_equal(o[p], t[p], err_msg=f"{where}: field '{p}'", strict=True)


def assert_close(ours, theirs, where: str, rtol: float, atol: float = 0.0) -> None:
    """Same paths and shapes; values equal to tolerance (dtypes may differ)."""
    o, t = _leaves(ours), _leaves(theirs)
    assert sorted(o) == sorted(t), f"{where}: our fields {sorted(o)} vs rlds {sorted(t)}"
    for p in o:
        assert o[p].shape == t[p].shape, f"{where}: field '{p}' shape {o[p].shape} vs rlds {t[p].shape}"
        np.testing.assert_allclose(o[p], t[p], rtol=rtol, atol=atol, err_msg=f"{where}: field '{p}'")


def assert_same_steps(ours: Episode, theirs_ds, where: str) -> None:
    theirs = list(theirs_ds)
    assert len(ours) == len(theirs), f"{where}: {len(ours)} steps vs rlds {len(theirs)}"
    for i, t in enumerate(theirs):
        assert_same(ours[i], t, f"{where}, step {i}")


# ---------------------------------------------------------- windows / shifts


@pytest.mark.parametrize("n", [3, 8])
def test_batch_matches_rlds(n):
    ep = make_episode(np.random.default_rng(n), n, terminal=True)
    combos = itertools.product((1, 2, 4), (None, 1, 3), (1, 2, 3), (False, True))
    for size, shift, stride, drop in combos:
        where = f"n={n} size={size} shift={shift} stride={stride} drop_remainder={drop}"
        ours = P.batch(ep, size, shift, stride, drop)
        theirs = list(RT.batch(tf_steps(ep), size, shift, stride, drop))
        assert len(ours) == len(theirs), f"{where}: {len(ours)} windows vs rlds {len(theirs)}"
        for k, (o, t) in enumerate(zip(ours, theirs)):
            assert_same(tree_unflatten(ep.spec.treedef, o), t, f"{where}, window {k}")


@pytest.mark.parametrize("n", [2, 7])
def test_shift_keys_matches_rlds(n):
    ep = make_episode(np.random.default_rng(10 + n), n, terminal=False)
    for shift in (-3, -1, 1, 2):
        for keys in (["reward"], ["observation", "action"]):
            ours = P.shift_keys(ep, keys, shift)
            assert_same_steps(ours, RT.shift_keys(tf_steps(ep), keys, shift), f"n={n} keys={keys} shift={shift}")


def test_shift_keys_zero_is_the_documented_divergence():
    """rlds drops every step for shift=0; we return the episode unchanged (docstring)."""
    ep = make_episode(np.random.default_rng(3), 4, terminal=False)
    assert len(list(RT.shift_keys(tf_steps(ep), ["reward"], 0))) == 0
    ours = P.shift_keys(ep, ["reward"], 0)
    assert len(ours) == 4 and ours.equals(ep)


# --------------------------------------------------- truncation / concatenation


@pytest.mark.parametrize("n", [1, 6])
def test_truncate_after_condition_matches_rlds(n):
    ep = make_episode(np.random.default_rng(20 + n), n, terminal=True)
    rewards = np.sort(ep.columns["reward"])
    # true at step 0, never true, and true first somewhere in the middle
    for thr in (-np.inf, np.inf, float(rewards[len(rewards) // 2]) - 1e-6):
        cond = lambda s, thr=thr: s["reward"] > thr  # noqa: E731  (same function on both sides)
        ours = T.truncate_after_condition(ep, cond)
        assert_same_steps(ours, RT.truncate_after_condition(tf_steps(ep), cond), f"n={n} reward > {thr}")


@pytest.mark.parametrize("terminal", [True, False])
@pytest.mark.parametrize("n_extra", [1, 2])
def test_concat_if_terminal_matches_rlds(terminal, n_extra):
    ep = make_episode(np.random.default_rng(30 + n_extra), 4, terminal=terminal)

    def zeros_ds(last):  # rlds: a dataset of n_extra zero steps (flags False)
        return tf.data.Dataset.from_tensors(tf.nest.map_structure(tf.zeros_like, last)).repeat(n_extra)

    ours = T.concat_if_terminal(ep, lambda last: T.absorbing_steps(last, n_extra))
    assert len(ours) == 4 + (n_extra if terminal else 0)
    assert_same_steps(ours, RT.concat_if_terminal(tf_steps(ep), zeros_ds), f"terminal={terminal} n_extra={n_extra}")


@pytest.mark.parametrize(
    "case",
    [
        dict(),  # same spec
        dict(extra_b="extra"),  # a field only in the second episode: zeros in the first
        dict(extra_a="only_a", extra_b="only_b"),  # one such field on each side
        dict(x_dim_b=3),  # observation/x has shape (2,) then (3,): rlds gives shape (None,)
    ],
    ids=["same", "extra_in_b", "extra_both", "varying_shape"],
)
def test_concatenate_matches_rlds(case):
    rng = np.random.default_rng(40)
    a = make_episode(rng, 3, terminal=True, extra=case.get("extra_a"))
    b = make_episode(rng, 2, terminal=False, extra=case.get("extra_b"), x_dim=case.get("x_dim_b", 2))
    assert_same_steps(T.concatenate(a, b), RT.concatenate(tf_steps(a), tf_steps(b)), str(case))


# ------------------------------------------------------------ basic queries


@pytest.mark.parametrize("n", [1, 5])
def test_final_step_and_episode_length_match_rlds(n):
    ep = make_episode(np.random.default_rng(50 + n), n, terminal=True)
    assert_same(T.final_step(ep), RT.final_step(tf_steps(ep)), f"final_step n={n}")
    assert T.episode_length(ep) == int(RT.episode_length(tf_steps(ep))) == n


def test_zeros_from_spec_matches_rlds():
    rng = np.random.default_rng(60)
    ep = make_episode(rng, 3, terminal=False)
    assert_same(T.zeros_from_spec(ep.spec), RT.zeros_from_spec(tf_steps(ep).element_spec), "fixed spec")
    # a varying dimension (None) gets size 1 on both sides
    varying = T.concatenate(ep, make_episode(rng, 2, terminal=False, x_dim=4))
    assert varying.spec.field("observation/x").shape == (None,)
    tf_spec = tree_unflatten(
        varying.spec.treedef, {f.path: tf.TensorSpec(f.shape, tf.as_dtype(f.dtype)) for f in varying.spec.fields}
    )
    zeros = T.zeros_from_spec(varying.spec)
    assert_same(zeros, RT.zeros_from_spec(tf_spec), "varying spec")
    assert np.shape(zeros["observation"]["x"]) == (1,)


# ------------------------------------------------------------------ summing


def _pick(step):
    """data_to_sum for rlds and for our sum_field (plain indexing works on both)."""
    return {"r": step["reward"], "k": step["observation"]["k"], "a1": step["action"][1], "d": step["discount"]}


def test_sum_dataset_and_sum_nested_steps_match_rlds():
    rng = np.random.default_rng(70)
    eps = [make_episode(rng, n, terminal=bool(n % 2)) for n in (1, 6, 3, 9)]
    tol = dict(rtol=1e-5, atol=1e-5)  # rlds accumulates float32 fields in float32, we in float64
    for i, ep in enumerate(eps[:2]):
        where = f"sum_dataset, episode {i}"
        theirs = RT.sum_dataset(tf_steps(ep), _pick)
        assert_close(T.sum_field(ep, _pick), theirs, where, **tol)
        np.testing.assert_allclose(T.sum_field(ep, "reward"), theirs["r"].numpy(), **tol)  # a leaf path
        # a subtree path (ours) vs a data_to_sum selecting it (rlds; the uint8 image cast
        # to int64 there since rlds sums in the field dtype and uint8 would wrap)
        theirs = RT.sum_dataset(
            tf_steps(ep), lambda s: {**s["observation"], "img": tf.cast(s["observation"]["img"], tf.int64)}
        )
        assert_close(T.sum_field(ep, "observation"), theirs, where + " (observation)", **tol)
    assert_close(T.sum_field(eps, _pick), RT.sum_nested_steps(tf_episodes(eps), _pick), "sum_nested_steps", **tol)
    total_k = RT.sum_nested_steps(tf_episodes(eps), lambda s: s["observation"]["k"]).numpy()
    assert T.sum_field(eps, "observation/k") == total_k  # integers: exact


# --------------------------------------------------------------- statistics


def _to64(tree):
    return tf.nest.map_structure(lambda v: tf.cast(v, tf.float64), tree)


def _sar_with_discount(step):
    """rlds's own sar_fields_mask (observation always, action/reward not on is_last) plus
    discount masked like action/reward, cast to float64 (rlds sums in the field dtype)."""
    data, mask = RT.sar_fields_mask(step)
    data = {**data, "discount": step["discount"]}
    mask = {**mask, "discount": tf.logical_not(step["is_last"])}
    return _to64(data), mask


def _all_valid(step):
    keys = ("observation", "action", "reward", "discount")
    return _to64({k: step[k] for k in keys}), {k: True for k in keys}


@pytest.mark.parametrize("masked", [True, False], ids=["sar_mask", "no_mask"])
def test_mean_and_std_match_rlds(masked):
    rng = np.random.default_rng(80)
    # the one-step episode adds an observation but no valid action/reward/discount;
    # the last one has is_last on its 2nd and 5th steps (the mask follows the flag)
    eps = [make_episode(rng, n, terminal=True) for n in (3, 1, 6)]
    eps.append(T.concatenate(make_episode(rng, 2, terminal=False), make_episode(rng, 3, terminal=True)))
    paths = ["observation", "action", "reward", "discount"]
    om, osd = T.mean_and_std(eps, paths, sar_fields_mask=masked)
    tm, tsd = RT.mean_and_std(tf_episodes(eps), _sar_with_discount if masked else _all_valid)
    for what, ours, theirs in (("mean", om, tm), ("std", osd, tsd)):
        t = _leaves(theirs)
        assert sorted(ours) == sorted(t), f"{what}: our fields {sorted(ours)} vs rlds {sorted(t)}"
        for p in ours:
            assert ours[p].dtype == np.float64 and ours[p].shape == t[p].shape, (what, p, ours[p], t[p])
            np.testing.assert_allclose(ours[p], t[p], rtol=1e-9, atol=1e-12, err_msg=f"{what} '{p}' masked={masked}")
    # the mask matters: masked means differ from unmasked ones for reward
    other, _ = T.mean_and_std(eps, "reward", sar_fields_mask=not masked)
    assert not np.isclose(other["reward"], om["reward"])


# ----------------------------------------------------------------- patterns

# Each transform is applied as-is by both sides: to Reverb's reference step
# (building a pattern) and to our window (leaves [length, ...]).
TRANSFORMS = {
    "last3_obs": (3, lambda s: {"obs": tf.nest.map_structure(lambda x: x[-3:], s["observation"])}),
    "transition": (
        2,
        lambda s: {
            "o": s["observation"]["x"][-2],
            "a": s["action"][0][-2],
            "r": s["reward"][-2],
            "d": s["discount"][-2],
            "next_o": s["observation"]["x"][-1],
        },
    ),
    "strided": (6, lambda s: {"t": s["t"][-6::3], "k": s["observation"]["k"][-4:-1], "a1": s["action"][1][-1:]}),
    "single": (1, lambda s: {"img": s["observation"]["img"][-1], "first": s["is_first"][-1], "t": s["t"][-1]}),
}


def _pattern_episodes():
    rng = np.random.default_rng(90)
    return [make_episode(rng, n, terminal=bool(n % 2)) for n in (1, 5, 2, 7, 3)]


def _compare_patterns(ours, theirs_ds, where):
    theirs = list(theirs_ds)
    assert len(ours) == len(theirs), f"{where}: {len(ours)} items vs reverb {len(theirs)}"
    for i, (o, t) in enumerate(zip(ours, theirs)):
        assert_same(o, t, f"{where}, item {i}")
    return len(ours)


@pytest.mark.parametrize("respect", [True, False], ids=["within_episodes", "across_episodes"])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_pattern_map_matches_rlds_pattern_map_from_transform(name, respect):
    length, transform = TRANSFORMS[name]
    eps = _pattern_episodes()
    ours = P.pattern_map(eps, transform, length, respect)
    theirs = RT.pattern_map_from_transform(tf_episodes(eps), transform, respect_episode_boundaries=respect)
    count = _compare_patterns(ours, theirs, f"{name} respect={respect}")
    lengths = [len(e) for e in eps]
    assert count == (sum(max(0, n - length + 1) for n in lengths) if respect else sum(lengths) - length + 1)


def test_pattern_map_conditions_match_reverb():
    """Reverb conditions vs our ``None`` outputs (step index and data conditions)."""
    eps = _pattern_episodes()
    episodes = tf_episodes(eps)
    spec = RT.pattern.step_spec(episodes)
    length, transform = TRANSFORMS["transition"]
    pattern = SW.pattern_from_transform(spec, transform)
    cases = {
        "even step index": (SW.Condition.step_index() % 2 == 0, lambda w: w["t"][-1] % 2 == 0),
        "data k >= 3": (SW.Condition.data(spec)["observation"]["k"] >= 3, lambda w: w["observation"]["k"][-1] >= 3),
    }
    for where, (condition, keep) in cases.items():
        config = SW.create_config(pattern, table="unused", conditions=[condition])
        ours = P.pattern_map(eps, lambda w, keep=keep: transform(w) if keep(w) else None, length)
        count = _compare_patterns(ours, RT.pattern_map(episodes, [config]), where)
        assert 0 < count < sum(len(e) - 1 for e in eps), f"{where}: the condition should select some items"
