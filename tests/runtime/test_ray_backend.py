"""The Ray backend: the same IMPALA runs with actor groups as Ray actors.

Runs go on a local two-node Ray cluster (``ray.cluster_utils.Cluster``: two
raylets on this machine, 1 + 2 logical CPUs, 100 MB object store each) that
the runs join through ``runtime.ray.address``; one test lets the run start
and stop its own local instance. Every Ray process is shut down in the
fixtures' ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import queue
import subprocess
import sys
import threading
import time

import pytest

from seedrl.config import ConfigError, load_config
from seedrl.runtime.checkpoint import latest_checkpoint
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.errors import ActorsFailed
from seedrl.runtime.loop import train

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

STORE = 100 * 2**20
CARTPOLE = {
    "env": {"kind": "gym", "id": "CartPole-v1", "num_envs": 8},
    "model": {"torso": "mlp", "hidden": [64, 64]},
    "optim": {"lr": 0.002, "lr_decay": "none"},
    "agent": {"entropy_cost": 0.005},
    "runtime": {"num_actors": 2, "unroll_length": 20, "batch_size": 16, "torch_threads": 1, "backend": "ray"},
    "log": {"progress": False, "tensorboard": False, "every_s": 0.5, "checkpoint_every": 1000},
}


def _cfg(tmp_path, **over) -> TrainConfig:
    """CARTPOLE in ``tmp_path`` with ``key.sub=value`` overrides (the loader's own)."""
    base = {**CARTPOLE, "name": "t", "out_dir": str(tmp_path), "total_frames": 10_000_000}
    return load_config(TrainConfig, base, [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in over.items()])


def _two_node_cluster():
    """A two-node Ray cluster on this machine; its address is what runs join."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False})
    try:
        c.add_node(num_cpus=2, object_store_memory=STORE)
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


cluster = pytest.fixture(scope="module")(_two_node_cluster)
# A cluster of its own for the longer runs (a run's actors never outlive it; see OWN_RAY below for
# why the run that starts its own Ray instance goes in a child process)
fresh_cluster = pytest.fixture(scope="function")(_two_node_cluster)


# ------------------------------------------------------------------ config errors
def test_misspelt_backend_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, **{"runtime.backend": "rya"})
    message = str(err.value)
    assert "runtime.backend" in message and "'rya'" in message and "ray" in message and "processes" in message
    assert "\n" not in message
    assert not (tmp_path / "t").exists()


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what find_spec / import see when Ray is not installed
    with pytest.raises(ConfigError, match=r"runtime.backend.*seedrl\[ray\]") as err:
        _cfg(tmp_path)
    assert "\n" not in str(err.value)


def test_import_seedrl_does_not_import_ray():
    code = ("import sys, seedrl, seedrl.cli, seedrl.runtime.loop, seedrl.runtime.config; "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], env=None).returncode == 0


# ------------------------------------------------------------------ runs on the cluster
def test_cartpole_learns_on_a_two_node_cluster(tmp_path, cluster):
    cfg = _cfg(tmp_path, total_frames=80_000, **{"runtime.ray.address": cluster.address})
    nodes: list = []
    result = train(cfg, on_update=lambda row, backend: nodes or nodes.extend(backend.node_ids()))
    # a uniformly random policy averages ~22 on CartPole-v1
    assert result.mean_return is not None and result.mean_return > 45, result
    assert len(set(nodes)) == 2, nodes  # scheduling: spread puts the two groups on both nodes
    rows = [json.loads(line) for line in open(result.run_dir / "metrics.jsonl")]
    assert all(r["policy_lag"] >= 0 for r in rows if "policy_lag" in r)
    assert not ray.is_initialized()  # the run disconnected; the cluster lives on


@pytest.mark.serial
def test_killed_actor_group_is_restarted_by_ray_and_the_run_goes_on(tmp_path, cluster):
    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address})
    seen: dict = {}

    def kill_one(row, backend):
        # kill only once group 0 has stepped: a kill while its first start() is still pending is
        # absorbed by Ray's task retry (the new process just starts) and counts no crash
        if "pid" not in seen and row["updates"] >= 3 and backend.round_trips[0] >= 5:
            seen["pid"], seen["trips"] = backend.pids()[0], backend.round_trips[0]
            backend.kill_actor(0)  # ray.kill(..., no_restart=False): Ray restarts the process
        elif "pid" in seen and "new_pid" not in seen and backend.round_trips[0] > seen["trips"] + 10:
            # group 0 steps its environments again: stop the run the way a user's Ctrl-C would
            seen["new_pid"], seen["updates"] = backend.pids()[0], row["updates"]
            signal.raise_signal(signal.SIGTERM)

    # the restart takes seconds while group 1 alone feeds the learner: the cap only bounds a hang
    result = train(cfg, max_updates=5_000, on_update=kill_one)
    assert "pid" in seen, "group 0 never stepped"
    assert "new_pid" in seen, f"group 0 did not step again after the kill ({result.updates} updates)"
    assert seen["new_pid"] != seen["pid"]  # a new process serves group 0
    assert result.interrupted and result.updates >= seen["updates"]
    rows = [json.loads(line) for line in open(result.run_dir / "metrics.jsonl")]
    assert rows[-1]["actor_restarts"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("servers", [1, 2])
def test_groups_on_two_nodes_record_every_counted_episode_into_one_dataset(tmp_path, cluster, servers):
    from seedrl.data import open_dataset
    from seedrl.data.segment import list_segments

    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address, "record.rate": 1.0, "env.num_envs": 2,
                            "runtime.batch_size": 4, **(SHARDED if servers > 1 else {})})
    nodes: list = []
    result = train(cfg, max_updates=30, on_update=lambda row, backend: nodes or nodes.extend(backend.node_ids()[:2]))
    assert len(set(nodes)) == 2, nodes  # the two groups write from two nodes
    ds = open_dataset(cfg.run_dir / "episodes")
    # every episode the run counted was recorded (more may end between the last count and the stop)
    assert result.episodes > 0 and len(ds) >= result.episodes
    assert {ep.metadata["agent_id"] for ep in ds} == {"actor-0", "actor-1"}
    assert len(list_segments(cfg.run_dir / "episodes")) == 2  # each writer its own segment
    assert not any(p.name.startswith(".seedrl-shared") for p in (cfg.run_dir / "episodes").iterdir())
    for ep in ds:
        assert ep.columns["is_first"][0] and ep.columns["is_last"][-1]


def test_backpressure_groups_wait_while_the_learner_queue_is_full(tmp_path, cluster):
    """No learner takes unrolls: once the bounded queue is full inference stops replying, and the
    groups' round trips stop at what the queue (+ one blocked put, + a partial unroll per group) holds."""
    from seedrl.models.config import build_model
    from seedrl.runtime.actor import ActorSpec
    from seedrl.runtime.inference import InferenceServer
    from seedrl.runtime.loop import build_layout, probe_spaces
    from seedrl.runtime.ray_backend import RayBackend

    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address})
    obs_space, act_space = probe_spaces(cfg)
    layout = build_layout(cfg, obs_space, act_space)
    unrolls: queue.Queue = queue.Queue(maxsize=2)
    T, groups = 4, 2
    server = InferenceServer(build_model(cfg.model, obs_space, act_space).eval(), layout, groups, T, unrolls,
                             batch_timeout_s=0.0)
    backend = RayBackend(layout, groups, lambda a, r: ActorSpec(a, cfg.env, layout.num_envs, seed=a), cfg.runtime.ray,
                         on_restart=server.reset_actor)
    stop = threading.Event()
    backend.start()
    thread = threading.Thread(target=server.serve, args=(backend, stop), daemon=True)
    thread.start()
    try:
        for _ in range(600):  # the queue fills within a few seconds
            if unrolls.full():
                break
            time.sleep(0.1)
        assert unrolls.full()
        time.sleep(2.0)  # without backpressure: ~1 ms per round trip, thousands of them
        trips = sum(backend.round_trips.values())
    finally:
        stop.set()
        thread.join(10)
        backend.stop()
    # 2 queued unrolls + 1 blocked in put, each T steps (the first T + 1), + per group one partial unroll and one step
    assert trips <= (unrolls.maxsize + 1) * T + 1 + groups * (T + 1), trips


