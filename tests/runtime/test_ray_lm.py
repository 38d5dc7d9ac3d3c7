"""Language runs on Ray (``runtime.backend: ray``), and killed learners resumed through Ray.

The runs join the simulated two-node cluster of ``test_ray_backend`` (two raylets on this
machine, 1 + 2 logical CPUs). A Ray LM run starts a Ray worker process per generation server
and per actor (each imports torch and transformers: ~10 s each on a loaded 2-core machine),
so these runs are few and do much each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("transformers")
ray = pytest.importorskip("ray")

from seedrl.agents.gkd import LMGKDConfig  # noqa: E402
from seedrl.config import ConfigError, load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.runtime.checkpoint import latest_checkpoint, list_folder_checkpoints  # noqa: E402
from seedrl.runtime.lm_loop import LMBondConfig, LMPGConfig, train_lm  # noqa: E402
from tests.runtime.test_ray_backend import CARTPOLE, _connected, _free_cpus, _two_node_cluster  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

cluster = pytest.fixture(scope="module")(_two_node_cluster)


def sevens(prompts, completions, examples):
    """Fraction of '7' characters in a completion: a reward a random policy can learn fast."""
    return np.array([c.count("7") / max(1, len(c.replace(" ", ""))) for c in completions], dtype=np.float32)


# the actors run the reward in their own processes: ship this module's functions by value (the
# workers cannot import a test module)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_toy_assets(tmp_path_factory.mktemp("toy"), world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)


#: fractional CPUs: policy + reference servers (0.5 each) and two actors (0.25 each) fit the 3-CPU cluster
RAY = {"generation_cpus": 0.5, "actor_cpus": 0.25}


def _pg(tmp_path, assets, address=None, backend="ray", ray_cfg=(), **kw) -> dict:
    runtime = {"num_actors": 1, "torch_threads": 1, "backend": backend}
    if backend == "ray":
        runtime["ray"] = {**RAY, "address": address, **dict(ray_cfg)}
    return {"name": "pg", "out_dir": str(tmp_path), "policy": str(assets.path), "seed": 0,
            "task": {"world": "arithmetic", "num_examples": 200}, "sampling": {"max_new_tokens": 6},
            "pg": {"samples_per_prompt": 4, "kl_coef": 0.01}, "steps": 40, "prompts_per_step": 8,
            "optim": {"lr": 3e-3}, "runtime": runtime, "log": {"progress": False, "every": 1}, **kw}


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("key, value, match", [
    ("runtime.ray.adress", "auto", r"unknown key 'runtime.ray.adress' \(did you mean 'address'\?\)"),
    ("runtime.ray.inference_servers", 2, r"unknown key 'runtime.ray.inference_servers'"),  # a game run's key
    ("runtime.ray.generation", {"teacher": {"gpu": 1}}, r"'runtime.ray.generation.teacher.gpu' is not a key \(use cpus, gpus\)"),
    ("runtime.ray.generation", {"teacher": {"cpus": 0}}, r"'runtime.ray.generation.teacher.cpus' = 0(\.0)?: expected a number > 0"),
    ("runtime.ray.generation_gpus", -1, r"runtime.ray.generation_gpus"),
    ("runtime.backend", "processes", r"'runtime.backend'.*'processes'.*threads.*ray"),
])
def test_a_wrong_ray_key_of_a_language_run_is_a_clear_error(tmp_path, assets, key, value, match):
    raw = _pg(tmp_path, assets)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(LMPGConfig, raw, [f"{key}={value if isinstance(value, str) else json.dumps(value)}"])
    assert "\n" not in str(err.value)


def test_vllm_generation_on_ray_is_a_clear_error_for_now(tmp_path, assets, monkeypatch):
    from seedrl.runtime import lm_config

    monkeypatch.setattr(lm_config, "vllm_missing", lambda: [])  # as on a CUDA machine with vLLM
    with pytest.raises(ConfigError, match=r"'generation.backend' = 'vllm' does not run on Ray yet") as err:
        load_config(LMPGConfig, _pg(tmp_path, assets), ["generation.backend=vllm"])
    assert "\n" not in str(err.value)


def test_more_cpus_than_the_cluster_has_is_a_clear_error_and_leaves_nothing(tmp_path, assets, cluster):
    cfg = load_config(LMPGConfig, _pg(tmp_path, assets, cluster.address, ray_cfg={"generation_cpus": 2.0}))
    with _connected(cluster):
        with pytest.raises(ConfigError, match=r"'runtime.ray.generation_cpus' x models \['policy', 'reference'\] "
                                              r"\+ 'runtime.ray.actor_cpus' x 'runtime.num_actors' = 4.25 CPUs, but the "
                                              r"Ray cluster has 3"):
            train_lm(cfg, reward_fn=sevens)
        assert _free_cpus() == 3
    # refused before anything was written: the corrected config starts afresh, no --resume needed
    assert [p.name for p in (tmp_path / "pg").iterdir()] in ([], [".lock"])


def test_gpus_the_cluster_lacks_are_a_clear_error(tmp_path, assets, cluster):
    cfg = load_config(LMPGConfig, _pg(tmp_path, assets, cluster.address, ray_cfg={"generation": {"reference": {"gpus": 1}}}))
    with _connected(cluster):
        with pytest.raises(ConfigError, match=r"runtime.ray.generation_gpus.*request 1 GPUs, but the Ray cluster has 0"):
            train_lm(cfg, reward_fn=sevens)
        assert _free_cpus() == 3


# ------------------------------------------------------------------ learning
@pytest.mark.slow
def test_pg_on_ray_learns_as_the_threaded_run_does_at_the_same_budget(tmp_path, assets, cluster):
    """The same config, seed and budget (40 updates x 8 prompts x 4 samples) on both backends, one
    actor each. The first batch is the same on both (the policy's server draws its sampling seeds
    from torch's RNG seeded with the run's seed, as the threaded server does), so the first loss
    is equal; later batches differ by timing (how far the actor samples ahead of the learner).
    Measured on this machine (reward of the last 5 updates, threads / ray): 0.81 / 0.79, 0.79 / 0.77,
    from 0.03 at the start. Ray must rise as much as the threaded run, within 0.15."""
    threads, on_ray = [], []
    train_lm(load_config(LMPGConfig, _pg(tmp_path / "t", assets, backend="threads")), reward_fn=sevens,
             on_step=threads.append)
    with _connected(cluster):  # the run keeps this connection: what it does not kill itself would stay
        result = train_lm(load_config(LMPGConfig, _pg(tmp_path / "r", assets, cluster.address)), reward_fn=sevens,
                          on_step=on_ray.append)
        assert _free_cpus() == 3  # every Ray actor of the run was killed
    assert len(on_ray) == len(threads) == 40 and result["updates"] == 40
    assert on_ray[0]["loss"] == pytest.approx(threads[0]["loss"], rel=1e-5, abs=1e-7)
    assert on_ray[0]["reward"] == threads[0]["reward"]
    start, last = (np.mean([r["reward"] for r in on_ray[s]]) for s in (slice(0, 5), slice(-5, None)))
    reference = np.mean([r["reward"] for r in threads[-5:]])
    assert last > start + 0.3, (start, last)
    assert last >= reference - 0.15, (reference, last)
    assert all(r["policy_lag"] >= 0 for r in on_ray)
    assert (tmp_path / "r" / "pg" / "final" / "config.json").exists()
    assert not ray.is_initialized()


@pytest.mark.slow
def test_bond_and_gkd_serve_their_own_models_on_ray(tmp_path, assets, cluster):
    """BOND's moving anchor and GKD's teacher are generation servers of their own: the anchor is
    sampled and pushed to (periodic, every 2 updates), the teacher's distributions are asked for."""
    teacher = build_toy_assets(tmp_path / "teacher", world="arithmetic", seed=0, n_embd=48, n_layer=2, n_head=2)
    runtime = {"num_actors": 2, "torch_threads": 1, "backend": "ray",
               "ray": {"address": cluster.address, "generation_cpus": 0.5, "actor_cpus": 0.25}}
    common = {"out_dir": str(tmp_path), "policy": str(assets.path), "task": {"world": "arithmetic", "num_examples": 100},
              "sampling": {"max_new_tokens": 4}, "steps": 4, "prompts_per_step": 2, "runtime": runtime,
              "log": {"progress": False, "every": 1}}
    bond_rows, gkd_rows = [], []
    with _connected(cluster):
        train_lm(load_config(LMBondConfig, {**common, "name": "bond", "frontier_prompts": 0,
                                            "bond": {"n": 2, "quantile_samples": 2, "anchor": "periodic", "anchor_every": 2}}),
                 reward_fn=sevens, on_step=bond_rows.append)
        train_lm(load_config(LMGKDConfig, {**common, "name": "gkd", "teacher": str(teacher.path),
                                           "gkd": {"samples_per_prompt": 2}}), on_step=gkd_rows.append)
        assert _free_cpus() == 3
    assert [r["updates"] for r in bond_rows] == [r["updates"] for r in gkd_rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["kl_anchor"]) for r in bond_rows)
    assert all(np.isfinite(r["divergence"]) and r["on_policy"] == 1.0 for r in gkd_rows)


