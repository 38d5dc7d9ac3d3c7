"""``benchmarks/rllib_impala.py``: its analysis, its CPU count, and each side run end to end (``--quick``)."""

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return load("rllib_impala", BENCH / "rllib_impala.py")


def sample(t, frames, cpu, ret, **kinds):
    return {"t": t, "frames": frames, "cpu": cpu, "return": ret, "cpu_by_kind": kinds}


def test_analyse_measures_the_steady_part_and_the_returns(bench):
    # 0-2 s start-up without frames; then 1,000 frames/s and 2 CPU-ms per frame (1 ms driver, 1 ms groups)
    samples = [sample(0.0, 0, 0.0, None, driver=0.0), sample(2.0, 0, 1.0, None, driver=1.0)]
    for k in range(1, 11):
        f = 1000 * k
        samples.append(sample(2.0 + k, f, 1.0 + 0.002 * f, 10.0 * k, driver=1.0 + 0.001 * f, group=0.001 * f))
    out = bench.analyse(samples, budget=10_000)
    assert out["fps"] == pytest.approx(1000.0)
    assert out["cpu_us_per_frame"] == pytest.approx(2000.0) and out["cores_busy"] == pytest.approx(2.0)
    assert out["cpu_us_per_frame_by_kind"] == pytest.approx({"driver": 1000.0, "group": 1000.0})
    assert out["first_frames_s"] == 3.0 and out["frames"] == 10_000 and out["wall_s"] == 12.0
    assert out["return_at_frames"] == {"1/4": 20.0, "2/4": 50.0, "3/4": 70.0, "4/4": 100.0}
    assert out["solved_s"] is None and out["solved_frames"] is None
    samples[-3]["return"] = 480.0  # reached 475 at 8,000 frames, 10 s
    assert (bench.analyse(samples, 10_000)["solved_frames"], bench.analyse(samples, 10_000)["solved_s"]) == (8000, 10.0)
    assert bench.return_at(samples, "t", 4.5) == 20.0 and bench.return_at(samples, "t", 1.0) is None
    with pytest.raises(ValueError, match="too few samples"):
        bench.analyse(samples[:1], 10_000)


def test_tree_cpu_counts_a_busy_child_by_kind(bench):
    driver = load("rllib_impala_driver", BENCH / "peers" / "rllib_impala_driver.py")
    burn = "import sys, time\nwhile time.process_time() < 0.4: pass\nprint('done', flush=True)\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"  # it has burnt 0.4 CPU-s and now waits
        total, kinds = driver.tree_cpu(by_kind=True)
        tick = 3 / driver.CLK_TCK  # /proc counts whole clock ticks (user and system each truncated)
        assert kinds["other"] >= 0.4 - tick and total >= kinds["other"] + kinds["driver"] - 1e-9
        assert driver.tree_cpu() >= 0.4 - tick
    finally:
        child.communicate("")
    assert driver.tree_cpu() < total - 0.3  # an exited child is no longer counted


def test_each_system_gets_its_settings_in_the_spec_its_process_reads(bench, monkeypatch, tmp_path):
    specs = []

    class FakeRun:  # stands for the run's process: reads the spec file, writes a result
        returncode = 0

        def __init__(self, argv, **kwargs):
            spec_path, result = argv[-2], argv[-1]
            specs.append(json.loads(Path(spec_path).read_text()))
            samples = [sample(1.0, 1000, 1.0, 20.0, driver=1.0), sample(2.0, 2000, 2.0, 30.0, driver=2.0)]
            Path(result).write_text(json.dumps({"samples": samples}))

        def communicate(self, timeout=None):
            return "", ""

    monkeypatch.setattr(bench.subprocess, "Popen", FakeRun)
    args = argparse.Namespace(envs=16, frames=2000, max_s=60.0, sample_every_s=1.0)
    for system in ("seedrl-ray", "seedrl", "rllib", "rllib-learner"):
        run = bench.run_system(system, bench.make_spec(args, num_actors=2), tmp_path)
        assert run["system"] == system and run["fps"] == pytest.approx(1000.0)
    assert [s.get("rllib_num_learners", 0) for s in specs] == [0, 0, 0, 1]
    assert [s["num_cpus"] for s in specs] == [2, 2, 2, 3]  # the learner actor's CPU on top of the two groups'
    assert all(s["hidden"] == [64, 64] and s["batch_size"] == 32 and s["unroll_length"] == 20 for s in specs)


def test_stop_group_ends_a_run_and_the_processes_it_started(bench):
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\ntime.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    grandchild = int(proc.stdout.readline())
    bench.stop_group(proc)
    assert proc.returncode is not None
    for _ in range(100):  # the grandchild's parent is gone: it is reaped by init, not by us
        if not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"process {grandchild} started by the run is still alive")


@pytest.mark.slow  # a local Ray instance: ~10 s quiet, 41 s at load average 38
def test_quick_seedrl_on_ray_end_to_end(bench, tmp_path):
    out = bench.main(["--quick", "--part", "compare", "--systems", "seedrl-ray", "--workdir", str(tmp_path)])
    (run,) = out["compare"]["runs"]
    assert run["system"] == "seedrl-ray" and run["frames"] >= 8000 and run["fps"] > 0
    # the tree count sees the Ray actor processes of the groups beside the driver (inference + learner)
    kinds = run["cpu_us_per_frame_by_kind"]
    assert kinds["driver"] > 0 and kinds["ray::ActorGroup"] > 0
    assert out["compare"]["ratios"] == {}  # no RLlib run, no ratio


@pytest.mark.slow  # RLlib's start-up: 68 s at load average 9
def test_quick_rllib_side_end_to_end(bench):
    venv = bench.venv_dir(Path("/tmp/seedrl-peers"), "rllib")
    if not (venv / ".seedrl-bench.json").exists():
        pytest.skip(f"RLlib's venv {venv} is absent: `benchmarks/rllib_impala.py --setup` makes it (pip, ~2 minutes)")
    out = bench.main(["--quick", "--part", "compare", "--systems", "seedrl,rllib"])
    runs = {r["system"]: r for r in out["compare"]["runs"]}
    assert runs["rllib"]["frames"] >= 8000 and runs["rllib"]["versions"]["ray"] == "2.60.0"
    assert runs["rllib"]["cpu_us_per_frame_by_kind"]["ray::SingleAgentEnvRunner"] > 0
    ratio = out["compare"]["ratios"]["seedrl/rllib"]
    assert ratio["fps"] == pytest.approx(runs["seedrl"]["fps"] / runs["rllib"]["fps"])
