"""A game run's lifecycle: one run per folder, resume checked before anything is written,
damaged checkpoints skipped, a non-finite loss stops it, an actor crash loop keeps the learner."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest
import torch

from seedrl.config import load_config
from seedrl.runtime.checkpoint import list_checkpoints, load_checkpoint
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.errors import ActorsFailed, NonFiniteLoss, ResumeMismatch, RunExists, RunFinished, RunInUse
from seedrl.runtime.loop import train
from seedrl.runtime.run_dir import RunDir

CARTPOLE = {
    "name": "g", "total_frames": 10_000_000,
    "env": {"kind": "gym", "id": "CartPole-v1", "num_envs": 4},
    "model": {"torso": "mlp", "hidden": [32]},
    "runtime": {"num_actors": 1, "unroll_length": 10, "batch_size": 4, "torch_threads": 1, "backend": "threads"},
    "log": {"progress": False, "tensorboard": False, "every_s": 0.0, "checkpoint_every": 2},
}


def _cfg(tmp_path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, {**CARTPOLE, "out_dir": str(tmp_path)}, list(overrides))


def _snapshot(run_dir) -> dict[str, bytes]:
    """Every file of a run folder and its bytes (the lock file aside)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_second_run_of_the_same_name_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    with RunDir(cfg.run_dir, resume=False, checkpoints=list_checkpoints):  # a run in progress holds the folder
        with pytest.raises(RunInUse, match="in use by another run"):
            train(cfg, max_updates=2)
    assert not (cfg.run_dir / "metrics.jsonl").exists()


def test_resume_with_another_model_or_optimizer_is_refused_before_anything_is_written(tmp_path):
    cfg = _cfg(tmp_path)
    train(cfg, max_updates=3)
    before = _snapshot(cfg.run_dir)
    with pytest.raises(ResumeMismatch, match=r"the model differs: .*\(32, 4\) in the checkpoint, \(64, 4\) in this config"):
        train(_cfg(tmp_path, "model.hidden=[64]"), resume=True, max_updates=5)
    with pytest.raises(ResumeMismatch, match="its optimizer is Adam, this config's is RMSprop"):
        train(_cfg(tmp_path, "optim.name=rmsprop"), resume=True, max_updates=5)
    assert _snapshot(cfg.run_dir) == before  # config.yaml, metrics and checkpoints untouched


def test_resume_at_a_finished_run_changes_nothing(tmp_path):
    cfg = _cfg(tmp_path, "total_frames=80")  # 2 updates of 40 frames
    first = train(cfg)
    assert first.frames == 80 and not first.interrupted
    before = _snapshot(cfg.run_dir)
    with pytest.raises(RunFinished, match="80 of total_frames=80.*nothing was changed"):
        train(cfg, resume=True)
    assert _snapshot(cfg.run_dir) == before


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    train(cfg, max_updates=4)  # checkpoints at 2 and 4
    newest = list_checkpoints(cfg.run_dir)[-1]
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0x01  # one flipped bit in the weights
    newest.write_bytes(bytes(data))
    seen = []
    with caplog.at_level(logging.WARNING):
        result = train(cfg, resume=True, max_updates=5, on_update=lambda row, _: seen.append(row["updates"]))
    assert seen[0] == 3 and result.updates == 5  # resumed from update 2
    assert "ckpt-000000004.pt is damaged" in caplog.text and "set aside" in caplog.text
    assert (cfg.run_dir / "checkpoints" / "ckpt-000000004.pt.damaged").exists()
    assert load_checkpoint(cfg.run_dir)["counters"]["updates"] == 5


def test_a_run_killed_before_its_first_checkpoint(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.run_dir.mkdir()
    (cfg.run_dir / "metrics.jsonl").write_text('{"updates": 1, "frames": 40}\n')  # what such a run leaves
    with pytest.raises(RunExists, match="a run with no checkpoint"):
        train(cfg, max_updates=2)
    train(cfg, resume=True, max_updates=2)  # --resume starts it over
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in rows][:2] == [1, 2] and all("time" in r for r in rows)


def test_a_non_finite_loss_stops_the_run_and_saves_nothing(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    import seedrl.agents.impala as impala  # the dispatch table (runtime/algorithms.py) looks it up per run

    real = impala.impala_loss
    calls = []

    def poisoned(model, batch, agent_cfg):
        loss, logs = real(model, batch, agent_cfg)
        calls.append(1)
        return (loss * float("nan"), logs) if len(calls) == 3 else (loss, logs)

    monkeypatch.setattr(impala, "impala_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at update 3: .*the newest checkpoint is still .*ckpt-000000002"):
        train(cfg, max_updates=10)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["ckpt-000000002.pt"]
    state = load_checkpoint(cfg.run_dir)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_an_actor_crash_loop_saves_the_learner_then_fails_with_one_message(tmp_path):
    cfg = _cfg(tmp_path, "runtime.backend=processes", "runtime.num_actors=2", "runtime.max_restarts=1",
               "log.checkpoint_every=1000")
    killed: set[int] = set()

    def kill_actors(row, backend):
        if row["updates"] >= 3:
            for pid in backend.pids():
                if pid not in killed:
                    killed.add(pid)
                    os.kill(pid, signal.SIGKILL)

    with pytest.raises(ActorsFailed, match=r"actors crashed 2 times \(limit max_restarts=1\).*learner's state is saved "
                                           r"in .*ckpt-\d+\.pt; fix the cause, then --resume") as info:
        train(cfg, on_update=kill_actors)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    saved = load_checkpoint(cfg.run_dir)
    assert saved["counters"]["updates"] >= 3 and len(list_checkpoints(cfg.run_dir)) == 1