def test_a_reward_runs_in_its_own_ray_actor_exactly_when_it_holds_a_model(tmp_path, assets):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seedrl.rewards import CallableReward, CombinedReward, RewardModel
    from seedrl.runtime.ray_lm import holds_model

    rm = RewardModel(AutoModelForSequenceClassification.from_pretrained(assets.path, num_labels=1),
                     AutoTokenizer.from_pretrained(assets.path))
    plain = CallableReward(sevens, batched=True)
    assert holds_model(rm) and holds_model(CombinedReward([(plain, 1.0), (rm, 0.5)]))
    assert not holds_model(plain) and not holds_model(sevens) and not holds_model(CombinedReward([plain, plain]))


@pytest.mark.slow
def test_a_reward_model_scores_the_completions_from_its_ray_actor(tmp_path, assets, cluster):
    """A run whose reward is a (random, one-output) reward model: its Ray actor's rewards are the
    model's scores of the recorded (prompt, completion) pairs, recomputed here."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seedrl.data import open_dataset
    from seedrl.rewards import RewardModel

    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(assets.path, num_labels=1).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(assets.path).save_pretrained(tmp_path / "rm")
    raw = _pg(tmp_path, assets, cluster.address, steps=2, prompts_per_step=2, record={"rate": 1.0},
              ray_cfg={"reward_cpus": 0.5, "generation_cpus": 0.25})
    raw["task"]["reward_model"] = str(tmp_path / "rm")
    with _connected(cluster):
        train_lm(load_config(LMPGConfig, raw))
        assert _free_cpus() == 3
    steps = [ep[0] for ep in open_dataset(tmp_path / "pg" / "episodes")]
    assert len(steps) >= 2 * 2 * 4
    rewards = RewardModel.from_pretrained(tmp_path / "rm")([s["observation"]["prompt"] for s in steps],
                                                            [s["action"]["completion"] for s in steps], None)
    np.testing.assert_allclose([s["reward"] for s in steps], rewards, rtol=1e-5, atol=1e-6)
    assert np.ptp(rewards) > 0  # a constant would not tell the pairs apart


def _players() -> list:
    """The live processes of this machine's PromptPlayer Ray actors (Ray titles a worker by its actor class)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if cmd.startswith("ray::PromptPlayer") and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


