"""RLlib IMPALA on CartPole, driven by ``benchmarks/rllib_impala.py`` in RLlib's own virtualenv.

    /tmp/seedrl-peers/venvs/rllib/bin/python benchmarks/peers/rllib_impala_driver.py SPEC.json RESULT.json

``SPEC.json`` holds the settings shared with seedrl's side (see
``rllib_impala.py``: environments, model, V-trace losses, optimiser, CPUs,
frame budget). Runs ``algo.train()`` until the frame budget or the wall-time
cap and writes one sample per iteration: wall seconds, environment frames
sampled, CPU seconds of this process tree (Ray's raylet, GCS and workers
included), the mean return of the last 100 episodes and the CPU seconds by
process kind. Imports nothing from seedrl (it is not installed in that venv);
seedrl's side imports :func:`tree_cpu` from here so both count CPU the same way.
"""

from __future__ import annotations

import json
import os
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _kind(pid: int, root: int) -> str:
    """What a process of the tree is: driver, ray::<Actor class>, raylet, gcs_server, mp-child or other."""
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "gone"
    head = argv[0].decode(errors="replace")
    if head.startswith("ray::"):  # a Ray worker's title: ray::ActorGroup.step() -> ray::ActorGroup
        return head.split(".")[0].split("(")[0].split(" ")[0]
    line = b" ".join(argv).decode(errors="replace")
    for name in ("raylet", "gcs_server"):
        if name in line:
            return name
    return "mp-child" if "multiprocessing" in line else "other"  # mp-child: an embedded actor process


def tree_cpu(root: int | None = None, by_kind: bool = False):
    """User + system CPU seconds of process ``root`` (default: this one) and every live process below it.

    Reads ``/proc/*/stat`` (no psutil in the peer venv). With ``by_kind``
    returns ``(total, {kind: seconds})`` (kinds from :func:`_kind`); CPU of
    processes that already exited is not counted (the same for both systems).
    """
    root = os.getpid() if root is None else root
    stats: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "pid (comm)": state ppid ... utime(14th field) stime(15th), 1-based over the whole line
        stats[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, kinds, todo = 0.0, {}, [root]
    while todo:
        pid = todo.pop()
        if pid not in stats:
            continue
        cpu = stats[pid][1]
        total += cpu
        if by_kind:
            kind = _kind(pid, root)
            kinds[kind] = kinds.get(kind, 0.0) + cpu
        todo.extend(children.get(pid, ()))
    return (total, kinds) if by_kind else total


def build(spec: dict):
    """The IMPALA algorithm of ``spec`` on RLlib's new API stack (RLModule, Learner, EnvRunner)."""
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    config = (
        IMPALAConfig()
        .environment(spec["env_id"])
        .env_runners(num_env_runners=spec["num_actors"], num_envs_per_env_runner=spec["num_envs"],
                     num_cpus_per_env_runner=1, rollout_fragment_length=spec["unroll_length"])
        # the learner in the driver, as seedrl's (num_learners=1 would make it a Ray actor of its own)
        .learners(num_learners=spec.get("rllib_num_learners", 0))
        .training(train_batch_size_per_learner=spec["batch_size"] * spec["unroll_length"], lr=spec["lr"],
                  gamma=spec["discount"], entropy_coeff=spec["entropy_cost"], vf_loss_coeff=spec["baseline_cost"],
                  grad_clip=spec["grad_clip"], grad_clip_by="global_norm")
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(spec["hidden"]),
                                                   fcnet_activation=spec["activation"], vf_share_layers=True))
        .reporting(min_time_s_per_iteration=spec["sample_every_s"], metrics_num_episodes_for_smoothing=100)
        .debugging(seed=spec["seed"], log_level="ERROR")
    )
    return config.build_algo() if hasattr(config, "build_algo") else config.build()


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    import ray
    import torch
    from ray.rllib.algorithms.impala import IMPALAConfig  # noqa: F401 - imported before the clock starts, as seedrl

    torch.set_num_threads(spec["torch_threads"])
    start = time.perf_counter()
    ray.init(address="local", num_cpus=spec["num_cpus"], object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False)
    algo = build(spec)
    samples = []
    try:
        while True:
            res = algo.train()
            runners = res.get("env_runners", {})
            frames = int(runners.get("num_env_steps_sampled_lifetime", 0))
            cpu, kinds = tree_cpu(by_kind=True)
            ret = runners.get("episode_return_mean")
            samples.append({"t": time.perf_counter() - start, "frames": frames, "cpu": cpu, "cpu_by_kind": kinds,
                            "return": None if ret is None or ret != ret else float(ret)})
            print(f"rllib {frames:>9,d} frames  {samples[-1]['t']:6.1f} s  return {samples[-1]['return']}", flush=True)
            if frames >= spec["frames"] or samples[-1]["t"] >= spec["max_s"]:
                break
    finally:
        algo.stop()
        ray.shutdown()
    import gymnasium

    with open(result_path, "w") as f:
        json.dump({"system": "rllib", "samples": samples,
                   "versions": {"ray": ray.__version__, "torch": torch.__version__, "gymnasium": gymnasium.__version__}},
                  f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
