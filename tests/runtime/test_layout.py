"""The automatic layout rule (seedrl.runtime.layout): table-driven cases, overrides, the run's record."""

from __future__ import annotations

import json

import pytest
import yaml

from seedrl.config import ConfigError, load_config
from seedrl.runtime import layout as L
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.layout import Costs, Layout, choose_layout, fit_line

US = 1e-6
# CartPole-like: cheap env step, tiny MLP (fixed forward cost dominates)
CHEAP = Costs(cores=2, env_fixed_s=180 * US, env_step_s=2 * US, forward_fixed_s=150 * US, forward_step_s=0.7 * US)
# Pong-like: costly env step and a CNN whose per-row cost exceeds it (inference-bound)
PONG = Costs(cores=16, env_fixed_s=0.0, env_step_s=350 * US, forward_fixed_s=200 * US, forward_step_s=400 * US)
# a net with a large fixed cost per call (e.g. a big model at small batch) on a moderately costly env
FIXED_NET = Costs(cores=4, env_fixed_s=0.0, env_step_s=5 * US, forward_fixed_s=3000 * US, forward_step_s=20 * US)


@pytest.mark.parametrize("costs, expected", [
    # cheap env + tiny net -> few actors (one per core) with many envs each, each running the policy itself
    (CHEAP, Layout(num_actors=2, num_envs=L.MAX_ENVS, batch_timeout_ms=0.0, queue_unrolls=2, inference="actors")),
    # same on 8 cores: one core left to learner + inference
    (Costs(8, *[getattr(CHEAP, f) for f in ("env_fixed_s", "env_step_s", "forward_fixed_s", "forward_step_s")]),
     Layout(num_actors=7, num_envs=L.MAX_ENVS, batch_timeout_ms=0.0, queue_unrolls=2, inference="actors")),
    # inference-bound (forward row >= env step): 2 actors even on 16 cores, tens of envs, no wait
    (PONG, Layout(num_actors=2, num_envs=8, batch_timeout_ms=0.0, queue_unrolls=32)),
    # large fixed forward cost: batching across actors (wait half an actor step: 256 x 5 us / 2)
    (FIXED_NET, Layout(num_actors=2, num_envs=L.MAX_ENVS, batch_timeout_ms=0.64, queue_unrolls=2)),
    # one core: one actor, which never waits for others (and, its net cheaper per row than its env, acts itself)
    (Costs(1, 0.0, 100 * US, 3000 * US, 20 * US),
     Layout(num_actors=1, num_envs=L.MAX_ENVS, batch_timeout_ms=0.0, queue_unrolls=2, inference="actors")),
])
def test_rule_table(costs, expected):
    assert choose_layout(costs) == expected


