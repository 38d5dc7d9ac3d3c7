"""Language runs (PG / BOND on the runtime, SFT) share the games' lifecycle: SIGINT and SIGTERM
stop them with a checkpoint, resume is checked before anything is written, a damaged newest
checkpoint falls back to the one before, and a non-finite loss stops the run saving nothing."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from seedrl.agents.sft import SFTConfig, train_sft  # noqa: E402
from seedrl.config import load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.runtime.checkpoint import STATE_FILE, list_folder_checkpoints  # noqa: E402
from seedrl.runtime.errors import ActorsFailed, NonFiniteLoss, ResumeMismatch, RunFinished  # noqa: E402
from seedrl.runtime.lm_loop import LMPGConfig, train_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sevens(prompts, completions, examples):
    return np.array([c.count("7") / max(1, len(c.replace(" ", ""))) for c in completions], dtype=np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy")
    build_toy_assets(path, world="arithmetic", seed=0, corpus_size=200, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    return str(path)


def _pg(tmp_path, model, log=(), runtime=(), **kw) -> dict:
    return {"name": "pg", "out_dir": str(tmp_path), "policy": model, "task": {"world": "arithmetic", "num_examples": 100},
            "sampling": {"max_new_tokens": 4}, "pg": {"samples_per_prompt": 2}, "prompts_per_step": 4,
            "runtime": {"num_actors": 1, **dict(runtime)},
            "log": {"progress": False, "every": 1, "checkpoint_every": 2, **dict(log)}, "steps": 4, **kw}


def _sft(tmp_path, model, log=(), **kw) -> dict:
    return {"name": "sft", "out_dir": str(tmp_path), "model": model,
            "data": {"world": "arith", "world_options": {"ops": ["add"], "max_digits": 1}, "num_examples": 200,
                     "eval_examples": 0},
            "batch_size": 4, "max_completion_tokens": 4, "eval_at_start": False, "eval_every": 0, "eval_prompts": 0,
            "log": {"progress": False, "every": 1, "checkpoint_every": 2, **dict(log)}, "steps": 4, **kw}


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ----------------------------------------------------------------------------- signals
# A run in its own process, as `seedrl run ... &` starts it; it says READY once two updates are
# done, then trains on until a signal stops it.
SCRIPT = """
import json, sys
from seedrl.config import load_config
kind, raw = sys.argv[1], json.loads(sys.argv[2])
if kind == "pg":
    import numpy as np
    from seedrl.runtime.lm_loop import LMPGConfig, train_lm
    def ready(row):
        if row["updates"] == 2:
            print("READY", flush=True)
    reward = lambda p, c, e: np.zeros(len(c), np.float32)
    out = train_lm(load_config(LMPGConfig, raw), reward_fn=reward, on_step=ready)
    result = {"interrupted": out.get("interrupted", False), "signal": out.get("stop_signal"), "updates": out["updates"]}
else:
    import seedrl.agents.sft as sft
    real, calls = sft.sft_loss, []
    def counted(*args):
        calls.append(1)
        if len(calls) == 3:
            print("READY", flush=True)
        return real(*args)
    sft.sft_loss = counted
    res = sft.train_sft(load_config(sft.SFTConfig, raw))
    result = {"interrupted": res.interrupted, "signal": res.stop_signal, "updates": res.step}
