import math

import numpy as np
import pytest

from seedrl.rewards import (
    CallableReward,
    CombinedReward,
    RewardError,
    RewardFn,
    as_reward_fn,
    validate_rewards,
)

P = ["p0", "p1", "p2"]
C = ["a", "bb", "ccc"]
E = [{"k": 0}, {"k": 1}, {"k": 2}]


def length(prompt, completion, example):
    return len(completion)


def test_callable_per_example_and_batched_agree():
    single = CallableReward(length)
    batched = CallableReward(lambda ps, cs, es: [len(c) for c in cs], batched=True, name="len_b")
    r1, r2 = single(P, C, E), batched(P, C, E)
    assert r1.dtype == np.float32 and r1.shape == (3,)
    np.testing.assert_array_equal(r1, [1, 2, 3])
    np.testing.assert_array_equal(r1, r2)
    assert single.name == "length"
    # examples are passed through
    ex = CallableReward(lambda p, c, e: e["k"] * 10)
    np.testing.assert_array_equal(ex(P, C, E), [0, 10, 20])
    # examples default to empty dicts; empty batch -> empty float32
    assert single(P, C).tolist() == [1, 2, 3]
    assert single([], []).shape == (0,)


def test_wrong_shape_names_reward_and_shapes():
    bad = CallableReward(lambda ps, cs, es: np.zeros((3, 1)), batched=True, name="shapey")
    with pytest.raises(RewardError, match=r"'shapey'.*expected shape \(3,\).*\(3, 1\)"):
        bad(P, C, E)
    short = CallableReward(lambda ps, cs, es: [1.0, 2.0], batched=True, name="short")
    with pytest.raises(RewardError, match=r"'short'.*\(2,\)"):
        short(P, C, E)
    with pytest.raises(RewardError, match="2 prompts but 3 completions"):
        short(P[:2], C, E)
    with pytest.raises(RewardError, match="2 examples but 3 completions"):
        short(P, C, E[:2])
    with pytest.raises(RewardError, match="completion 1 is a int"):
        short(P, ["a", 3, "c"], E)


def test_nan_error_names_index_and_zero_mode_replaces():
    values = [1.0, float("nan"), -math.inf]
    fn = CallableReward(lambda ps, cs, es: values, batched=True, name="nanny")
    with pytest.raises(RewardError, match=r"'nanny'.*index 1.*2 of 3 non-finite.*nan='zero'"):
        fn(P, C, E)
    zero = CallableReward(lambda ps, cs, es: values, batched=True, name="nanny", nan="zero")
    np.testing.assert_array_equal(zero(P, C, E), [1.0, 0.0, 0.0])
    assert zero.num_nonfinite == 2
    with pytest.raises(ValueError, match="nan='ignore'"):
        CallableReward(length, nan="ignore")


def test_per_example_failure_and_bad_value_name_index():
    def boom(p, c, e):
        if e["k"] == 2:
            raise KeyError("missing")
        return 1.0

    with pytest.raises(RewardError, match=r"'boom': failed on index 2: KeyError"):
        CallableReward(boom)(P, C, E)
    with pytest.raises(RewardError, match=r"index 0 returned str"):
        CallableReward(lambda p, c, e: "high", name="s")(P, C, E)


def test_validate_rewards_accepts_torch_and_lists():
    torch = pytest.importorskip("torch")
    r, n = validate_rewards(torch.tensor([1.5, 2.5], dtype=torch.float64), 2, name="t")
    assert r.dtype == np.float32 and r.tolist() == [1.5, 2.5] and n == 0
    with pytest.raises(RewardError, match="non-numeric"):
        validate_rewards(["x", "y"], 2, name="t")


def test_combined_weights_closed_form_and_breakdown():
    a = CallableReward(length, name="len")
    b = CallableReward(lambda p, c, e: e["k"], name="k")
    plain = lambda ps, cs, es: np.ones(len(cs))
    comb = CombinedReward([(a, 0.5), (b, -2.0), plain, (a, 1.0)])
    r = comb(P, C, E)
    lens, ks = np.array([1, 2, 3]), np.array([0, 1, 2])
    np.testing.assert_allclose(r, 0.5 * lens - 2.0 * ks + 1 + lens, rtol=0, atol=1e-6)
    total, parts = comb.breakdown(P, C, E)
    np.testing.assert_array_equal(total, r)
    assert list(parts) == ["len", "k", "<lambda>", "len#3"]
    np.testing.assert_array_equal(parts["k"], ks)
    with pytest.raises(ValueError, match="at least one"):
        CombinedReward([])
    with pytest.raises(ValueError, match="component 0 weight 'x'"):
        CombinedReward([(a, "x")])
    with pytest.raises(TypeError):
        as_reward_fn(3)


def test_combined_component_error_names_component():
    bad = CallableReward(lambda ps, cs, es: [0.0, float("nan"), 0.0], batched=True, name="inner")
    with pytest.raises(RewardError, match="'inner'.*index 1"):
        CombinedReward([(CallableReward(length), 1.0), (bad, 0.1)])(P, C, E)


def test_subclass_protocol():
    class Const(RewardFn):
        def compute(self, prompts, completions, examples):
            return [7] * len(completions)

    r = Const()(P, C, E)
    assert r.dtype == np.float32 and r.tolist() == [7, 7, 7]
    assert "Const" in repr(Const())
