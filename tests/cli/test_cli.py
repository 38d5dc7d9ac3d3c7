"""The `seedrl` command line, run as a user would (in-process through main)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from seedrl.cli import main
from seedrl.data import DatasetWriter, open_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from strategies import simple_steps  # noqa: E402


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "ds"
    with DatasetWriter(path) as w:
        for i in range(4):
            w.write_episode(simple_steps(3 + i, seed=i, terminal=i % 2 == 0), metadata={"agent_id": f"a{i}"})
    return path


def test_data_info_head_stats(dataset, capsys):
    assert main(["data", "info", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "episodes  4   steps 18" in out and "observation/frame  uint8    (4, 4)" in out and "agent_id" in out
    assert main(["data", "head", str(dataset), "-n", "2", "-s", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("episode ") == 2 and "step 0:" in out
    assert main(["data", "stats", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "4 episodes, 18 steps" in out and "(2 terminal, 2 truncated)" in out
    rewards = np.concatenate([open_dataset(dataset)[i].columns["reward"] for i in range(4)]).astype(np.float64)
    assert f"{rewards.min():.4g}" in out and f"{rewards.max():.4g}" in out


def test_validate_finds_a_torn_tail_and_repair_fixes_it(dataset, capsys):
    assert main(["data", "validate", str(dataset)]) == 0
    assert "valid" in capsys.readouterr().out
    seg = next((dataset / "segments").glob("*.arrow"))
    with open(seg, "ab") as fh:
        fh.write(b"\xff\xff\xff\xff\x40\x00\x00\x00partial")  # a half-written message
    assert main(["data", "validate", str(dataset)]) == 1
    assert "torn" in capsys.readouterr().err
    assert main(["data", "validate", "--repair", str(dataset)]) == 0
    assert len(open_dataset(dataset)) == 4


def test_convert_to_tfds_and_back_is_exact(dataset, tmp_path, capsys):
    out = tmp_path / "tfds"
    assert main(["data", "convert", str(dataset), str(out), "--to", "tfds"]) == 0
    assert (out / "features.json").exists()
    back = tmp_path / "back"
    assert main(["data", "convert", str(out), str(back)]) == 0  # --from detected
    a, b = open_dataset(dataset), open_dataset(back)
    assert len(a) == len(b) and all(x.equals(y) for x, y in zip(a, b))


def test_bad_input_is_a_clear_error_with_exit_code_2(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "convert", str(tmp_path), str(tmp_path / "x"), "--from", "seedrl", "--to", "parquetz"]) == 2
    assert "--to 'parquetz'" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("runtime:\n  num_actors: 0\n")
    assert main(["run", str(cfg)]) == 2
    assert "runtime.num_actors" in capsys.readouterr().err
    assert main(["run", str(cfg), "runtime.num_actors=1", "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_demo_records_exports_and_reads_back(tmp_path, capsys):
    assert main(["demo", f"out_dir={tmp_path / 'demo'}", "episodes=5", "policy=random"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact round trip" in out and "5 episodes" in out
    assert len(open_dataset(tmp_path / "demo" / "episodes")) == 5
    # a bad env id is one line, and the previous demo's output is left as it was
    assert main(["demo", f"out_dir={tmp_path / 'demo'}", "env_id=CartPol-v1"]) == 2
    assert "env_id='CartPol-v1'" in capsys.readouterr().err
    assert len(open_dataset(tmp_path / "demo" / "episodes")) == 5


def test_run_then_eval_a_checkpoint(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(Path("configs/cartpole_impala.yaml").read_text())
    args = ["run", str(cfg), f"out_dir={tmp_path}", "name=r", "total_frames=3200", "log.progress=false", "log.tensorboard=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3,200 frames" in out
    gif = tmp_path / "ep.gif"
    assert main(["eval", str(tmp_path / "r"), "--episodes", "3", "--video", str(gif)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 episodes: mean return") and gif.stat().st_size > 0
    assert main(["run", "--help-config", str(cfg)]) == 0
    assert "runtime.batch_timeout_ms" in capsys.readouterr().out


def test_convert_to_hf_and_back_is_exact(dataset, tmp_path):
    out = tmp_path / "hf"
    assert main(["data", "convert", str(dataset), str(out), "--to", "hf"]) == 0
    back = tmp_path / "back"
    assert main(["data", "convert", str(out), str(back), "--from", "hf"]) == 0
    a, b = open_dataset(dataset), open_dataset(back)
    assert len(a) == len(b) and all(x.equals(y) for x, y in zip(a, b))


def test_convert_to_minari_refuses_what_minari_cannot_hold(dataset, tmp_path, capsys):
    pytest.importorskip("minari")
    pytest.importorskip("PIL")
    # simple_steps gives the last step a real action and reward: Minari has no place for them
    assert main(["data", "convert", str(dataset), str(tmp_path / "m" / "ds-v0"), "--to", "minari"]) == 2
    err = capsys.readouterr().err
    assert "action" in err or "reward" in err
    assert main(["data", "convert", str(dataset), str(tmp_path / "m" / "ds-v0"), "--to", "minari", "--allow-lossy"]) == 0


def test_run_dispatches_an_sft_config_and_resumes_it(tmp_path, capsys, one_torch_thread):
    """`seedrl run` on a config with algo: sft trains it like `seedrl lm sft`; --resume continues it."""
    import yaml

    from seedrl.agents.sft import SFTConfig, train_sft
    from seedrl.cli.train import ALGOS
    from seedrl.config import load_config
    from seedrl.envs.text import build_toy_assets

    assert {"impala", "pg", "sft"} <= set(ALGOS)
    init = tmp_path / "init"
    build_toy_assets(init, "arithmetic", corpus_size=50, n_embd=16, n_layer=1, n_head=2)
    raw = yaml.safe_load(Path("configs/arith_sft.yaml").read_text())
    assert raw["algo"] == "sft"
    raw.update(model=str(init), out_dir=str(tmp_path), name="s", steps=4, batch_size=4, eval_every=0, eval_prompts=2,
               max_completion_tokens=8)
    raw["log"].update(checkpoint_every=0, progress=False)
    raw["data"].update(num_examples=40, eval_examples=6)
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    old = tmp_path / "old.yaml"  # a config from before the algo key, as `seedrl lm sft` took it
    old.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "algo"}))
    assert load_config(SFTConfig, old).algo == "sft"

    # interrupted at step 2 (as Ctrl-C would: a checkpoint), then continued through `seedrl run --resume`
    first = train_sft(load_config(SFTConfig, cfg), max_steps=2)
    assert first.interrupted and first.checkpoint.name == "checkpoint-2"
    assert main(["run", str(cfg)]) == 2  # the run exists: refuses to start over it
    assert "--resume" in capsys.readouterr().err
    assert main(["run", str(cfg), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "done: 4/4 steps" in out and str(tmp_path / "s" / "final") in out
    rows = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in rows if "loss" in r] == [2, 4]  # log.every=10: rows at the stop and the end
    assert load_config(SFTConfig, tmp_path / "s" / "config.yaml").algo == "sft"

    # a fresh run of an old config (no algo key) via `seedrl run algo=sft`, and the keys of an SFT config
    assert main(["run", str(old), "algo=sft", "name=t"]) == 0
    assert "done: 4/4 steps" in capsys.readouterr().out
    assert main(["run", "--help-config", str(cfg)]) == 0
    assert "data.world" in capsys.readouterr().out
    assert main(["run", str(cfg), "algo=nope"]) == 2
    assert "'nope' is not one of" in capsys.readouterr().err