def test_envs_per_actor_is_the_smallest_power_of_two_under_the_overhead_bound():
    for env_us in (1, 3, 10, 30, 100, 300, 1000):
        c = Costs(2, 0.0, env_us * US, 100 * US, 0.0)
        n = choose_layout(c).num_envs
        fixed = L.ROUND_TRIP_S + c.forward_fixed_s
        assert n & (n - 1) == 0 and 1 <= n <= L.MAX_ENVS
        if n < L.MAX_ENVS:  # the bound holds at n and fails at n / 2
            assert fixed / n <= L.OVERHEAD_FRACTION * c.env_step_s * (1 + 1e-9)
            assert n == 1 or fixed / (n // 2) > L.OVERHEAD_FRACTION * c.env_step_s
    # costlier per-call overhead -> more envs; costlier env step -> fewer
    assert choose_layout(Costs(2, 0.0, 100 * US, 10 * US, 0.0)).num_envs < choose_layout(Costs(2, 0.0, 100 * US, 900 * US, 0.0)).num_envs
    assert choose_layout(Costs(2, 0.0, 50 * US, 100 * US, 0.0)).num_envs < choose_layout(Costs(2, 0.0, 5 * US, 100 * US, 0.0)).num_envs


def test_policy_runs_on_the_actors_only_when_cheaper_than_the_env_and_allowed():
    for forward_us, env_us in ((0.7, 2.0), (1.9, 2.0), (2.0, 2.0), (400.0, 350.0)):
        costs = Costs(2, 100 * US, env_us * US, 100 * US, forward_us * US)
        assert choose_layout(costs).inference == ("actors" if forward_us < env_us else "central")
        assert choose_layout(costs, actors_can_act=False).inference == "central"  # threads/ray backend, r2d2
    assert choose_layout(CHEAP, inference="central").inference == "central"  # the config's value wins
    assert choose_layout(PONG, inference="actors").inference == "actors"
    # central inference with a large fixed cost waits to merge actors' batches; actors acting themselves never wait
    assert choose_layout(FIXED_NET, inference="actors").batch_timeout_ms == 0.0


def test_given_values_win_and_shape_the_rest():
    assert choose_layout(CHEAP, num_actors=5, num_envs=3, batch_timeout_ms=1.5, queue_unrolls=1, inference="central") == Layout(5, 3, 1.5, 1)
    # the timeout rule uses the given envs per actor: a 4-env actor step is short, so the fixed-cost net waits
    assert choose_layout(FIXED_NET, num_envs=4).batch_timeout_ms == pytest.approx(0.01)
    assert choose_layout(FIXED_NET, num_actors=1).batch_timeout_ms == 0.0


@pytest.mark.parametrize("num_envs, batch_size, expected", [(32, 32, 8), (256, 32, 2), (64, 32, 4), (16, 16, 8), (8, 32, 32), (1024, 16, 2)])
def test_queue_holds_about_eight_updates(num_envs, batch_size, expected):
    assert choose_layout(CHEAP, num_envs=num_envs, batch_size=batch_size).queue_unrolls == expected


def test_fit_line_recovers_fixed_and_per_item_cost():
    assert fit_line([8, 64], [8 * 2e-6 + 1e-4, 64 * 2e-6 + 1e-4]) == pytest.approx((1e-4, 2e-6))
    assert fit_line([8, 64], [5e-4, 4e-4]) == pytest.approx((4.5e-4, 0.0))  # noise never gives a negative slope


def _cartpole(tmp_path, *over):
    base = yaml.safe_load(open("configs/cartpole_impala.yaml"))
    return load_config(TrainConfig, base, [f"out_dir={tmp_path}", "name=t", *over])


def test_shipped_cartpole_config_leaves_the_layout_to_the_runtime(tmp_path):
    cfg = _cartpole(tmp_path)
    rt = cfg.runtime
    assert (cfg.env.num_envs, rt.num_actors, rt.batch_timeout_ms, rt.queue_unrolls, rt.inference) == ("auto",) * 5
    with pytest.raises(ConfigError, match="runtime.num_actors"):
        _cartpole(tmp_path, "runtime.num_actors=many")


def _fake_probe(calls):
    def probe(env_cfg, model, seed=0):
        calls.append(seed)
        return CHEAP
    return probe


def test_resolve_fills_only_auto_keys_and_records_the_choice(tmp_path):
    from seedrl.runtime.loop import probe_spaces

    cfg = _cartpole(tmp_path, "runtime.num_actors=3")
    spaces = probe_spaces(cfg)
    calls: list = []
    resolved, record = L.resolve_layout(cfg, *spaces, probe=_fake_probe(calls))
    assert calls == [cfg.seed]
    assert (resolved.runtime.num_actors, resolved.env.num_envs, resolved.runtime.batch_timeout_ms) == (3, L.MAX_ENVS, 0.0)
    assert resolved.runtime.queue_unrolls == 2  # 8 updates x 32 envs / 256 envs per unroll, at least 2
    assert record["auto"] == ["env.num_envs", "runtime.batch_timeout_ms", "runtime.queue_unrolls", "runtime.inference"]
    assert resolved.runtime.inference == record["inference"] == "actors"  # an MLP cheaper per row than CartPole's step
    threads, _ = L.resolve_layout(_cartpole(tmp_path, "runtime.backend=threads"), *spaces, probe=_fake_probe([]))
    assert threads.runtime.inference == "central"  # no actor processes to run it in
    assert record["costs"]["forward_fixed_s"] == CHEAP.forward_fixed_s
    assert cfg.runtime.num_actors == 3 and cfg.env.num_envs == "auto"  # the input config is not altered
    # nothing auto: no probe, the config comes back as it is
    fixed = _cartpole(tmp_path, "runtime.num_actors=2", "env.num_envs=4", "runtime.batch_timeout_ms=0",
                      "runtime.queue_unrolls=8", "runtime.inference=central")
    assert L.resolve_layout(fixed, *spaces, probe=_fake_probe(calls)) == (fixed, None) and len(calls) == 1


def test_probe_measures_positive_costs(tmp_path):
    from seedrl.models.config import build_model
    from seedrl.runtime.loop import probe_spaces

    cfg = _cartpole(tmp_path, "env.backend=gymnasium")
    spaces = probe_spaces(cfg)
    costs = L.probe_costs(cfg.env, build_model(cfg.model, *spaces).eval(), sizes=(2, 8), seconds=0.2)
    assert costs.cores >= 1 and costs.env_step_s > 0 and costs.forward_fixed_s + costs.forward_step_s > 0


def test_probe_timing_ignores_a_burst_that_slows_most_calls():
    """Another process's burst that slows 3 calls in 5 must not be read as the work's cost (a median would)."""
    import time

    calls = []

    def work():
        calls.append(None)
        if len(calls) % 5 < 3:
            time.sleep(0.002)

    assert L.time_per_call(work, 0.05) < 0.001


def test_run_records_the_chosen_layout(tmp_path, monkeypatch, capsys):
    from seedrl.runtime.loop import train

    monkeypatch.setattr(L, "probe_costs", lambda *a, **k: Costs(2, 0.0, 1000 * US, 100 * US, 0.0))  # -> 4 envs
    cfg = _cartpole(tmp_path, "total_frames=640", "log.progress=false", "log.tensorboard=false",
                    "runtime.backend=threads", "runtime.num_actors=1")
    result = train(cfg)
    record = json.loads((result.run_dir / "layout.json").read_text())
    assert (record["num_actors"], record["num_envs"]) == (1, 4)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["env"]["num_envs"] == 4 and saved["runtime"]["num_actors"] == 1
    assert saved["runtime"]["batch_timeout_ms"] == 0.0 and saved["runtime"]["queue_unrolls"] == 64  # 8 x 32 / 4
    assert saved["runtime"]["inference"] == "central"  # the threads backend has no actor processes
    assert "layout: 1 actors x 4 envs, central inference, batch timeout 0 ms, learner queue 64 unrolls (auto: env.num_envs" in capsys.readouterr().out


def test_make_env_batch_refuses_an_unresolved_auto(tmp_path):
    from seedrl.envs import make_env_batch

    with pytest.raises(ValueError, match="env.num_envs = 'auto'"):
        make_env_batch(_cartpole(tmp_path).env)
