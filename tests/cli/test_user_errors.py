"""Errors a user meets: one line `seedrl: error: ...` naming the input, exit code 2, nothing written."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from seedrl.cli import main
from seedrl.config import ConfigError, load_config
from seedrl.envs.text import TextTask
from seedrl.envs.text.tasks import TaskDataError
from seedrl.envs.text.templates import TemplateError
from seedrl.errors import UserError
from seedrl.rewards import RewardError
from seedrl.runtime.lm_config import LMPGConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("seedrl: error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _game(tmp_path, *overrides: str) -> list[str]:
    return ["run", str(CONFIGS / "cartpole_impala.yaml"), f"out_dir={tmp_path / 'runs'}", "name=r", *overrides]


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noptim:\n  lr: [0.1\n")
    assert main(["run", str(bad)]) == 2
    _error(capsys, str(bad), "line 4")
    with pytest.raises(ConfigError, match="cannot parse YAML file"):
        load_config(LMPGConfig, bad)
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    _error(capsys, "missing.yaml", "does not exist")


@pytest.mark.parametrize("env_id, needle", [("Foo-v1", "not a registered Gymnasium environment"),
                                            ("CartPol-v1", "CartPole"),
                                            ("Pendulum-v1", "continuous action space")])
def test_a_bad_environment_is_refused_before_a_run_folder_exists(tmp_path, capsys, env_id, needle):
    assert main(_game(tmp_path, f"env.id={env_id}")) == 2
    _error(capsys, "env.id", repr(env_id), needle)
    assert not (tmp_path / "runs").exists()


def _lm(tmp_path, *overrides: str) -> list[str]:
    return ["run", str(CONFIGS / "arith_pg.yaml"), f"out_dir={tmp_path / 'runs'}", "name=r", "policy=some-hub-id",
            *overrides]


def test_a_folder_that_is_not_a_model_is_refused_as_a_reward_model(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hello")
    assert main(_lm(tmp_path, f"task.reward_model={notes}")) == 2
    _error(capsys, "task.reward_model", str(notes), "not a model folder", "readme.txt")
    assert main(_lm(tmp_path, f"task.nli_model={tmp_path / 'nowhere' / 'nli'}")) == 2
    _error(capsys, "task.nli_model", "no model at path")
    assert main(_lm(tmp_path, f"reference={notes / 'readme.txt'}")) == 2
    _error(capsys, "reference", "is a file")
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{i} + {i} ="}) + "\n" for i in range(4)))
    return path


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "import numpy as np\n"
        "LIMIT = 3\n"
        "def good(prompts, completions, examples):\n    return np.zeros(len(completions))\n"
        "def one_too_many(prompts, completions, examples):\n    return np.zeros(len(completions) + 1)\n"
        "def broken(prompts, completions, examples):\n    raise KeyError('answer')\n")
    (tmp_path / "fails_on_import.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


@pytest.mark.parametrize("spec, needle", [
    ("no_such_module:score", "cannot import module 'no_such_module'"),
    ("fails_on_import:score", "RuntimeError: no GPU here"),
    ("my_rewards:missing", "has no attribute 'missing'"),
    ("my_rewards:LIMIT", "'LIMIT' is a int, not a function"),
    ("my_rewards", "expected 'module:function'"),
])
def test_a_bad_reward_callable_is_one_line_naming_it(tmp_path, capsys, prompts_file, reward_module, spec, needle):
    assert main(_lm(tmp_path, "task.world=null", f"task.data_path={prompts_file}", f"task.reward={spec}")) == 2
    _error(capsys, "task.reward", repr(spec), needle)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("fn, needle", [("one_too_many", "expected shape (2,)"), ("broken", "KeyError")])
def test_a_reward_of_the_wrong_shape_fails_before_the_run_folder(tmp_path, capsys, prompts_file, reward_module, fn,
                                                                   needle):
    assert main(_lm(tmp_path, "task.world=null", f"task.data_path={prompts_file}", f"task.reward=my_rewards:{fn}")) == 2
    _error(capsys, "task.reward: a trial call", needle)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("fn, needle", [("one_too_many", "expected shape (2,)"), ("broken", "KeyError")])
def test_a_reward_of_the_wrong_shape_fails_at_start_up(tmp_path, prompts_file, reward_module, fn, needle):
    from seedrl.runtime.lm_loop import _task_and_reward

    cfg = load_config(LMPGConfig, {"policy": "m", "task": {"world": None, "data_path": str(prompts_file),
                                                           "reward": f"my_rewards:{fn}"}})
    with pytest.raises(RewardError, match="task.reward: a trial call") as caught:
        _task_and_reward(cfg, None)
    assert needle in str(caught.value)
    cfg = load_config(LMPGConfig, {"policy": "m", "task": {"world": None, "data_path": str(prompts_file),
                                                           "reward": "my_rewards:good"}})
    task, reward = _task_and_reward(cfg, None)
    assert len(task) == 4 and reward is not None


def test_a_task_file_is_checked_whole_at_start_naming_the_line(tmp_path):
    rows = [{"question": f"q{i}"} for i in range(400)]
    rows[300] = {"text": "no question here"}  # file line 302: line 1 is blank
    path = tmp_path / "task.jsonl"
    path.write_text("\n" + "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TemplateError, match=r"task.jsonl: line 302: the template needs field 'question'"):
        TextTask(str(path), "Q: {question}")
    rows[300] = {"question": "  "}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TaskDataError, match=r"task.jsonl: line 301: empty prompt"):
        TextTask(str(path), "{question}")
    with pytest.raises(TaskDataError, match="example 1: empty prompt"):
        TextTask([{"prompt": "a"}, {"prompt": ""}], "{prompt}")
    assert len(TextTask(str(path), "Q: {question}")) == 400  # a template around it is not empty
    with pytest.raises(TaskDataError, match="does not exist"):
        TextTask(str(tmp_path / "nope.jsonl"))


def test_an_out_dir_that_cannot_be_written_is_refused_before_anything(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    assert main(["run", str(CONFIGS / "bandit_jbond.yaml"), f"out_dir={tmp_path / 'afile' / 'runs'}"]) == 2
    _error(capsys, "out_dir", "is a file")

    real_open = os.open

    def read_only(path, *args, **kwargs):
        if ".seedrl-write-test" in os.fspath(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["run", str(CONFIGS / "bandit_jbond.yaml"), f"out_dir={tmp_path / 'ro'}"]) == 2
    _error(capsys, "out_dir", "Read-only file system")
    assert not (tmp_path / "ro").exists()


def test_a_full_disk_mid_run_is_one_line_but_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    from seedrl.agents import bond_bandit

    def disk_full(cfg, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))

    args = ["run", str(CONFIGS / "bandit_jbond.yaml"), f"out_dir={tmp_path}"]
    monkeypatch.setattr(bond_bandit, "train_bond_bandit", disk_full)
    assert main(args) == 2
    _error(capsys, "No space left on device", "metrics.jsonl")

    def bug(cfg, **kw):
        return {}["missing"]

    monkeypatch.setattr(bond_bandit, "train_bond_bandit", bug)
    with pytest.raises(KeyError):  # a bug is not an input error: its traceback stays
        main(args)

    def library_value_error(cfg, **kw):
        raise ValueError("shapes do not match")  # raised outside the CLI's own argument checks

    monkeypatch.setattr(bond_bandit, "train_bond_bandit", library_value_error)
    with pytest.raises(ValueError, match="shapes"):
        main(args)


def test_seedrl_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDRL_DEBUG", "1")
    with pytest.raises(ConfigError, match="env.id"):
        main(_game(tmp_path, "env.id=Foo-v1"))


def test_command_line_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["bon", "--model", "m", "--n", "1,two"]) == 2
    _error(capsys, "--n='1,two'")
    assert main(["bon", "--model", "m", "--world", "arith", "--world-options", "{ops: add"]) == 2
    _error(capsys, "--world-options", "not valid JSON")
    assert main(["lm", "sft"]) == 2
    _error(capsys, "give a YAML config")
    assert main(["bon", "--model", str(tmp_path), "--world", "arith"]) == 2
    _error(capsys, "--model", "not a model folder")
    assert issubclass(ConfigError, UserError) and issubclass(RewardError, UserError)


def test_an_sft_file_with_a_row_lacking_its_target_fails_at_start_naming_the_line(tmp_path, capsys):
    from seedrl.envs.text import build_toy_assets

    build_toy_assets(tmp_path / "init", "arithmetic", corpus_size=50, n_embd=16, n_layer=1, n_head=2)
    capsys.readouterr()
    rows = [{"q": f"{i}+1=", "a": str(i + 1)} for i in range(6)]
    rows[4] = {"q": "4+1="}
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["run", str(CONFIGS / "arith_sft.yaml"), f"model={tmp_path / 'init'}", f"out_dir={tmp_path / 'runs'}",
            "data.world=null", f"data.path={path}", "data.template={q}", "data.completion_field=a",
            "data.eval_examples=0", "steps=1", "batch_size=2", "eval_prompts=0", "log.progress=false"]
    assert main(args) == 2
    _error(capsys, "pairs.jsonl: line 5", "no completion field 'a'")
    assert not (tmp_path / "runs").exists()  # checked before the run folder is made
    rows[4] = {"q": " ", "a": "5"}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(args) == 2
    _error(capsys, "pairs.jsonl: line 5", "empty prompt")


def test_bad_world_options_and_reward_weights_are_one_line(tmp_path, capsys, prompts_file):
    from seedrl.lm.toy_setup import make_world
    from seedrl.runtime.lm_loop import _task_and_reward

    with pytest.raises(UserError, match=r"world 'arith': bad world_options .*unknown ops"):
        make_world("arith", {"ops": ["divide"]})
    cfg = load_config(LMPGConfig, {"policy": "m", "task": {"reward_weights": {"bonus": 1.0}}})
    with pytest.raises(ConfigError, match="task.reward_weights: unknown sources"):
        _task_and_reward(cfg, None)
    cfg = load_config(LMPGConfig, {"policy": "m", "task": {"world": None, "data_path": str(prompts_file)}})
    with pytest.raises(ConfigError, match="task.reward_weights.task=1.0: no task reward is configured"):
        _task_and_reward(cfg, None)