print("RESULT " + json.dumps(result), flush=True)
"""


def _wait_for(lines: queue.Queue, prefix: str, seen: list[str], timeout: float = 120) -> str:
    while True:
        line = lines.get(timeout=timeout)
        if line is None:
            raise AssertionError(f"process ended before {prefix!r}:\n{''.join(seen)}")
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix):].strip()


@pytest.mark.parametrize("kind, sig, sigint_ignored", [
    ("pg", signal.SIGTERM, False),
    ("sft", signal.SIGTERM, False),
    ("pg", signal.SIGINT, True),  # a background job of a non-interactive shell starts with SIGINT ignored
])
def test_a_signal_stops_a_language_run_with_a_checkpoint_and_it_resumes(tmp_path, model, kind, sig, sigint_ignored):
    raw = (_pg if kind == "pg" else _sft)(tmp_path, model, steps=10_000, log={"checkpoint_every": 10_000})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, kind, json.dumps(raw)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=preexec)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: ([lines.put(x) for x in proc.stdout], lines.put(None)), daemon=True).start()
    seen: list[str] = []
    try:
        _wait_for(lines, "READY", seen)
        proc.send_signal(sig)
        result = json.loads(_wait_for(lines, "RESULT ", seen, timeout=60))
        assert proc.wait(timeout=30) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = tmp_path / kind
    assert result["interrupted"] and result["signal"] == sig.name and result["updates"] >= 2
    assert [p.name for p in list_folder_checkpoints(run_dir)] == [f"checkpoint-{result['updates']}"]
    assert not (run_dir / "final").exists() and not (run_dir / ".lock").read_text()
    done = result["updates"]
    if kind == "pg":
        rows: list[dict] = []
        train_lm(load_config(LMPGConfig, {**raw, "steps": done + 2}), resume=True, reward_fn=sevens, on_step=rows.append)
        assert [r["updates"] for r in rows] == [done + 1, done + 2]
    else:
        res = train_sft(load_config(SFTConfig, {**raw, "steps": done + 2}), resume=True)
        assert sorted(res.losses) == [done + 1, done + 2] and res.final_dir is not None


# ----------------------------------------------------------------------------- resume rules
def test_pg_resume_with_fewer_steps_or_at_its_end_changes_nothing(tmp_path, model):
    raw = _pg(tmp_path, model)
    train_lm(load_config(LMPGConfig, {**raw, "steps": 3}), reward_fn=sevens)  # checkpoints 2 and 3, final/
    before = _snapshot(tmp_path / "pg")
    with pytest.raises(RunFinished, match="checkpoint-3 is at 3 of steps=3"):
        train_lm(load_config(LMPGConfig, {**raw, "steps": 3}), resume=True, reward_fn=sevens)
    with pytest.raises(ResumeMismatch, match="steps=2 is below the 3 of its checkpoint checkpoint-3"):
        train_lm(load_config(LMPGConfig, {**raw, "steps": 2, "optim": {"lr": 0.5}}), resume=True, reward_fn=sevens)
    assert _snapshot(tmp_path / "pg") == before  # config.yaml, final/, checkpoints, metrics untouched


def test_pg_resume_skips_a_checkpoint_with_flipped_weight_bytes(tmp_path, model, caplog):
    raw = _pg(tmp_path, model, steps=6)
    train_lm(load_config(LMPGConfig, {**raw, "steps": 4}), reward_fn=sevens)  # checkpoints 2 and 4
    weights = tmp_path / "pg" / "checkpoint-4" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) - 50] ^= 0x40  # inside the tensor data: safetensors itself would load it
    weights.write_bytes(bytes(data))
    rows: list[dict] = []
    with caplog.at_level(logging.WARNING):
        train_lm(load_config(LMPGConfig, raw), resume=True, reward_fn=sevens, on_step=rows.append)
    assert [r["updates"] for r in rows] == [3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in rows)
    assert "checkpoint-4 is damaged: model.safetensors does not match its SHA-256" in caplog.text
    assert (tmp_path / "pg" / "checkpoint-4.damaged").is_dir()
    logged = [json.loads(line)["updates"] for line in (tmp_path / "pg" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]  # rows 3-4 of the abandoned run were dropped, then redone


def test_sft_resume_skips_a_truncated_checkpoint(tmp_path, model, caplog):
    raw = _sft(tmp_path, model, steps=6)
    part = train_sft(load_config(SFTConfig, raw), max_steps=4)  # checkpoints 2 and 4
    assert [p.name for p in list_folder_checkpoints(part.run_dir)] == ["checkpoint-2", "checkpoint-4"]
    state = part.run_dir / "checkpoint-4" / STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        rest = train_sft(load_config(SFTConfig, raw), resume=True)
    assert sorted(rest.losses) == [3, 4, 5, 6] and rest.final_dir is not None
    assert f"checkpoint-4 is damaged: {STATE_FILE} has 100 bytes" in caplog.text


# ----------------------------------------------------------------------------- non-finite loss
def test_pg_stops_at_a_non_finite_loss_and_keeps_its_last_checkpoint(tmp_path, model, monkeypatch):
    from seedrl.agents.pg import PGUpdate

    real, calls = PGUpdate.loss, []

    def poisoned(self, batch):
        loss, logs = real(self, batch)
        calls.append(1)
        return (loss * float("nan"), logs) if len(calls) == 3 else (loss, logs)

    monkeypatch.setattr(PGUpdate, "loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at update 3: .* still .*checkpoint-2 "):
        train_lm(load_config(LMPGConfig, _pg(tmp_path, model)), reward_fn=sevens)
    assert [p.name for p in list_folder_checkpoints(tmp_path / "pg")] == ["checkpoint-2"]
    assert not (tmp_path / "pg" / "final").exists()


def test_sft_stops_at_a_non_finite_loss_and_saves_nothing(tmp_path, model, monkeypatch):
    import seedrl.agents.sft as sft

    real, calls = sft.sft_loss, []

    def poisoned(*args):
        loss, n = real(*args)
        calls.append(1)
        return (loss + float("inf"), n) if len(calls) == 3 else (loss, n)

    monkeypatch.setattr(sft, "sft_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"SFT loss is inf at update 3: .* still .*checkpoint-2 "):
        train_sft(load_config(SFTConfig, _sft(tmp_path, model)))
    assert [p.name for p in list_folder_checkpoints(tmp_path / "sft")] == ["checkpoint-2"]
    state = torch.load(tmp_path / "sft" / "checkpoint-2" / STATE_FILE, weights_only=False)
    assert state["step"] == 2 and not (tmp_path / "sft" / "final").exists()


# ----------------------------------------------------------------------------- actor failures
def test_a_failing_actor_keeps_the_learners_state(tmp_path, model):
    calls = []

    def flaky(prompts, completions, examples):
        calls.append(1)
        if len(calls) == 7:  # prompts 1-4 make update 1, 5-6 half of update 2
            raise ConnectionError("reward server went away")
        return sevens(prompts, completions, examples)

    raw = _pg(tmp_path, model, log={"checkpoint_every": 100}, runtime={"queue_groups": 1})
    with pytest.raises(ActorsFailed, match=r"an actor failed: ConnectionError\('reward server went away'\)\. The "
                                           r"learner's state is saved in .*checkpoint-1; fix the cause, then --resume"):
        train_lm(load_config(LMPGConfig, raw), reward_fn=flaky)
    assert [p.name for p in list_folder_checkpoints(tmp_path / "pg")] == ["checkpoint-1"]
    rows: list[dict] = []
    train_lm(load_config(LMPGConfig, raw), resume=True, reward_fn=sevens, on_step=rows.append)
    assert [r["updates"] for r in rows] == [2, 3, 4]
