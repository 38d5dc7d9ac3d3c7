"""Best-of-N: closed forms, estimates against them on a categorical toy policy, and a
real run on a tiny GPT-2."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from seedrl.agents.bon import best_of_n, evaluate_bon, exact_bon, kl_upper_bound, log_ratio

PROBS = (0.5, 0.3, 0.2)
TEXTS = ("a", "b", "c")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CategoricalPolicy:
    """A fake policy: every completion is one of TEXTS with probabilities PROBS (the
    ``generate(prompts, params)`` interface of LMPolicy, prompt-major, ``params.n`` each)."""

    def __init__(self, probs=PROBS, seed=0):
        self.probs, self.rng, self.calls = np.asarray(probs), np.random.default_rng(seed), 0

    def generate(self, prompts, params, **kw):
        self.calls += 1
        idx = self.rng.choice(len(self.probs), size=len(prompts) * params.n, p=self.probs)
        return [SimpleNamespace(text=TEXTS[i], tokens=[int(i)], finish_reason="eos") for i in idx]


def table_reward(values):
    table = dict(zip(TEXTS, values))
    return lambda prompts, completions, examples: np.array([table[c] for c in completions], np.float32)


def expected_estimator(probs, rewards, n, k):
    """E[KL estimate] for finite k: the BoN expectation of E_q[g_N(p^_<=, p^_<)] with
    (#q<r, #q=r) multinomial over k reference samples (brute force over all counts)."""
    p, r = np.asarray(probs), np.asarray(rewards)
    pi = exact_bon(probs, rewards, n)["probs"]
    total = 0.0
    for i in range(len(p)):
        lt, eq = p[r < r[i]].sum(), p[r == r[i]].sum()
        gt = 1 - lt - eq
        acc = 0.0
        for a in range(k + 1):  # a = #q < r, b = #q == r
            for b in range(k + 1 - a):
                c = k - a - b
                if (lt == 0 and a) or (gt <= 1e-15 and c):
                    continue
                logpmf = (math.lgamma(k + 1) - math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(c + 1)
                          + (a * math.log(lt) if a else 0) + b * math.log(eq) + (c * math.log(gt) if c else 0))
                acc += math.exp(logpmf) * float(log_ratio((a + b + 1) / (k + 1), a / (k + 1), n))
        total += pi[i] * acc
    return total


def test_closed_forms():
    e2, e4 = exact_bon(PROBS, (0, 1, 2), 2), exact_bon(PROBS, (0, 1, 2), 4)
    np.testing.assert_allclose(e2["probs"], [0.25, 0.39, 0.36], atol=1e-12)
    assert e2["kl"] == pytest.approx(0.1406, abs=5e-5) and e4["kl"] == pytest.approx(0.5598, abs=5e-5)
    assert e2["win_rate"] == pytest.approx(0.25 * 0.25 + 0.39 * (0.5 + 0.15) + 0.36 * (0.8 + 0.1))
    for n in (1, 2, 4, 8, 64):  # continuous limit: many equiprobable distinct rewards reach the bound
        e = exact_bon(np.full(500, 1 / 500), np.arange(500), n)
        assert e["kl"] <= kl_upper_bound(n) + 1e-12
        assert e["kl"] == pytest.approx(kl_upper_bound(n), abs=1e-3)
    tied = exact_bon(PROBS, (1, 1, 1), 8)  # all rewards equal: BoN is the reference
    np.testing.assert_allclose(tied["probs"], PROBS, atol=1e-12)
    assert tied["kl"] == pytest.approx(0.0, abs=1e-12)
    # g_N: discrete form, its continuous limit, and stability when p_< is close to p_<=
    assert float(log_ratio(0.8, 0.5, 2)) == pytest.approx(math.log((0.64 - 0.25) / 0.3))
    assert float(log_ratio(0.7, 0.7, 5)) == pytest.approx(math.log(5) + 4 * math.log(0.7))
    assert float(log_ratio(0.7, 0.7 - 1e-13, 5)) == pytest.approx(math.log(5) + 4 * math.log(0.7), rel=1e-9)
    assert float(log_ratio(1e-4, 0.0, 500)) == pytest.approx(499 * math.log(1e-4))
    with pytest.raises(ValueError):
        log_ratio(0.3, 0.5, 2)


def test_best_of_n_selection_matches_closed_form():
    P = 6000
    res = best_of_n(CategoricalPolicy(seed=1), ["x"] * P, table_reward((0, 1, 2)), 2, seed=0)
    assert res.all_rewards.shape == (P, 2) and np.all(res.rewards == res.all_rewards.max(1))
    freq = np.bincount([TEXTS.index(t) for t in res.texts], minlength=3) / P
    np.testing.assert_allclose(freq, [0.25, 0.39, 0.36], atol=4 * math.sqrt(0.25 / P))
    # ties: all rewards equal -> uniform choice among the n samples, and BoN = reference
    res = best_of_n(CategoricalPolicy(seed=2), ["x"] * P, table_reward((1, 1, 1)), 4, seed=3)
    np.testing.assert_allclose(np.bincount(res.chosen, minlength=4) / P, 0.25, atol=4 * math.sqrt(0.19 / P))
    freq = np.bincount([TEXTS.index(t) for t in res.texts], minlength=3) / P
    np.testing.assert_allclose(freq, PROBS, atol=4 * math.sqrt(0.25 / P))
    again = best_of_n(CategoricalPolicy(seed=2), ["x"] * P, table_reward((1, 1, 1)), 4, seed=3)
    assert np.array_equal(again.chosen, res.chosen)  # seeded tie-breaking


@pytest.mark.parametrize("rewards", [(0, 1, 2), (0, 1, 1)], ids=["distinct", "ties"])
def test_estimates_match_closed_form(rewards):
    """2000 prompts, pool 8, k = 48 quantile samples: reward and win rate within 4 standard
    errors of the closed form; the KL estimate within 4 s.e. of its exact finite-k
    expectation, whose bias against the true KL is small (consistent as k grows)."""
    P, k = 2000, 48
    ev = evaluate_bon(CategoricalPolicy(seed=7), [{"prompt": "x"}] * P, table_reward(rewards), ns=(1, 2, 4, 8),
                      num_prompts=P, quantile_samples=k)
    assert ev.num_prompts == P and ev.pool_size == 8 and ev.quantile_samples == k
    assert ev.reference_reward == pytest.approx(np.dot(PROBS, rewards), abs=0.02)
    for row in ev.rows:
        n, exact = row["n"], exact_bon(PROBS, rewards, row["n"])
        assert row["kl_bound"] == pytest.approx(kl_upper_bound(n))
        assert abs(row["reward"] - exact["reward"]) < 4 * row["reward_se"] + 1e-9, row
        assert abs(row["win_rate"] - exact["win_rate"]) < 4 * row["win_rate_se"] + 2e-3, row
        if n == 1:
            assert row["kl_estimate"] == 0.0
            continue
        expected = expected_estimator(PROBS, rewards, n, k)
        assert abs(row["kl_estimate"] - expected) < 4 * row["kl_se"], (row, expected)
        assert abs(expected - exact["kl"]) < 0.05 * exact["kl"]  # bias at k = 48: < 5 %
        assert row["kl_estimate"] <= math.log(n)
    if rewards == (0, 1, 2):
        assert ev.row(2)["kl_estimate"] == pytest.approx(0.1406, abs=0.015)
        assert ev.row(4)["kl_estimate"] == pytest.approx(0.5598, abs=0.04)
    # larger k shrinks the bias (consistency)
    assert abs(expected_estimator(PROBS, rewards, 8, 200) - exact_bon(PROBS, rewards, 8)["kl"]) < abs(
        expected_estimator(PROBS, rewards, 8, 48) - exact_bon(PROBS, rewards, 8)["kl"])


def test_argument_errors():
    pol = CategoricalPolicy()
    with pytest.raises(ValueError, match="pool_size"):
        evaluate_bon(pol, [{"prompt": "x"}], table_reward((0, 1, 2)), ns=(1, 4), pool_size=2)
    with pytest.raises(ValueError, match="prompt"):
        evaluate_bon(pol, [{"text": "x"}], table_reward((0, 1, 2)), ns=(1, 2))
    with pytest.raises(ValueError, match="shape"):
        best_of_n(pol, ["x", "y"], lambda p, c, e: np.zeros(1), 2)


@pytest.fixture(scope="module")
def adder(tmp_path_factory):
    """A tiny GPT-2 taught single-digit addition for 120 SFT steps (imperfect: BoN helps)."""
    from seedrl.agents.sft import SFTConfig, SFTDataConfig, train_sft
    from seedrl.config import load_config
    from seedrl.envs.text import build_toy_assets

    root = tmp_path_factory.mktemp("bon_adder")
    build_toy_assets(root / "init", "arithmetic", seed=0, corpus_size=200, n_embd=64, n_layer=2, n_positions=64)
    cfg = load_config(SFTConfig, {
        "model": str(root / "init"), "out_dir": str(root), "name": "sft", "steps": 120, "max_completion_tokens": 8,
        "eval_every": 0, "eval_prompts": 0, "eval_at_start": False, "optim": {"lr": 5e-3, "warmup_steps": 10},
        "log": {"progress": False},
        "data": SFTDataConfig(world="arith", world_options={"ops": ["add"], "max_digits": 1}, num_examples=2000,
                              eval_examples=0)})
    return str(train_sft(cfg).final_dir)


def test_bon_on_tiny_gpt2(adder, tmp_path):
    from seedrl.envs.text import TextTask
    from seedrl.lm import make_world
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.sampler import SamplingParams

    policy = LMPolicy.from_pretrained(adder).eval()
    world = make_world("arith", {"ops": ["add"], "max_digits": 1})
    task = TextTask(world.examples(40, seed=99), tokenizer=policy.tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=4)
    png = tmp_path / "frontier.png"
    ev = evaluate_bon(policy, task, world.reward_fn("exact"), ns=(1, 2, 4, 8), num_prompts=40, quantile_samples=16,
                      params=params, max_batch=128, plot=png)
    rewards = [r["reward"] for r in ev.rows]
    kls = [r["kl_estimate"] for r in ev.rows]
    assert 0.05 < rewards[0] < 0.95, ev.table()  # an imperfect reference
    assert all(b >= a - 1e-12 for a, b in zip(rewards, rewards[1:])) and rewards[-1] > rewards[0] + 0.1
    assert kls[0] == 0.0 and all(b > a for a, b in zip(kls, kls[1:]))
    assert all(r["kl_estimate"] <= math.log(r["n"]) + 1e-9 for r in ev.rows)
    assert abs(ev.rows[0]["win_rate"] - 0.5) < 4 * ev.rows[0]["win_rate_se"] + 0.02
    assert ev.rows[-1]["win_rate"] > 0.55
    assert png.stat().st_size > 0 and "KL estimate" in ev.table()
    res = best_of_n(policy, [p.text for p in (task.prompt(i) for i in range(8))], world.reward_fn("exact"), 4,
                    params, examples=[task.example(i) for i in range(8)])
    assert np.all(res.rewards == res.all_rewards.max(1))
    assert [c.text for c in res.completions] == res.texts
