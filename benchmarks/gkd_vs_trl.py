"""GKD: seedrl against TRL's ``GKDTrainer``, same teacher, student, data and batch, in one run.

For λ = 0 (supervised KD on the dataset's outputs) and λ = 1 (on-policy: the student's own
samples) both systems train the toy arithmetic world's student (setup-toy's ``reference``,
GPT-2 64×2) towards its teacher (128×4) with JSD(β) at temperature 1, ``--prompts-per-step``
prompts per update, one completion per prompt (at most ``--max-new-tokens``), Adam at a
constant lr with gradient clip 1, fp32, ``--threads`` torch intra-op threads each. Both load
the same saved models with ``from_pretrained`` and train on the same tokenized examples
(seedrl tokenizes them; TRL's own collator takes the ids: ``input_ids`` + ``completion_mask``).

Measured, each system × λ in its own subprocess, one after another (never two at once):

* seconds per update: median interval between consecutive updates' ends after ``--warmup``
  updates (seedrl: its ``on_step`` rows; TRL: a ``TrainerCallback``'s ``on_step_end``);
* student tokens/s: completion tokens distilled per update (seedrl: the rows' ``tokens``;
  TRL: labels counted in ``compute_loss``, after its generation) over the median seconds per
  update (the mean interval is in the JSON too);
* CPU seconds per update (the process's, all its threads) over the measured updates: seedrl's
  generation server and learner are threads of one process and may overlap on two cores;
* peak memory: the subprocess's RSS high-water mark (``resource.getrusage``);
* equal loss: the first-step loss of one fixed batch (the first ``--prompts-per-step``
  examples with their reference outputs + EOS) before any update: seedrl's ``GKDUpdate.loss``
  with ``gkd.reduction: token`` (the mean over the batch's completion tokens, TRL's
  ``batchmean``) against TRL's ``compute_loss`` (which ignores ``temperature``: hence 1), and
  against TRL's ``generalized_jsd_loss`` on logits computed with position ids from the
  attention mask (TRL pads on the left and passes no position ids: with GPT-2 the padded rows'
  logits are those of shifted positions, see the driver).

TRL runs at its fastest CPU settings (``benchmarks/peers/trl_gkd_driver.py``): fp32, no
gradient checkpointing, dataloader workers 0, no pinning, dropout off, no logging or saving
during the run, the same torch threads. seedrl runs ``configs/arith_gkd.yaml`` with the
settings above and one actor thread per prompt of an update (``runtime.num_actors =
--prompts-per-step``, so the generation server samples a whole update's prompts in one batch,
as TRL's ``generate`` does; with the config's 4 actors an on-policy update took about twice
as long, measured on a loaded machine). The two differ in
how they schedule work: TRL generates, then trains, in one thread of control; seedrl's actors
sample the next batches while the learner trains on this one, and its generation server
computes the teacher's distributions of the next batch meanwhile. Both get ``--threads``
cores: TRL as that many intra-op threads, seedrl as ``runtime.torch_threads = --threads // 2``
(at least 1) in each of its two computing threads (generation server, learner), which run at
the same time (two threads of two OpenMP workers each on two cores spin against each other).

TRL lives in its own virtualenv, never a dependency of seedrl (the peer venv helpers of
``peers_pong.py``):

    PYTHONPATH=src .venv/bin/python benchmarks/gkd_vs_trl.py --setup     # /tmp/seedrl-peers/venvs/trl (idempotent)
    PYTHONPATH=src .venv/bin/python benchmarks/gkd_vs_trl.py --run       # needs runs/toy/arith (seedrl lm setup-toy)

Lead's measurement (quiet machine; ~10 CPU-minutes):

    PYTHONPATH=src .venv/bin/python benchmarks/gkd_vs_trl.py --run --steps 60 --warmup 10 --threads 2

Writes ``benchmarks/results/gkd_vs_trl.json`` (``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers_pong import PeerSetup, _torch_spec, peer_info, setup_peer, venv_dir  # noqa: E402

CONFIG = ROOT / "configs" / "arith_gkd.yaml"
DRIVER = ROOT / "benchmarks" / "peers" / "trl_gkd_driver.py"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gkd_vs_trl.json"
TRL = PeerSetup("trl", [_torch_spec(), "trl==1.16.0"], report=["trl", "transformers", "torch", "accelerate", "datasets"])


def seedrl_overrides(spec: dict, lmbda: float, out_dir: str) -> list[str]:
    """``configs/arith_gkd.yaml`` overrides giving seedrl the spec's settings."""
    return [f"policy={spec['student']}", f"teacher={spec['teacher']}", f"out_dir={out_dir}", "name=bench",
            f"seed={spec['seed']}", f"steps={spec['warmup'] + spec['steps']}", f"prompts_per_step={spec['prompts_per_step']}",
            f"task.num_examples={spec['num_examples']}", f"sampling.temperature={spec['temperature']}",
            f"sampling.max_new_tokens={spec['max_new_tokens']}", f"optim.lr={spec['lr']}", f"optim.grad_clip={spec['grad_clip']}",
            "gkd.divergence=jsd", f"gkd.beta={spec['beta']}", f"gkd.temperature={spec['temperature']}", f"gkd.lmbda={lmbda}",
            "gkd.samples_per_prompt=1", "gkd.reduction=token", "gkd.off_policy=dataset",
            f"runtime.num_actors={spec['prompts_per_step']}",  # the server batches a whole update's prompts
            f"runtime.torch_threads={seedrl_threads(spec['threads'])}",
            "log.progress=false", f"log.every={spec['warmup'] + spec['steps']}", "log.checkpoint_every=1000000",
            *spec.get("set", [])]


