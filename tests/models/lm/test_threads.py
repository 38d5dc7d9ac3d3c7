"""DecodeThreads: the measured choice of a decode step's intra-op threads; it changes no token, and
log-probs only in the last float bits."""

from __future__ import annotations

import pytest
import torch

from seedrl.models.lm import Sampler, SamplingParams
from seedrl.models.lm import threads as th
from seedrl.models.lm.threads import DecodeThreads


class FakeMachine:
    """A caller with ``base`` threads whose decode step costs ``cost[threads]`` seconds of a fake clock."""

    def __init__(self, base: int, cost: dict[int, float]):
        self.base, self.current, self.cost, self.now = base, base, dict(cost), 0.0
        self.sets: list[int] = []

    def get(self) -> int:
        return self.current

    def set(self, n: int) -> None:
        self.sets.append(n)
        self.current = n

    def clock(self) -> float:
        return self.now

    def chooser(self, setting="auto") -> DecodeThreads:
        return DecodeThreads(setting, clock=self.clock, get_threads=self.get, set_threads=self.set)

    def steps(self, chooser: DecodeThreads, k: int, extra: dict[int, float] | None = None) -> list[int]:
        used = []
        for i in range(k):
            with chooser.step() as n:
                assert self.current == n
                self.now += self.cost[n] + (extra or {}).get(i, 0.0)
                used.append(n)
            assert self.current == self.base  # restored after every step
        return used


@pytest.mark.parametrize("fast", [1, 2])
def test_auto_picks_the_faster_count_and_keeps_it(fast):
    m = FakeMachine(2, {1: 1.0, 2: 1.5} if fast == 1 else {1: 1.0, 2: 0.6})
    c = m.chooser()
    used = m.steps(c, th.ROUNDS * 2)
    assert sorted(used) == [1] * th.ROUNDS + [2] * th.ROUNDS  # each candidate measured ROUNDS times
    assert c.chosen == fast and c.measurements == 1
    assert m.steps(c, 50) == [fast] * 50


def test_a_prefill_step_does_not_decide():
    # the first step (a prefill, 20x longer) falls on the faster candidate: the median ignores it
    m = FakeMachine(2, {1: 1.0, 2: 0.6})
    c = m.chooser()
    m.steps(c, th.ROUNDS * 2, extra={0: 20.0})
    assert c.chosen == 2


def test_candidates_of_four_threads_and_of_one():
    m = FakeMachine(4, {4: 1.0, 2: 0.7, 1: 0.9})
    c = m.chooser()
    assert sorted(set(m.steps(c, th.ROUNDS * 3))) == [1, 2, 4]
    assert c.chosen == 2
    one = FakeMachine(1, {1: 1.0})
    c1 = one.chooser()
    assert one.steps(c1, 10) == [1] * 10 and one.sets == [] and c1.chosen is None


def test_measures_again_when_the_machine_or_the_callers_count_changes(monkeypatch):
    monkeypatch.setattr(th, "REPROBE_STEPS", 20)
    m = FakeMachine(2, {1: 1.0, 2: 0.6})
    c = m.chooser()
    m.steps(c, th.ROUNDS * 2)
    assert c.chosen == 2
    m.cost = {1: 1.0, 2: 3.0}  # the machine got loaded
    m.steps(c, 20 + th.ROUNDS * 2)
    assert c.chosen == 1 and c.measurements == 2
    m.base = m.current = 4  # the caller now asks for 4
    m.cost = {4: 0.5, 2: 0.8, 1: 1.0}
    m.steps(c, th.ROUNDS * 3)
    assert c.chosen == 4 and c.measurements == 3


def test_fixed_and_inherited_settings_and_errors():
    m = FakeMachine(2, {1: 1.0, 2: 1.0, 3: 1.0})
    assert m.steps(m.chooser(3), 5) == [3] * 5
    m.sets.clear()
    assert m.steps(m.chooser(None), 5) == [2] * 5 and m.sets == []
    c = m.chooser()
    with pytest.raises(RuntimeError):
        with c.step():
            raise RuntimeError("decode failed")
    assert m.current == 2  # restored even when the step fails
    for bad in (0, -2, "two", True, 1.5):
        with pytest.raises(ValueError, match="threads="):
            DecodeThreads(bad)


def test_sampler_rejects_a_bad_thread_count(load):
    with pytest.raises(ValueError, match="threads=0"):
        Sampler(load("gpt2"), threads=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_thread_choice_changes_no_token_and_logprobs_only_in_the_last_bits(load, kind):
    policy = load(kind)
    prompts = policy.tokenize_prompts(["the quick brown fox", "a", "one two three"])
    params = SamplingParams(temperature=1.0, max_new_tokens=24, n=2, seed=5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = {}
        for setting in (None, 1, "auto"):
            sampler = Sampler(policy, max_batch=6, threads=setting)
            runs[setting] = sampler.generate(prompts, params)
            assert torch.get_num_threads() == 2  # the caller's count is back after every step
        assert sampler.threads.chosen in (1, 2)  # 24 steps: the measurement (8 steps) finished
    finally:
        torch.set_num_threads(before)
    for setting in (1, "auto"):
        assert [c.tokens for c in runs[setting]] == [c.tokens for c in runs[None]]
        diff = max(abs(a - b) for x, y in zip(runs[setting], runs[None]) for a, b in zip(x.logprobs, y.logprobs))
        assert diff < 1e-4, (setting, diff)