@pytest.mark.serial
@pytest.mark.slow
def test_a_killed_actor_is_restarted_by_ray_and_the_run_goes_on(tmp_path, assets, cluster):
    """SIGKILL one of the two actors' processes at update 3: the other feeds the learner meanwhile,
    Ray starts a new process for it and the prompt it held is played there (its worker is titled
    ``ray::PromptPlayer.play`` while a call runs); three updates later a SIGTERM stops the run."""
    pytest.importorskip("psutil")
    seen: dict = {}

    def watch(row):
        if row["updates"] == 3:
            seen["before"] = {p.pid for p in _players()}
            seen["victim"] = min(seen["before"])
            os.kill(seen["victim"], signal.SIGKILL)
        elif "victim" in seen and "new" not in seen:
            playing = [p.pid for p in _players() if p.pid not in seen["before"] and ".play" in " ".join(p.cmdline())]
            if playing:
                seen["new"], seen["at"] = playing[0], row["updates"]
        elif "new" in seen and row["updates"] >= seen["at"] + 3:
            signal.raise_signal(signal.SIGTERM)  # as a user's kill would: a checkpoint, then a clean stop

    raw = _pg(tmp_path, assets, cluster.address, steps=3000, prompts_per_step=2)
    raw["runtime"]["num_actors"] = 2
    with _connected(cluster):
        result = train_lm(load_config(LMPGConfig, raw), reward_fn=sevens, on_step=watch)
        assert _free_cpus() == 3
    assert len(seen["before"]) == 2, seen  # the two actors of the run
    assert "new" in seen, f"no new actor process played after the kill ({result['updates']} updates)"
    assert result.get("interrupted") and result["updates"] >= seen["at"] + 3