def seedrl_threads(threads: int) -> int:
    """seedrl's intra-op threads for a budget of ``threads`` cores: its generation server (teacher
    forward, sampling) and learner compute at the same time, so each gets half (at least 1)."""
    return max(1, threads // 2)


def make_spec(a: argparse.Namespace) -> dict:
    """The shared spec: models, settings and the examples tokenized by seedrl (prompt ids,
    completion ids = the reference output + EOS), the check batch first."""
    from seedrl.agents.gkd import GKDUpdate, LMGKDConfig
    from seedrl.config import load_config
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.runtime.lm_loop import _task_and_reward

    spec = {"student": str(Path(a.student).resolve()), "teacher": str(Path(a.teacher).resolve()), "seed": a.seed,
            "threads": a.threads, "steps": a.steps, "warmup": a.warmup, "prompts_per_step": a.prompts_per_step,
            "num_examples": a.num_examples, "max_new_tokens": a.max_new_tokens, "lr": a.lr, "grad_clip": 1.0,
            "beta": a.beta, "temperature": 1.0, "set": list(a.set)}
    cfg = load_config(LMGKDConfig, str(CONFIG), seedrl_overrides(spec, 0.0, tempfile.gettempdir()))
    tok = LMPolicy.from_pretrained(spec["student"]).tokenizer
    task, _ = _task_and_reward(cfg, tok)
    target = GKDUpdate.dataset_targets(tok, cfg.gkd)
    rows = [(task.prompt(i).tokens, target(task.example(i))) for i in range(len(task))]
    return {**spec, "rows": rows, "check": rows[:a.prompts_per_step]}


def seedrl_side(spec: dict, lmbda: float) -> dict:
    """seedrl's half of one measurement (run in its own process by :func:`run_system`)."""
    import numpy as np
    import torch

    from seedrl.agents.gkd import GKDUpdate, LMGKDConfig
    from seedrl.config import load_config
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.server import GenerationServer
    from seedrl.runtime.lm_loop import _task_and_reward, train_lm
    from seedrl.runtime.lm_updates import Group

    torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(LMGKDConfig, str(CONFIG), seedrl_overrides(spec, lmbda, out))
        # the check batch: its first-step loss at λ = 0 (dataset outputs), before any update
        check = load_config(LMGKDConfig, str(CONFIG), seedrl_overrides(spec, 0.0, out))
        student = LMPolicy.from_pretrained(spec["student"]).eval()
        task, _ = _task_and_reward(check, student.tokenizer)
        update = GKDUpdate(check, student)
        batch = [Group(task.prompt(i).tokens, [], np.zeros(0, np.float32), example=task.example(i)) for i in range(len(spec["check"]))]
        assert [[g.prompt_tokens, update.target(g.example)] for g in batch] == spec["check"], "seedrl tokenized the check batch differently"
        with GenerationServer({"teacher": update.teacher}) as update.server, torch.no_grad():
            first_loss = float(update.loss(batch)[0])
        del update, student
        ends, cpu, tokens = [time.perf_counter()], [time.process_time()], []

        def on_step(row: dict) -> None:
            ends.append(time.perf_counter())
            cpu.append(time.process_time())
            tokens.append(row["tokens"])

        train_lm(cfg, on_step=on_step)
    w = spec["warmup"]
    intervals = [b - a for a, b in zip(ends[w:-1], ends[w + 1:])]
    return {"system": "seedrl", "lmbda": lmbda, "updates": len(ends) - 1, "first_step_loss": first_loss,
            "s_per_update": statistics.median(intervals), "s_per_update_mean": statistics.mean(intervals),
            "cpu_s_per_update": (cpu[-1] - cpu[w]) / len(intervals), "tokens_per_update": sum(tokens[w:]) / len(intervals),
            "tokens_per_s": sum(tokens[w:]) / len(intervals) / statistics.median(intervals),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "settings": f"configs/arith_gkd.yaml, {cfg.runtime.num_actors} actor threads, gkd.samples_per_prompt=1, "
                        f"gkd.reduction=token, fp32, torch threads {seedrl_threads(spec['threads'])} in each of "
                        f"its computing threads (server, learner) for a budget of {spec['threads']} cores"
                        + "".join(f", {kv}" for kv in spec.get("set", []))}


def run_system(system: str, spec_path: Path, lmbda: float, workdir: Path) -> dict:
    """One system × λ in a fresh subprocess (its own RSS high-water mark); returns its result row."""
    result = spec_path.parent / f"{system}_{lmbda:g}.json"
    if system == "trl":
        argv = [str(venv_dir(workdir, "trl") / "bin" / "python"), str(DRIVER), str(spec_path), str(lmbda), str(result)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # seedrl is not importable there
        env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    else:
        argv = [sys.executable, __file__, "--side-seedrl", str(spec_path), str(lmbda), str(result)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env["PYTHONUNBUFFERED"] = "1"
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, cwd=ROOT)
    row = json.loads(result.read_text())
    row["process_wall_s"] = time.perf_counter() - t0
    return row


def table(result: dict) -> str:
    lines = ["| λ | system | s / update | CPU-s / update | student tokens / update | tokens / s | peak RSS (MiB) | "
             "first-step loss |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        loss = f"{r['first_step_loss']:.6f}"
        if "first_step_loss_position_ids" in r:
            loss += f" ({r['first_step_loss_position_ids']:.6f} with position ids)"
        lines.append(f"| {r['lmbda']:g} | {r['system']} | {r['s_per_update']:.4f} | {r['cpu_s_per_update']:.4f} | "
                     f"{r['tokens_per_update']:.1f} | "
                     f"{r['tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} | {loss} |")
    for lam, s in result["speedup"].items():
        lines.append(f"λ = {lam}: seedrl {s['s_per_update']:.2f}× faster per update, {s['tokens_per_s']:.2f}× the tokens/s; "
                     f"first-step loss |Δ| = {s['loss_abs_diff']:.2e} (TRL's compute_loss), "
                     f"{s['loss_abs_diff_position_ids']:.2e} (its loss on logits with position ids)")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", action="store_true", help="make the TRL virtualenv (idempotent)")
    ap.add_argument("--run", action="store_true", help="measure both systems at λ = 0 and λ = 1")
    ap.add_argument("--workdir", default="/tmp/seedrl-peers", help="where the peer venvs live")
    ap.add_argument("--student", default=str(ROOT / "runs/toy/arith/reference"))
    ap.add_argument("--teacher", default=str(ROOT / "runs/toy/arith/teacher"))
    ap.add_argument("--steps", type=int, default=60, help="measured updates (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=10, help="updates before the measurement (>= 1)")
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--num-examples", type=int, default=5000)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads of each system")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--systems", default="seedrl,trl", help="comma-separated subset of seedrl,trl (speed-ups need both)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for seedrl's runs (e.g. gkd.top_k=8)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--side-seedrl", nargs=3, metavar=("SPEC", "LMBDA", "RESULT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.side_seedrl:
        spec_path, lmbda, result = a.side_seedrl
        row = seedrl_side(json.loads(Path(spec_path).read_text()), float(lmbda))
        Path(result).write_text(json.dumps(row, indent=1))
        return None
    workdir = Path(a.workdir)
    if a.setup:
        setup_peer(TRL, workdir)
    if not a.run:
        return None
    if a.warmup < 1:
        raise SystemExit(f"--warmup={a.warmup}: must be >= 1 (the first update includes start-up)")
    systems = [x for x in ("seedrl", "trl") if x in a.systems.split(",")]
    if not systems:
        raise SystemExit(f"--systems={a.systems!r}: name seedrl and/or trl")
    info = peer_info(workdir, "trl") if "trl" in systems else {}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec = make_spec(a)
        spec_path.write_text(json.dumps(spec))
        rows = []
        for lmbda in a.lambdas:
            for system in systems:
                rows.append(run_system(system, spec_path, lmbda, workdir))
                load.append(os.getloadavg())
                print(f"λ={lmbda:g} {system}: {rows[-1]['s_per_update']:.4f} s/update", flush=True)
    from importlib.metadata import version

    speedup = {}
    for lmbda in a.lambdas if len(systems) == 2 else []:
        s, t = (next(r for r in rows if r["lmbda"] == lmbda and r["system"] == k) for k in ("seedrl", "trl"))
        speedup[f"{lmbda:g}"] = {"s_per_update": t["s_per_update"] / s["s_per_update"],
                                 "tokens_per_s": s["tokens_per_s"] / t["tokens_per_s"],
                                 "loss_abs_diff": abs(s["first_step_loss"] - t["first_step_loss"]),
                                 "loss_abs_diff_position_ids": abs(s["first_step_loss"] - t["first_step_loss_position_ids"])}
    result = {"settings": {k: v for k, v in spec.items() if k not in ("rows", "check")},
              "divergence": f"JSD(beta={a.beta}), temperature 1, per-token mean over the batch",
              "versions": {"seedrl_torch": version("torch"), **info.get("versions", {})},
              "loadavg_1_5_15": {"min": [min(x) for x in zip(*load)], "max": [max(x) for x in zip(*load)]},
              "cpus": os.cpu_count(), "rows": rows, "speedup": speedup}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(table(result))
    return result


if __name__ == "__main__":
    main()