@pytest.mark.slow
def test_a_group_whose_setup_raises_is_restarted_then_ends_the_run_with_its_error(tmp_path, cluster):
    (tmp_path / "file").write_text("not a directory")
    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address, "runtime.max_restarts": 2,
                            "record.rate": 1.0, "record.path": str(tmp_path / "file" / "episodes")})
    with pytest.raises(ActorsFailed, match=r"failed 3 times \(limit max_restarts=2\).*NotADirectoryError.*--resume"):
        train(cfg, max_updates=5)
    assert (tmp_path / "file").read_text() == "not a directory"
    assert not ray.is_initialized()


def test_crashes_beyond_max_restarts_save_a_checkpoint_and_end_the_run(tmp_path, cluster):
    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address, "runtime.max_restarts": 0})
    _fails_freeing_every_cpu(cluster, cfg, lambda backend: backend.kill_actor(1), ActorsFailed, r"max_restarts=0.*--resume")
    assert latest_checkpoint(tmp_path / "t") is not None


def _fails_freeing_every_cpu(cluster, cfg, kill, error, match) -> None:
    """Train ``cfg``, calling ``kill(backend)`` at update 3: the run must raise ``error`` (``match``),
    and kill every Ray actor it started (the test stays connected, so no disconnect does it instead)."""

    def at_update_3(row, backend):
        if row["updates"] == 3:
            kill(backend)

    with _connected(cluster):
        with pytest.raises(error, match=match):
            train(cfg, max_updates=10_000, on_update=at_update_3)
        assert _free_cpus() == ray.cluster_resources()["CPU"]