@pytest.mark.serial
@pytest.mark.slow
def test_a_lost_generation_server_fails_the_run_with_a_checkpoint_and_resume_goes_on(tmp_path, assets, cluster):
    """SIGKILL the reference's generation server at update 3 (the learner scores every batch under it;
    the actor may see it first): the run saves its state and names the server; --resume finishes it."""
    import psutil

    from seedrl.runtime.errors import InferenceFailed

    def servers() -> dict:
        found = {}
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or ())
            if cmd.startswith("ray::GenerationActor"):
                found[p.pid] = p
        return found

    seen: dict = {}

    def kill_reference(row):
        if row["updates"] == 3:
            # the reference's server was created second: the larger pid of the two
            seen["pids"] = sorted(servers())
            os.kill(seen["pids"][-1], signal.SIGKILL)

    raw = _pg(tmp_path, assets, cluster.address, steps=3000, prompts_per_step=2, log={"progress": False, "every": 1})
    with _connected(cluster):
        with pytest.raises(InferenceFailed, match=r"generation server '(reference|policy)' was lost.*The learner's state "
                                                  r"is saved in .*checkpoint-\d+.*--resume"):
            train_lm(load_config(LMPGConfig, raw), reward_fn=sevens, on_step=kill_reference)
        assert _free_cpus() == 3
    assert len(seen["pids"]) == 2
    saved = int(list_folder_checkpoints(tmp_path / "pg")[-1].name.split("-")[1])
    assert saved >= 3
    rows = []
    result = train_lm(load_config(LMPGConfig, {**raw, "steps": saved + 2}), resume=True, reward_fn=sevens,
                      on_step=rows.append)
    assert [r["updates"] for r in rows] == [saved + 1, saved + 2] and "final" in result


# ------------------------------------------------------------------ killed learners
# The driver (the learner) in a process of its own, joined to the cluster; it prints its pid's
# checkpoints as they appear, and the test SIGKILLs it after the first.
GAME = """
import json, sys
from seedrl.config import load_config
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.loop import train
base, overrides, resume = json.loads(sys.argv[1])
result = train(load_config(TrainConfig, base, overrides), resume=resume)
print("RESULT " + json.dumps({"updates": result.updates, "interrupted": result.interrupted}), flush=True)
"""

LM = """
import json, sys
import numpy as np
from seedrl.config import load_config
from seedrl.runtime.lm_loop import LMPGConfig, train_lm
raw, resume = json.loads(sys.argv[1])
reward = lambda p, c, e: np.array([x.count("7") / max(1, len(x)) for x in c], np.float32)
out = train_lm(load_config(LMPGConfig, raw), reward_fn=reward, resume=resume)
print("RESULT " + json.dumps({"updates": out["updates"], "final": "final" in out}), flush=True)
"""


def _child(script: str, args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", script, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _kill_after_first_checkpoint(proc: subprocess.Popen, has_checkpoint, timeout: float = 900) -> None:
    """SIGKILL ``proc`` (no handler runs, nothing is flushed or saved) once ``has_checkpoint()``."""
    deadline = time.monotonic() + timeout
    try:
        while not has_checkpoint():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def _result(proc: subprocess.Popen, timeout: float = 900) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))


def _cluster_is_free(cluster) -> None:
    """No CPU held and no placement group left of the killed driver (Ray reclaims them when it sees the
    driver's job end)."""
    with _connected(cluster):
        assert _free_cpus() == ray.cluster_resources()["CPU"]
        for _ in range(300):
            live = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
            if not live:
                break
            time.sleep(0.1)
        assert not live, live


@pytest.mark.serial
def test_a_killed_game_learner_is_resumed_through_ray(tmp_path, cluster):
    base = {**CARTPOLE, "name": "t", "out_dir": str(tmp_path), "total_frames": 40 * 320}  # 40 updates of 16 x 20
    overrides = [f"runtime.ray.address={cluster.address}", "runtime.ray.placement=pack", "log.checkpoint_every=5"]
    run_dir = tmp_path / "t"
    _kill_after_first_checkpoint(_child(GAME, [base, overrides, False]), lambda: latest_checkpoint(run_dir) is not None)
    saved = int(latest_checkpoint(run_dir).stem.split("-")[1])  # ckpt-<updates>.pt
    assert 5 <= saved < 40
    _cluster_is_free(cluster)
    result = _result(_child(GAME, [base, overrides, True]))
    assert result == {"updates": 40, "interrupted": False}
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    resumed = [r["updates"] for r in rows if "updates" in r and r["updates"] > saved]
    assert resumed and resumed[-1] == 40
    _cluster_is_free(cluster)


@pytest.mark.serial
@pytest.mark.slow
def test_a_killed_language_learner_is_resumed_through_ray(tmp_path, assets, cluster):
    raw = _pg(tmp_path, assets, cluster.address, steps=12, log={"progress": False, "every": 1, "checkpoint_every": 3},
              ray_cfg={"placement": "spread"})
    run_dir = tmp_path / "pg"
    _kill_after_first_checkpoint(_child(LM, [raw, False]), lambda: bool(list_folder_checkpoints(run_dir)))
    saved = int(list_folder_checkpoints(run_dir)[-1].name.split("-")[1])
    assert 3 <= saved < 12
    _cluster_is_free(cluster)
    assert _result(_child(LM, [raw, True])) == {"updates": 12, "final": True}
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert [r["updates"] for r in rows][-(12 - saved):] == list(range(saved + 1, 13))
    _cluster_is_free(cluster)
