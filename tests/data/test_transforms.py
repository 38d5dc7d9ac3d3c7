"""rlds transformations in numpy (seedrl.data.transforms / patterns).

Each function is checked against a brute-force loop over ``list(episode)``
step dicts on generated episodes (1..20 steps, one-step ones included, nested
observations with tuples, varying-shape and str leaves), plus hand-worked
examples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seedrl.data import Episode, StepSpec
from seedrl.data import patterns as P
from seedrl.data import transforms as T
from seedrl.data.errors import DataError, EpisodeError, SpecError
from seedrl.data.spec import tree_flatten, tree_unflatten

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SAR = ("action", "reward", "discount")

# ---------------------------------------------------------------------------
# generated episodes
# ---------------------------------------------------------------------------


def make_steps(cfg: dict, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    steps = []
    for i in range(n):
        obs = {"pos": rng.normal(size=3).astype(np.float32)}
        if cfg["pixels"]:
            obs["pixels"] = rng.integers(0, 255, size=(2, 2), dtype=np.uint8)
        if cfg["pair"]:
            obs["pair"] = (np.int32(rng.integers(-5, 5)), np.float64(rng.normal()))
        if cfg["tokens"]:
            obs["tokens"] = rng.integers(0, 9, size=int(rng.integers(0, 4)), dtype=np.int64)
        if cfg["text"]:
            obs["text"] = f"step {i}"
        rdt = cfg["reward_dtype"]
        reward = rng.normal(size=2).astype(rdt) if cfg["vector_reward"] else rdt(rng.normal())
        action = np.int64(rng.integers(0, 4)) if cfg["int_action"] else rng.normal(size=2).astype(np.float32)
        discount = np.float32(0.0 if rng.random() < 0.15 else rng.uniform(0.5, 1.0))
        last = i == n - 1
        steps.append(
            dict(is_first=i == 0, is_last=last, is_terminal=last and cfg["terminal"],
                 observation=obs, action=action, reward=reward, discount=discount)
        )
    return steps


def make_episode(cfg: dict, n: int, seed: int) -> Episode:
    steps = make_steps(cfg, n, seed)
    spec = StepSpec.infer(steps, varying=["observation/tokens"] if cfg["tokens"] else ())
    return Episode.from_steps(steps, {"episode_id": seed}, spec=spec)


configs = st.fixed_dictionaries(
    dict(pixels=st.booleans(), pair=st.booleans(), tokens=st.booleans(), text=st.booleans(),
         reward_dtype=st.sampled_from([np.float32, np.float64]), vector_reward=st.booleans(),
         int_action=st.booleans(), terminal=st.booleans())
)
lengths = st.integers(1, 20)
seeds = st.integers(0, 2**31)


@st.composite
def episodes(draw, max_len=20):
    return make_episode(draw(configs), draw(st.integers(1, max_len)), draw(seeds))


@st.composite
def episode_lists(draw, max_count=4):
    cfg = draw(configs)
    count = draw(st.integers(1, max_count))
    return [make_episode(cfg, draw(lengths), draw(seeds)) for _ in range(count)]


def simple_episode(rewards, discounts, obs, terminal=True, dtype=np.float32) -> Episode:
    n = len(rewards)
    return Episode.from_steps([
        dict(is_first=i == 0, is_last=i == n - 1, is_terminal=terminal and i == n - 1,
             observation=dtype(obs[i]), action=np.int64(i), reward=dtype(rewards[i]), discount=dtype(discounts[i]))
        for i in range(n)
    ])


# ---------------------------------------------------------------------------
# comparison helpers
# ---------------------------------------------------------------------------


def flat(step) -> dict:
    return tree_flatten(step)[1]


def leaf_equal(a, b) -> bool:
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)):
        return type(a) is type(b) and a == b
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_step_equal(got, want, where=""):
    g, w = flat(got), flat(want)
    assert list(g) == list(w), f"{where}: fields {list(g)} != {list(w)}"
    for p in w:
        assert leaf_equal(g[p], w[p]), f"{where} field {p}: {g[p]!r} != {w[p]!r}"


def assert_steps_equal(got: list, want: list):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_step_equal(g, w, f"step {i}")


def assert_column_is(col, values, where=""):
    assert len(col) == len(values), where
    for j, v in enumerate(values):
        assert leaf_equal(col[j], v), f"{where}[{j}]: {col[j]!r} != {v!r}"


def zero_of(v):
    if isinstance(v, str):
        return ""
    zero = np.zeros(np.shape(v), dtype=np.asarray(v).dtype)
    return zero if isinstance(v, np.ndarray) else zero[()]


def zero_step(step):
    treedef, leaves = tree_flatten(step)
    return tree_unflatten(treedef, {p: zero_of(v) for p, v in leaves.items()})


# ---------------------------------------------------------------------------
# batch
# ---------------------------------------------------------------------------


def brute_windows(n, size, shift, stride, drop):
    out, start = [], 0
    while start < n:
        idx = [start + j * stride for j in range(size) if start + j * stride < n]
        if not (drop and len(idx) < size):
            out.append(idx)
        start += shift or size
    return out


@FAST
@given(episodes(), st.integers(1, 6), st.one_of(st.none(), st.integers(1, 6)), st.integers(1, 3), st.booleans())
def test_batch_matches_bruteforce(ep, size, shift, stride, drop):
    steps = [flat(s) for s in ep]
    windows = T.batch(ep, size, shift, stride, drop)
    want = brute_windows(len(ep), size, shift, stride, drop)
    assert len(windows) == len(want)
    for w, idx in zip(windows, want):
        assert set(w) == set(ep.spec.paths)
        for p, col in w.items():
            assert_column_is(col, [steps[i][p] for i in idx], p)
            assert np.shares_memory(col, ep.columns[p]) or len(col) == 0  # views, no copy
    nested = T.batch(ep.steps, size, shift, stride, drop)  # nested columns give the same windows
    assert [{p: c.tolist() for p, c in w.items()} for w in nested] == [{p: c.tolist() for p, c in w.items()} for w in windows]


def test_batch_hand_example_size3_shift2():
    ep = simple_episode(range(7), [1] * 7, range(7))
    starts = [w["observation"].tolist() for w in T.batch(ep, 3, shift=2)]
    assert starts == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6]]
    assert [w["action"].tolist() for w in T.batch(ep, 3, shift=2, drop_remainder=True)] == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert [w["action"].tolist() for w in T.batch(ep, 3)] == [[0, 1, 2], [3, 4, 5], [6]]


def test_batch_rlds_docstring_examples():
    ep = simple_episode([1, 2, 3, 4], [1] * 4, [1, 2, 3, 4])
    got = lambda **kw: [w["observation"].tolist() for w in T.batch(ep, **kw)]  # noqa: E731
    assert got(size=2, shift=1, stride=1) == [[1, 2], [2, 3], [3, 4], [4]]
    assert got(size=2, shift=1, stride=1, drop_remainder=True) == [[1, 2], [2, 3], [3, 4]]
    assert got(size=2, shift=2, stride=1) == [[1, 2], [3, 4]]
    assert got(size=2, shift=1, stride=2) == [[1, 3], [2, 4], [3], [4]]
    with pytest.raises(ValueError):
        T.batch(ep, 0)


# ---------------------------------------------------------------------------
# map / sum / final step / zeros
# ---------------------------------------------------------------------------


def double_reward(step):
    out = dict(step, reward=step["reward"] * 2, observation=dict(step["observation"], bonus=np.float32(1.5)))
    return out


@FAST
@given(episode_lists(max_count=2))
def test_map_steps_and_map_nested_steps(eps):
    for ep, mapped in zip(eps, T.map_nested_steps(eps, double_reward)):
        assert_steps_equal(list(mapped), [double_reward(s) for s in ep])
        assert mapped.metadata == ep.metadata
        assert mapped.spec.field("observation/bonus").dtype == "float32"
        if "observation/tokens" in ep.spec.paths:
            assert not mapped.spec.field("observation/tokens").is_fixed
    assert T.apply_nested_steps(eps, len) == [len(e) for e in eps]


@FAST
@given(episode_lists())
def test_sum_field_matches_bruteforce(eps):
    steps = [flat(s) for ep in eps for s in ep]
    for path in ("reward", "action", "observation/pos", "discount", "is_terminal"):
        want = sum((np.asarray(s[path]).astype(np.float64) for s in steps), np.zeros(np.shape(steps[0][path])))
        got = T.sum_field(eps, path)
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-9, atol=1e-9)
        dtype = np.asarray(steps[0][path]).dtype
        assert np.asarray(got).dtype == (np.float64 if dtype.kind == "f" else np.int64)
    assert T.sum_field(eps[0], "reward").shape == np.shape(steps[0]["reward"])
    sub = T.sum_field(eps, "observation/pair") if "observation/pair/0" in eps[0].spec.paths else None
    if sub is not None:
        assert isinstance(sub, tuple) and sub[0] == sum(int(s["observation/pair/0"]) for s in steps)
    fn_sum = T.sum_field(eps, lambda s: {"r": s["reward"], "n": 1})
    np.testing.assert_allclose(fn_sum["r"], T.sum_field(eps, "reward"), rtol=1e-12)
    assert fn_sum["n"] == len(steps)


def test_sum_field_errors():
    cfg = dict(pixels=False, pair=False, tokens=False, text=True, reward_dtype=np.float32,
               vector_reward=False, int_action=True, terminal=False)
    ep = make_episode(cfg, 3, 0)
    with pytest.raises(DataError, match="observation/text"):
        T.sum_field(ep, "observation/text")
    with pytest.raises(KeyError, match="nope"):
        T.sum_field(ep, "nope")
    with pytest.raises(DataError):
        T.sum_field([], "reward")


@FAST
@given(episodes())
def test_final_step_length_and_zeros(ep):
    steps = list(ep)
    assert T.episode_length(ep) == len(steps)
    assert_step_equal(T.final_step(ep), steps[-1])
    zeros = T.zeros_from_spec(ep.spec)
    zf = flat(zeros)
    assert list(zf) == ep.spec.paths
    for f in ep.spec.fields:
        v = zf[f.path]
        if f.is_text:
            assert v == ""
        else:
            assert v.dtype.name == f.dtype and np.shape(v) == tuple(1 if d is None else d for d in f.shape)
            assert not np.any(v)
    assert_step_equal(T.zeros_like_step(steps[-1]), zero_step(steps[-1]))


# ---------------------------------------------------------------------------
# concatenate / concat_if_terminal / truncate
# ---------------------------------------------------------------------------


@FAST
@given(episode_lists(max_count=2))
def test_concatenate_same_spec(eps):
    a, b = eps[0], eps[-1]
    got = T.concatenate(a, b)
    assert_steps_equal(list(got), list(a) + list(b))
    assert got.metadata == a.metadata
    assert T.concatenate(a, b, metadata={"episode_id": "x"}).metadata == {"episode_id": "x"}


def test_concatenate_adds_missing_fields_as_zeros():
    a = simple_episode([1, 2], [1, 1], [0, 1], terminal=False)
    steps_b = [dict(s, extra=np.arange(3, dtype=np.int16) + i) for i, s in enumerate(simple_episode([5], [1], [7]))]
    b = Episode.from_steps(steps_b)
    got = T.concatenate(a, b)
    want = [dict(s, extra=np.zeros(3, np.int16)) for s in a] + steps_b
    assert_steps_equal(list(got), want)
    assert list(got.spec.paths)[-1] == "extra"
    with pytest.raises(EpisodeError):  # flags are kept: is_last in the middle
        Episode.from_columns(got.spec, got.columns)
    c = Episode.from_steps([dict(s, observation=np.int64(1)) for s in a])
    with pytest.raises(SpecError, match="observation"):
        T.concatenate(a, c)


@FAST
@given(episodes(), st.integers(0, 3))
def test_concat_if_terminal_with_absorbing_steps(ep, k):
    steps = list(ep)
    got = T.concat_if_terminal(ep, lambda last: T.absorbing_steps(last, k))
    extra = [zero_step(steps[-1]) for _ in range(k)] if steps[-1]["is_terminal"] else []
    assert_steps_equal(list(got), steps + extra)
    if extra:  # rlds: flags are what the function made; the original last step keeps them
        assert got.columns["is_last"].tolist() == [False] * (len(ep) - 1) + [True] + [False] * k
        assert got.columns["is_terminal"].tolist() == [False] * (len(ep) - 1) + [True] + [False] * k
    marked = T.concat_if_terminal(ep, lambda last: T.absorbing_steps(last, 1, fill={"is_last": True}))
    if steps[-1]["is_terminal"]:
        assert bool(marked[len(ep)]["is_last"]) and not bool(marked[len(ep)]["is_terminal"])
    else:
        assert len(marked) == len(ep)


def test_concat_if_terminal_user_steps_with_new_field_and_python_numbers():
    ep = simple_episode([1, 2], [1, 0], [3, 4])
    absorbing = dict(T.absorbing_steps(T.final_step(ep))[0], is_last=True)
    got = T.concat_if_terminal(ep, lambda last: dict(absorbing, reward=0.0))  # python float -> float32
    assert got.columns["reward"].dtype == np.float32 and len(got) == 3
    got = T.concat_if_terminal(ep, lambda last: [dict(absorbing, absorbing=np.float32(1))])
    assert got.columns["absorbing"].tolist() == [0, 0, 1]
    with pytest.raises(KeyError):
        T.absorbing_steps(T.final_step(ep), 1, fill={"nope": 1})


@FAST
@given(episodes(), st.floats(-2, 2))
def test_truncate_after_condition(ep, thr):
    cond = lambda s: np.all(s["reward"] > thr)  # noqa: E731
    want = []
    for s in ep:
        want.append(s)
        if cond(s):
            break
    got = T.truncate_after_condition(ep, cond)
    assert_steps_equal(list(got), want)
    assert got.metadata == ep.metadata


# ---------------------------------------------------------------------------
# shift_keys
# ---------------------------------------------------------------------------


@FAST
@given(episodes(), st.sampled_from([["reward"], ["observation"], ["reward", "discount"], ["action", "observation/pos"]]),
       st.integers(-4, 4))
def test_shift_keys_matches_bruteforce(ep, keys, shift):
    steps = [flat(s) for s in ep]
    moved = [p for p in ep.spec.paths if any(p == k or p.startswith(k + "/") for k in keys)]
    got = T.shift_keys(ep, keys, shift)
    m = max(0, len(ep) - abs(shift))
    assert len(got) == m
    for i in range(m):
        src_moved, src_other = i + max(shift, 0), i + max(-shift, 0)
        for p in ep.spec.paths:
            want = steps[src_moved if p in moved else src_other][p]
            assert leaf_equal(got.columns[p][i], want), (i, p)


def test_shift_keys_sar_to_rsa_by_hand():
    ep = simple_episode([10, 20, 30, 0], [1, 1, 1, 0], [0, 1, 2, 3])
    rsa = T.shift_keys(ep, ["reward", "discount"], -1)  # step i: r_{i-1}, o_i, a_i
    assert rsa.columns["observation"].tolist() == [1, 2, 3]
    assert rsa.columns["reward"].tolist() == [10, 20, 30]
    assert rsa.columns["action"].tolist() == [1, 2, 3]
    ahead = T.shift_keys(ep, "observation", 1)  # step i: o_{i+1}, a_i, r_i
    assert ahead.columns["observation"].tolist() == [1, 2, 3] and ahead.columns["reward"].tolist() == [10, 20, 30]
    assert len(T.shift_keys(ep, ["reward"], 9)) == 0
    assert T.shift_keys(ep, ["reward"], 0).columns["reward"].tolist() == [10, 20, 30, 0]
    with pytest.raises(KeyError):
        T.shift_keys(ep, ["nope"], 1)


# ---------------------------------------------------------------------------
# mean_and_std
# ---------------------------------------------------------------------------


def brute_mean_std(eps, path, mask):
    vals = [np.asarray(flat(s)[path], dtype=np.float64) for ep in eps for s in ep
            if not (mask and path.split("/")[0] in SAR and s["is_last"])]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, mean * math.nan
    return mean, np.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


@FAST
@given(episode_lists(), st.booleans())
def test_mean_and_std_matches_bruteforce(eps, mask):
    paths = ["observation/pos", "reward", "action", "discount"]
    mean, std = T.mean_and_std(iter(eps), paths, sar_fields_mask=mask)  # a one-shot iterator is fine
    assert set(mean) == set(std) == set(paths)
    for p in paths:
        want_mean, want_std = brute_mean_std(eps, p, mask)
        shape = np.shape(flat(eps[0][0])[p])
        assert mean[p].dtype == std[p].dtype == np.float64 and mean[p].shape == std[p].shape == shape
        np.testing.assert_allclose(mean[p], np.broadcast_to(want_mean, shape), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(std[p], np.broadcast_to(want_std, shape), rtol=1e-9, atol=1e-12)


def test_mean_and_std_by_hand():
    ep = simple_episode([1, 3, 100], [1, 1, 0], [0, 2, 4])
    mean, std = T.mean_and_std(ep, ["reward", "observation"])  # the last reward is invalid in SAR
    assert mean["reward"] == 2 and std["reward"] == pytest.approx(math.sqrt(2))
    assert mean["observation"] == 2 and std["observation"] == pytest.approx(2)
    mean, std = T.mean_and_std(ep, ["reward", "observation"], sar_fields_mask=False)
    assert mean["reward"] == pytest.approx(104 / 3) and std["reward"] == pytest.approx(math.sqrt(19214 / 6))
    assert mean["observation"] == 2
    _, std0 = T.mean_and_std(ep, "reward", ddof=0)
    assert std0["reward"] == pytest.approx(1.0)
    one = simple_episode([5], [1], [7])
    mean, std = T.mean_and_std([one, one], ["reward", "observation"])
    assert np.isnan(mean["reward"]) and np.isnan(std["reward"])  # no valid reward at all
    assert mean["observation"] == 7 and std["observation"] == 0


@FAST
@given(episode_lists(max_count=2))
def test_mean_and_std_sar_mask_follows_is_last_flags(eps):
    # concatenate keeps the first episode's is_last step (mid-episode): the mask goes by the flag
    joined = T.concatenate(eps[0], eps[-1])
    paths = ["reward", "action", "observation/pos"]
    for got, want in zip(T.mean_and_std(joined, paths), T.mean_and_std([eps[0], eps[-1]], paths)):
        for p in paths:
            np.testing.assert_allclose(got[p], want[p], rtol=1e-9, atol=1e-12)


def test_mean_and_std_is_numerically_stable():
    base = 1e9
    eps = [simple_episode([0] * 5, [1] * 5, base + np.arange(5), dtype=np.float64),
           simple_episode([0] * 5, [1] * 5, base + np.arange(5, 10), dtype=np.float64)]
    mean, std = T.mean_and_std(eps, "observation")
    assert mean["observation"] == base + 4.5
    assert std["observation"] == pytest.approx(math.sqrt(82.5 / 9), rel=1e-12)
    cfg = dict(pixels=False, pair=False, tokens=False, text=True, reward_dtype=np.float32,
               vector_reward=False, int_action=True, terminal=False)
    with pytest.raises(DataError, match="observation/text"):
        T.mean_and_std(make_episode(cfg, 2, 0), "observation")


# ---------------------------------------------------------------------------
# patterns: n-step, SARS, pattern_map
# ---------------------------------------------------------------------------


def brute_n_step(ep, n, gamma):
    steps = [flat(s) for s in ep]
    size, out = len(steps), []
    reward_paths = [p for p in steps[0] if p == "reward" or p.startswith("reward/")]
    for t in range(size - 1):
        m = min(n, size - 1 - t)
        ret = {p: np.zeros(np.shape(steps[t][p])) for p in reward_paths}
        w = 1.0
        for k in range(m):
            for p in reward_paths:
                ret[p] = ret[p] + w * np.asarray(steps[t + k][p], dtype=np.float64)
            w *= gamma * float(steps[t + k]["discount"])
        out.append((t, t + m, ret, w))
    return steps, out


@FAST
@given(episodes(), st.integers(1, 5), st.floats(0, 1))
def test_n_step_transitions_match_bruteforce(ep, n, gamma):
    steps, want = brute_n_step(ep, n, gamma)
    got = P.n_step_transitions(ep, n, gamma)
    obs_paths = [p for p in ep.spec.paths if p.startswith("observation/")]
    act_paths = [p for p in ep.spec.paths if p == "action" or p.startswith("action/")]
    assert set(got) == set(obs_paths + act_paths + ["reward", "discount"] + ["next_" + p for p in obs_paths])
    assert all(len(c) == len(ep) - 1 for c in got.values())
    assert got["reward"].dtype == ep.spec.field("reward").dtype and got["discount"].dtype == np.float32
    rtol = 1e-6 if got["reward"].dtype == np.float32 else 1e-12
    for i, (t, nxt, ret, w) in enumerate(want):
        for p in obs_paths + act_paths:
            assert leaf_equal(got[p][i], steps[t][p]), (i, p)
            if p in obs_paths:
                assert leaf_equal(got["next_" + p][i], steps[nxt][p]), (i, p)
        np.testing.assert_allclose(got["reward"][i], ret["reward"], rtol=rtol, atol=1e-6)
        np.testing.assert_allclose(got["discount"][i], w, rtol=1e-6, atol=1e-7)


def test_n_step_hand_example_gamma_09():
    # 4 steps: r = 1, 2, 3, (0 on the last step), d = 1, 0.5, 0 (terminal transition), 0.
    ep = simple_episode([1, 2, 3, 0], [1, 0.5, 0, 0], [0, 1, 2, 3], dtype=np.float64)
    two = P.n_step_transitions(ep, 2, 0.9)
    np.testing.assert_allclose(two["reward"], [1 + 0.9 * 2, 2 + 0.9 * 0.5 * 3, 3])  # 2.8, 3.35, 3
    np.testing.assert_allclose(two["discount"], [0.9 * 0.9 * 0.5, 0, 0])  # 0.405
    assert two["observation"].tolist() == [0, 1, 2] and two["next_observation"].tolist() == [2, 3, 3]
    three = P.n_step_transitions(ep, 3, 0.9)
    np.testing.assert_allclose(three["reward"], [1 + 1.8 + 0.81 * 0.5 * 3, 3.35, 3])  # 4.015
    assert three["next_observation"].tolist() == [3, 3, 3]
    one_step = P.n_step_transitions(simple_episode([1], [1], [5]), 3, 0.9)
    assert all(len(c) == 0 for c in one_step.values()) and one_step["reward"].dtype == np.float32
    with pytest.raises(ValueError):
        P.n_step_transitions(ep, 0, 0.9)


@FAST
@given(episodes(), st.sampled_from([1.0, 0.99, 0.5]))
def test_sars_transitions(ep, gamma):
    steps = [flat(s) for s in ep]
    got = T.sars_transitions(ep, gamma)
    assert len(got["reward"]) == len(ep) - 1
    for t in range(len(ep) - 1):
        assert leaf_equal(got["reward"][t], steps[t]["reward"])
        assert leaf_equal(got["action"][t], steps[t]["action"])
        assert leaf_equal(got["next_observation/pos"][t], steps[t + 1]["observation/pos"])
        assert got["discount"][t] == np.float32(gamma * np.float64(steps[t]["discount"]))


@FAST
@given(episode_lists(), st.integers(1, 4), st.booleans())
def test_pattern_map_matches_bruteforce(eps, length, respect):
    fn = lambda w: (w["action"], w["observation"]["pos"])  # noqa: E731
    got = P.pattern_map(eps, fn, length, respect_episode_boundaries=respect)
    runs = [list(ep) for ep in eps] if respect else [[s for ep in eps for s in ep]]
    want = [(run[t - length + 1 : t + 1]) for run in runs for t in range(length - 1, len(run))]
    assert len(got) == len(want)
    for (actions, pos), window in zip(got, want):
        assert leaf_equal(actions, np.stack([s["action"] for s in window]))
        assert leaf_equal(pos, np.stack([s["observation"]["pos"] for s in window]))
    skipped = P.pattern_map(eps, lambda w: None if w["is_first"][0] else 1, 1)
    assert len(skipped) == sum(len(e) for e in eps) - len(eps)
