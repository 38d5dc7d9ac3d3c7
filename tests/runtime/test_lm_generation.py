"""``generation.*`` of LM runs: the backend choice, its config errors, and the run-start log-prob check."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "lm"))  # fake_vllm: the CPU stand-in engine

from seedrl.config import ConfigError, load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.runtime import lm_config  # noqa: E402
from seedrl.runtime.lm_loop import LMPGConfig, train_lm  # noqa: E402


def sevens(prompts, completions, examples):
    return np.array([c.count("7") / max(1, len(c)) for c in completions], dtype=np.float32)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_toy_assets(tmp_path_factory.mktemp("toy"), world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)


def _cfg(tmp_path, assets, **generation):
    return load_config(LMPGConfig, {
        "name": "run", "out_dir": str(tmp_path), "policy": str(assets.path),
        "task": {"world": "arithmetic", "num_examples": 50}, "sampling": {"max_new_tokens": 4},
        "pg": {"samples_per_prompt": 2}, "steps": 3, "prompts_per_step": 2, "runtime": {"num_actors": 1},
        "log": {"progress": False, "every": 1}, "generation": generation,
    })


def test_backend_defaults_to_builtin_and_vllm_needs_the_extra_and_a_gpu(monkeypatch):
    cfg = load_config(LMPGConfig, {"policy": "x"})
    assert cfg.generation.backend == "builtin" and cfg.generation.check_logprobs == 0
    monkeypatch.setattr(lm_config.importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'generation.backend' = 'vllm' needs vLLM.*pip install 'seedrl\[vllm\]'.*"
                                          r"and a CUDA GPU") as err:
        load_config(LMPGConfig, {"policy": "x", "generation": {"backend": "vllm"}})
    assert err.value.path == "generation.backend"
    monkeypatch.setattr(lm_config.importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(ConfigError, match="needs a CUDA GPU") as err:
        load_config(LMPGConfig, {"policy": "x", "generation": {"backend": "vllm"}})
    assert "pip install" not in str(err.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert load_config(LMPGConfig, {"policy": "x", "generation": {"backend": "vllm"}}).generation.backend == "vllm"


@pytest.mark.parametrize("bad, key", [({"backend": "sglang"}, "generation.backend"),
                                      ({"logprob_tolerance": 0}, "generation.logprob_tolerance"),
                                      ({"check_logprobs": -1}, "generation.check_logprobs"),
                                      ({"vllm": {"gpu_memory_utilization": 1.5}}, "generation.vllm.gpu_memory_utilization"),
                                      ({"vllm": {"dtype": "int8"}}, "generation.vllm.dtype"),
                                      ({"threads": 0}, "generation.threads"),
                                      ({"threads": "two"}, "generation.threads")])
def test_bad_generation_values_name_their_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(LMPGConfig, {"policy": "x", "generation": bad})


def test_run_start_check_passes_on_the_builtin_server(tmp_path, assets):
    result = train_lm(_cfg(tmp_path, assets, check_logprobs=3), reward_fn=sevens)
    assert result["updates"] == 3
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    check = [r for r in rows if "logprob_check_max_abs" in r]
    assert len(check) == 1 and check[0]["updates"] == 0 and check[0]["logprob_check_tokens"] > 0
    assert check[0]["logprob_check_max_abs"] < 1e-4


def test_generation_threads_reach_every_sampler_of_the_run(tmp_path, assets, monkeypatch):
    from seedrl.models.lm import server as server_mod

    built = []

    class Recording(server_mod.Sampler):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            built.append(self)

    monkeypatch.setattr(server_mod, "Sampler", Recording)
    assert train_lm(_cfg(tmp_path, assets, threads="auto"), reward_fn=sevens)["updates"] == 3
    assert built and all(s.threads.setting == "auto" for s in built)


def test_a_failed_check_stops_the_run_before_any_update(tmp_path, assets, monkeypatch):
    from seedrl.models.lm import logprob_check

    def disagree(server, model, policy, prompts, params, *, tolerance):
        comps = server.submit(model, prompts[0], params).result(60)
        comps[0].logprobs[0] += 1.0  # what a weight that did not load looks like
        return logprob_check.check_logprobs(policy, [prompts[0]] * len(comps), comps, tolerance=tolerance)

    monkeypatch.setattr(logprob_check, "check_served_logprobs", disagree)
    with pytest.raises(logprob_check.LogprobMismatchError, match=r"max \|Δ\| = 1 > tolerance 0\.05"):
        train_lm(_cfg(tmp_path, assets, check_logprobs=2), reward_fn=sevens)
    assert not list((tmp_path / "run").glob("checkpoint-*")) and not (tmp_path / "run" / "final").exists()
    assert not [t for t in threading.enumerate() if t.name == "seedrl-generation-server" and t.is_alive()]


def test_a_run_on_the_vllm_backend_publishes_every_update(tmp_path, assets, monkeypatch):
    """The vllm branch of the run end to end, on the CPU stand-in engine: start check, one weight
    load per update (versions), and the engine ends with the learner's final weights."""
    from fake_vllm import FakeSamplingParams, fake_engine
    from seedrl.models.lm import LMPolicy, vllm_server

    engines = []

    def make(path, **kw):
        assert kw["max_num_seqs"] == 64 and kw["dtype"] == "auto"
        engines.append(fake_engine(path))
        return engines[-1]

    to_params = vllm_server.vllm_sampling_params
    monkeypatch.setattr(lm_config, "vllm_missing", lambda: [])
    monkeypatch.setattr(vllm_server, "make_vllm_engine", make)
    monkeypatch.setattr(vllm_server, "vllm_sampling_params", lambda p, n, f=None: to_params(p, n, FakeSamplingParams))
    rows = []
    result = train_lm(_cfg(tmp_path, assets, backend="vllm", check_logprobs=2), reward_fn=sevens, on_step=rows.append)
    assert result["updates"] == 3 and [r["updates"] for r in rows] == [1, 2, 3]
    assert all(r["policy_lag"] >= 0 for r in rows)
    (engine,) = engines
    assert len(engine.worker.model_runner.model.loaded_batches) == 3  # one in-place load per update
    final = LMPolicy.from_pretrained(result["final"])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(engine.policy.parameters(), final.parameters()))
    logged = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert logged[0]["updates"] == 0 and logged[0]["logprob_check_max_abs"] < 1e-4


def test_the_cli_refuses_vllm_without_it_in_one_line_before_writing(tmp_path, capsys, monkeypatch):
    from seedrl.cli import main

    monkeypatch.setattr(lm_config.importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = Path(__file__).resolve().parents[2] / "configs" / "arith_pg.yaml"
    assert main(["run", str(config), f"out_dir={tmp_path / 'runs'}", "generation.backend=vllm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seedrl: error:") and "\n" not in err, err
    assert "'generation.backend' = 'vllm'" in err and "pip install 'seedrl[vllm]'" in err and "CUDA" in err
    assert not (tmp_path / "runs").exists()