def test_more_cpus_than_the_cluster_has_is_a_clear_error(tmp_path, cluster):
    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address, "runtime.ray.actor_cpus": 2.0})
    with pytest.raises(ConfigError, match=r"runtime.ray.actor_cpus.*4 CPUs.*has 3"):
        train(cfg, max_updates=1)
    assert not ray.is_initialized()


# ------------------------------------------------------------------ own local instance
# The run goes in a child process: after this process started and stopped a Ray instance of its own,
# actors that later runs create on the module's cluster were cancelled by Ray before they started
# ("SchedulingCancelled: Actor creation cancelled"; reproduced with this test between two cluster tests).
OWN_RAY = """
import json, sys
import psutil, ray
from seedrl.config import load_config
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.loop import train

base, overrides = json.loads(sys.argv[1])
result = train(load_config(TrainConfig, base, overrides), max_updates=3)
left = []
for p in psutil.Process().children(recursive=True):  # Ray's raylet, GCS, workers still alive
    try:
        if "ray" in " ".join(p.cmdline()).lower() and p.status() != psutil.STATUS_ZOMBIE:
            left.append(p.cmdline())
    except psutil.Error:
        pass
print(json.dumps({"updates": result.updates, "initialized": ray.is_initialized(), "left": left}))
"""


def test_a_run_without_address_starts_and_stops_its_own_ray(tmp_path):
    pytest.importorskip("psutil")
    base = {**CARTPOLE, "name": "t", "out_dir": str(tmp_path), "total_frames": 10_000_000}
    overrides = ["runtime.num_actors=1", "runtime.ray.num_cpus=1"]
    done = subprocess.run([sys.executable, "-c", OWN_RAY, json.dumps([base, overrides])], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["updates"] == 3 and not out["initialized"]
    assert not out["left"], out["left"]


@pytest.mark.slow
def test_ray_learns_as_well_as_embedded_at_the_same_budget_and_seed(tmp_path, fresh_cluster):
    """Same config, seed and frame budget on both backends. The runs are asynchronous (policy
    lag and batch composition differ), so not bit-equal: Ray must reach at least 60% of the
    embedded mean return (measured on this machine, ray / embedded: seed 0 at 100k frames 108 / 83,
    seeds 1 and 2 at 80k frames 96 / 76 and 90 / 60)."""
    common = {"total_frames": 80_000, "seed": 1}
    embedded = train(_cfg(tmp_path / "e", **common, **{"runtime.backend": "processes"}))
    on_ray = train(_cfg(tmp_path / "r", **common, **{"runtime.ray.address": fresh_cluster.address}))
    assert embedded.frames == on_ray.frames
    assert embedded.mean_return > 45 and on_ray.mean_return > 45, (embedded, on_ray)
    assert on_ray.mean_return >= 0.6 * embedded.mean_return, (embedded.mean_return, on_ray.mean_return)


# ------------------------------------------------------------------ several inference servers (Ray actors)
SHARDED = {"runtime.ray.inference_servers": 2, "runtime.ray.server_cpus": 0.5, "runtime.ray.actor_cpus": 0.5}


def test_more_servers_than_groups_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"runtime.ray.inference_servers' = 3 is above the 2 actor groups") as err:
        _cfg(tmp_path, **{"runtime.ray.inference_servers": 3})
    assert "\n" not in str(err.value)


