"""The run folder: lock, start/resume rules, metrics cut back on resume, resume compatibility."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from seedrl.runtime.checkpoint import list_folder_checkpoints, save_folder_checkpoint
from seedrl.runtime.errors import (
    NonFiniteLoss,
    NothingToResume,
    ResumeMismatch,
    RunExists,
    RunFinished,
    RunInUse,
    check_finite,
)
from seedrl.runtime.run_dir import RunDir, load_model_state, load_optimizer_state, trim_metrics


@dataclass
class Cfg:
    steps: int = 3


def _run(path, resume=False, **kw) -> RunDir:
    return RunDir(path, resume=resume, checkpoints=list_folder_checkpoints, **kw)


def _checkpoint(path, step):
    return save_folder_checkpoint(path, step, lambda f: (f / "state").write_text(str(step)), keep=5)


def _metrics(path, updates):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps({"updates": u}) + "\n" for u in updates))


def _updates(path):
    return [json.loads(line)["updates"] for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_a_second_run_of_a_folder_is_refused_while_the_first_holds_it(tmp_path):
    with _run(tmp_path / "r"):
        with pytest.raises(RunInUse, match=r"in use by another run \(pid \d+\)"):
            with _run(tmp_path / "r"):
                pass
    with _run(tmp_path / "r"):  # released on exit; a folder holding only the lock file is empty
        pass


def test_the_lock_of_a_killed_run_does_not_block(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(run / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'4242')\nprint('locked', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match="pid 4242"):
            with _run(run):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock file stays
        holder.wait()
    assert (run / ".lock").exists()
    with _run(run):
        pass


def test_rules_without_resume(tmp_path):
    with _run(tmp_path / "fresh") as run:  # a new folder, or an empty one
        run.begin(Cfg())
    assert (tmp_path / "fresh" / "config.yaml").exists()
    _metrics(tmp_path / "killed", [1, 2])
    with pytest.raises(RunExists, match=r"a run with no checkpoint \(metrics.jsonl\); pass --resume to start it over"):
        with _run(tmp_path / "killed"):
            pass
    _checkpoint(tmp_path / "ckpt", 4)
    with pytest.raises(RunExists, match="checkpoints \\(newest: checkpoint-4\\).*--resume"):
        with _run(tmp_path / "ckpt"):
            pass
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "final").mkdir()
    with pytest.raises(RunExists, match="a finished run"):
        with _run(tmp_path / "sft"):
            pass
    assert _updates(tmp_path / "killed") == [1, 2]  # refusals change nothing


def test_resume_with_nothing_to_resume_creates_nothing(tmp_path):
    with pytest.raises(NothingToResume, match="--resume: .* holds no run"):
        with _run(tmp_path / "none", resume=True):
            pass
    assert not (tmp_path / "none").exists()


def test_resume_without_a_checkpoint_starts_over_with_clean_metrics(tmp_path, caplog):
    _metrics(tmp_path / "r", [1, 2, 3])
    with _run(tmp_path / "r", resume=True) as run:
        assert run.resume_state(lambda p: 1) == (None, None)
        run.begin(Cfg())
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == ""
    assert "starting it over from step 0" in caplog.text


def test_resume_cuts_metrics_back_to_the_checkpoint(tmp_path):
    path = tmp_path / "r"
    _metrics(path, [0, 2, 4, 5, 6])
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write('{"updates": 7, "lo')  # torn by a kill mid-write
    _checkpoint(path, 2)
    _checkpoint(path, 4)
    with _run(path, resume=True) as run:
        ckpt, state = run.resume_state(lambda p: (p / "state").read_text())
        assert ckpt.name == "checkpoint-4" and state == "4"
        run.begin(Cfg(), 4)
    assert _updates(path) == [0, 2, 4]


def test_finished_runs(tmp_path):
    path = tmp_path / "r"
    _checkpoint(path, 3)
    with _run(path, resume=True) as run:
        run.resume_state(lambda p: None)
        with pytest.raises(RunFinished, match="checkpoint-3 is at 3 of steps=3.*raise steps="):
            run.check_length(3, 3, "steps")
        with pytest.raises(ResumeMismatch, match="steps=2 is below the 3 of its checkpoint checkpoint-3"):
            run.check_length(3, 2, "steps")
        with pytest.raises(RunFinished):
            run.check_length(3200, 3000, "total_frames", exact=False)
        run.check_length(3, 5, "steps")
    (path / "final").mkdir()
    with _run(path, resume=True):  # language RL: final/ is no end, steps decide
        pass
    with pytest.raises(RunFinished, match="final/ exists"):
        with _run(path, resume=True, final_ends_run=True):  # SFT: final/ ends the run
            pass


def test_non_finite_loss_names_the_newest_checkpoint(tmp_path):
    check_finite(torch.tensor(1.5, requires_grad=True), "loss", 1)
    _checkpoint(tmp_path / "r", 2)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at update 3: .*nothing saved; the newest checkpoint is "
                                            r"still .*checkpoint-2"):
        with _run(tmp_path / "r", resume=True):
            check_finite(torch.tensor(float("nan")), "loss", 3)
    with pytest.raises(NonFiniteLoss, match="gradient norm is inf .* no checkpoint"):
        with _run(tmp_path / "s"):
            check_finite(float("inf"), "gradient norm", 1)


def test_trim_metrics_keeps_rows_up_to_the_step(tmp_path):
    _metrics(tmp_path, [1, 2, 3])
    assert trim_metrics(tmp_path / "metrics.jsonl", 3) == 0
    assert trim_metrics(tmp_path / "metrics.jsonl", 1) == 2 and _updates(tmp_path) == [1]
    assert trim_metrics(tmp_path / "missing.jsonl", 1) == 0


def test_model_and_optimizer_mismatches_are_one_line(tmp_path):
    small, big = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
    with pytest.raises(ResumeMismatch, match=r"model differs: weight is \(2, 4\) in the checkpoint, \(3, 4\) in this "
                                             r"config \(and 1 more\)$"):
        load_model_state(big, small.state_dict(), tmp_path)
    with pytest.raises(ResumeMismatch, match="extra.weight is only in the checkpoint"):
        load_model_state(small, {**small.state_dict(), "extra.weight": torch.zeros(1)}, tmp_path)
    load_model_state(small, torch.nn.Linear(4, 2).state_dict(), tmp_path)

    adam = torch.optim.Adam(small.parameters())
    rms = torch.optim.RMSprop(small.parameters())
    with pytest.raises(ResumeMismatch, match="its optimizer is Adam, this config's is RMSprop"):
        load_optimizer_state(rms, adam.state_dict(), tmp_path, "Adam")
    with pytest.raises(ResumeMismatch, match=r"optimizer differs \(settings \[.*'alpha'.*'betas'.*\]"):
        load_optimizer_state(rms, adam.state_dict(), tmp_path, None)  # older checkpoints: no name saved
    with pytest.raises(ResumeMismatch, match="optimizer state does not fit"):
        load_optimizer_state(torch.optim.Adam(big.parameters()), torch.optim.Adam([small.weight]).state_dict(),
                             tmp_path, "Adam")
    load_optimizer_state(torch.optim.Adam(small.parameters()), adam.state_dict(), tmp_path, "Adam")


def test_the_cli_prints_run_errors_as_one_line(tmp_path, capsys):
    from pathlib import Path

    from seedrl.cli import main
    from seedrl.cli.train import _report_lm_pg

    bandit = str(Path(__file__).resolve().parents[2] / "configs" / "bandit_jbond.yaml")
    args = ["run", bandit, f"out_dir={tmp_path}", "steps=5"]
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seedrl: error: --resume: ") and err.count("\n") == 1 and "holds no run" in err
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2  # the same name again: refused, not appended to
    assert "already holds a run with no checkpoint (config.yaml" in capsys.readouterr().err
    report = _report_lm_pg({"interrupted": True, "stop_signal": "SIGTERM", "updates": 0, "checkpoint": "c", "run_dir": "r"})
    assert report.startswith("interrupted (SIGTERM): 0 updates\ncheckpoint: c")


def test_resume_keeps_the_optimizer_state_but_this_configs_settings(tmp_path, caplog):
    """A run resumed with a changed optim.lr trains at the new rate; the moments come from the checkpoint."""
    from seedrl.runtime.run_dir import load_optimizer_state

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    before = torch.optim.Adam([w], lr=1e-3, eps=1e-8)
    (w ** 2).sum().backward()
    before.step()
    saved = before.state_dict()
    w2 = torch.nn.Parameter(w.detach().clone())
    after = torch.optim.Adam([w2], lr=5e-4, eps=1e-8)
    with caplog.at_level("WARNING"):
        load_optimizer_state(after, saved, tmp_path / "ckpt", "Adam")
    assert after.param_groups[0]["lr"] == 5e-4
    assert torch.equal(after.state[w2]["exp_avg"], before.state[w]["exp_avg"])
    assert "lr: 0.001 -> 0.0005" in caplog.text


def test_resume_under_a_scheduler_keeps_its_factor_at_this_configs_base_rate(tmp_path):
    """With a LambdaLR the group's lr is initial_lr x factor(step): the factor comes from the
    checkpoint, the base rate from this config."""
    from seedrl.runtime.run_dir import load_optimizer_state

    def run(lr):
        w = torch.nn.Parameter(torch.tensor([1.0]))
        opt = torch.optim.SGD([w], lr=lr)
        return w, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))

    w, opt, sched = run(0.1)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 3 / 4)
    _, same, same_sched = run(0.1)
    load_optimizer_state(same, opt.state_dict(), tmp_path / "ckpt", "SGD")
    same_sched.load_state_dict(sched.state_dict())
    assert same.param_groups[0]["lr"] == pytest.approx(0.1 * 3 / 4)
    _, other, _ = run(0.2)
    load_optimizer_state(other, opt.state_dict(), tmp_path / "ckpt", "SGD")
    assert other.param_groups[0]["lr"] == pytest.approx(0.2 * 3 / 4)
    assert other.param_groups[0]["initial_lr"] == 0.2