def test_cartpole_learns_with_two_inference_servers_each_receiving_every_version(tmp_path, cluster):
    cfg = _cfg(tmp_path, total_frames=80_000, **SHARDED, **{"runtime.ray.address": cluster.address,
                                                            "runtime.ray.placement": "spread"})
    seen: dict = {}

    def look(row, backend):
        if "nodes" not in seen:
            seen["nodes"], seen["backend"] = backend.node_ids(), backend

    result = train(cfg, on_update=look)
    assert result.mean_return is not None and result.mean_return > 45, result
    assert len(seen["nodes"]) == 4 and len(set(seen["nodes"])) == 2, seen["nodes"]  # spread (soft): both nodes used
    received = seen["backend"].received
    assert len(received) == 2
    for versions in received:  # every version the learner published reached every server
        assert sorted(versions) == list(range(1, result.updates + 1)), (len(versions), result.updates)
    rows = [json.loads(line) for line in open(result.run_dir / "metrics.jsonl")]
    lags = [r["policy_lag"] for r in rows if "policy_lag" in r]
    assert lags and all(lag >= 0 for lag in lags)
    assert not ray.is_initialized()


@contextlib.contextmanager
def _connected(cluster):
    """This process joined to ``cluster`` around a run: the run keeps the connection, so what the run
    does not kill itself stays alive (a driver's disconnect would kill its actors for it)."""
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _free_cpus() -> float:
    """The cluster's free CPUs once killed actors' resources are back (waits up to 30 s for Ray to reclaim them)."""
    total = ray.cluster_resources()["CPU"]
    for _ in range(300):
        if ray.available_resources().get("CPU", 0.0) >= total:
            break
        time.sleep(0.1)
    return ray.available_resources().get("CPU", 0.0)


def test_a_lost_inference_server_fails_the_run_with_a_checkpoint_and_resume_goes_on(tmp_path, cluster):
    from seedrl.runtime.errors import InferenceFailed

    cfg = _cfg(tmp_path, **SHARDED, **{"runtime.ray.address": cluster.address, "log.checkpoint_every": 2})

    _fails_freeing_every_cpu(cluster, cfg, lambda backend: backend.kill_server(1), InferenceFailed,
                             r"inference server 1 \(groups \[1\]\) was lost.*saved in .*--resume")
    ckpt = latest_checkpoint(tmp_path / "t")
    assert ckpt is not None
    saved = int(ckpt.stem.split("-")[1])  # ckpt-<updates>.pt
    assert saved >= 3
    result = train(cfg, resume=True, max_updates=saved + 3)  # the same two servers, from the checkpoint
    assert result.updates == saved + 3 and not result.interrupted


def test_a_record_path_the_groups_do_not_see_is_a_clear_error(tmp_path, cluster, monkeypatch):
    """What a cluster without a shared filesystem looks like: the marker the driver writes into
    ``record.path`` is not there for the groups (simulated: the driver keeps it to itself)."""
    import os

    from seedrl.runtime import ray_backend

    def driver_only(folder, token):
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f".seedrl-shared-{token}")  # never reaches the groups' view of the folder

    monkeypatch.setattr(ray_backend, "_write_marker", driver_only)
    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address, "record.rate": 1.0})
    with _connected(cluster):
        with pytest.raises(ConfigError, match=r"'record.path' = '.*episodes' is not shared: actor groups \[0, 1\] on node"):
            train(cfg, max_updates=3)
        assert _free_cpus() == 3  # the groups the run had started were killed


def test_pack_placement_puts_the_groups_on_one_node(tmp_path, cluster):
    """Two groups of 1 CPU on nodes of 1 and 2 CPUs: a packed placement group holds both on the 2-CPU node
    (spread scheduling without a placement group puts them on both: the learning test above)."""
    cfg = _cfg(tmp_path, **{"runtime.ray.address": cluster.address, "runtime.ray.placement": "pack"})
    nodes: list = []
    result = train(cfg, max_updates=3, on_update=lambda row, backend: nodes or nodes.extend(backend.node_ids()))
    assert result.updates == 3
    assert len(nodes) == 2 and len(set(nodes)) == 1, nodes
