"""One config vocabulary for every run: shared sections, old spellings with a warning, both = error."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from seedrl.agents.bond_bandit import BanditBondConfig
from seedrl.agents.sft import SFTConfig
from seedrl.cli import main
from seedrl.cli.train import ALGOS
from seedrl.config import ConfigDeprecationWarning, ConfigError, format_config_help, load_config
from seedrl.config.sections import LogConfig, OptimConfig, RecordConfig
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.lm_config import LMBondConfig, LMPGConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
REQUIRED = {"pg": ["policy=m"], "bond": ["policy=m"], "sft": ["model=m"]}


def _run_configs():
    for path in sorted(CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "env_id" not in raw:  # demo.yaml is `seedrl demo`'s, not a run
            yield path, raw.get("algo", "impala")


@pytest.mark.parametrize("path,algo", list(_run_configs()), ids=lambda x: getattr(x, "name", x))
def test_every_shipped_config_loads_without_a_deprecation_warning(path, algo):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        cfg = load_config(ALGOS[algo].config_class(), path, REQUIRED.get(algo, []))
    assert isinstance(cfg.optim, OptimConfig) and isinstance(cfg.log, LogConfig)


def test_shared_sections_are_one_class_each():
    for cls in (TrainConfig, LMPGConfig, LMBondConfig, SFTConfig, BanditBondConfig):
        cfg = cls()
        assert type(cfg.optim) is OptimConfig and type(cfg.log) is LogConfig, cls
        assert {"algo", "name", "out_dir", "seed"} <= set(vars(cfg)) and cfg.run_dir == Path("runs") / cfg.name
    assert type(TrainConfig().record) is type(LMPGConfig().record) is RecordConfig


OLD_LM = {"lr": 3e-3, "grad_clip": 0.5, "num_actors": 2, "queue_groups": 7, "record_rate": 0.25, "log_every": 3,
          "checkpoint_every": 9, "keep_checkpoints": 4, "progress": False}
NEW_LM = {"optim": {"lr": 3e-3, "grad_clip": 0.5}, "runtime": {"num_actors": 2, "queue_groups": 7},
          "record": {"rate": 0.25}, "log": {"every": 3, "checkpoint_every": 9, "keep_checkpoints": 4, "progress": False}}
OLD_SFT = {"lr": 3e-3, "weight_decay": 0.1, "grad_clip": 0.0, "warmup_steps": 5, "min_lr_ratio": 0.2, "log_every": 3,
           "checkpoint_every": 9, "keep_checkpoints": 4, "progress": False, "tensorboard": True, "device": "meta",
           "torch_threads": 2}
NEW_SFT = {"optim": {"lr": 3e-3, "weight_decay": 0.1, "grad_clip": 0.0, "warmup_steps": 5, "min_lr_ratio": 0.2},
           "log": {"every": 3, "checkpoint_every": 9, "keep_checkpoints": 4, "progress": False, "tensorboard": True},
           "runtime": {"device": "meta", "torch_threads": 2}}
OLD_BANDIT = {"lr": 0.1, "lr_final_fraction": 0.5, "log_every": 7}
NEW_BANDIT = {"optim": {"lr": 0.1, "min_lr_ratio": 0.5}, "log": {"every": 7}}
SFT_BASE = {"model": "m", "data": {"world": "arith"}}
CASES = [(LMPGConfig, {"policy": "m"}, OLD_LM, NEW_LM), (LMBondConfig, {"policy": "m"}, OLD_LM, NEW_LM),
         (SFTConfig, SFT_BASE, OLD_SFT, NEW_SFT), (BanditBondConfig, {}, OLD_BANDIT, NEW_BANDIT)]


def _override_text(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@pytest.mark.parametrize("cls,base,old,new", CASES, ids=lambda x: getattr(x, "__name__", None))
def test_old_spellings_load_with_a_warning_and_the_same_values(tmp_path, cls, base, old, new):
    expected = load_config(cls, {**base, **new})
    assert expected != cls(**base)  # the case sets something
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({**base, **old}))
    with pytest.warns(ConfigDeprecationWarning) as caught:
        from_file = load_config(cls, path)
    assert from_file == expected
    renames = cls.renamed_keys
    messages = {str(w.message) for w in caught}
    assert all(any(f"'{k}'" in m and f"'{renames[k]}'" in m for m in messages) for k in old), messages
    # the same keys as key=value overrides
    with pytest.warns(ConfigDeprecationWarning, match="in an override"):
        from_overrides = load_config(cls, base, [f"{k}={_override_text(v)}" for k, v in old.items()])
    assert from_overrides == expected


@pytest.mark.parametrize("cls,base,old,new", CASES, ids=lambda x: getattr(x, "__name__", None))
def test_both_spellings_of_a_key_are_refused(cls, base, old, new):
    key = next(iter(old))
    section, _, name = cls.renamed_keys[key].partition(".")
    with pytest.raises(ConfigError, match=f"both '{key}' .* and '{section}.{name}'"):
        load_config(cls, {**base, key: old[key], section: {name: new[section][name]}})
    with pytest.raises(ConfigError, match="old and new spelling"), pytest.warns(ConfigDeprecationWarning):
        load_config(cls, base, [f"{key}={_override_text(old[key])}", f"{section}.{name}={_override_text(old[key])}"])


def test_an_override_in_the_new_spelling_wins_over_an_old_spelling_in_the_file(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("policy: m\nlr: 0.5\n")
    with pytest.warns(ConfigDeprecationWarning):
        assert load_config(LMPGConfig, path, ["optim.lr=0.25"]).optim.lr == 0.25


def test_a_section_keeps_its_kinds_defaults_for_the_keys_it_leaves_out():
    assert load_config(LMPGConfig, {"policy": "m", "optim": {"lr": 0.5}}).optim == OptimConfig(
        lr=0.5, grad_clip=1.0, lr_decay="none")
    assert load_config(SFTConfig, {**SFT_BASE, "optim": {"lr": 0.5}}).optim.name == "adamw"
    assert load_config(SFTConfig, SFT_BASE, ["log.every=3"]).log.checkpoint_every == 0
    assert load_config(TrainConfig, {"optim": {"lr": 0.5}}).optim.grad_clip == 40.0


@pytest.mark.parametrize("cls,base,override,key", [
    (LMPGConfig, {"policy": "m"}, "optim.lr_decay=linear", "optim.lr_decay"),
    (LMBondConfig, {"policy": "m"}, "log.solved_return=1", "log.solved_return"),
    (SFTConfig, SFT_BASE, "log.every_s=9", "log.every_s"),
    (TrainConfig, {}, "log.every=3", "log.every"),
    (TrainConfig, {}, "optim.warmup_steps=3", "optim.warmup_steps"),
    (BanditBondConfig, {}, "log.checkpoint_every=3", "log.checkpoint_every"),
])
def test_a_shared_key_the_run_would_ignore_is_refused(cls, base, override, key):
    with pytest.raises(ConfigError, match=f"'{key}' = .* is not used by"):
        load_config(cls, base, [override])


def test_help_config_lists_the_sections_with_the_kinds_defaults_and_the_old_spellings(capsys):
    text = format_config_help(LMPGConfig)
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "0.0001" in rows["optim.lr"] and "runtime.num_actors" in rows
    # the shared keys this kind refuses are not offered
    assert not set(LMPGConfig.unused_keys) & set(rows) and "optim.lr_decay" not in rows and "log.every_s" not in rows
    assert "log.every_s" in format_config_help(TrainConfig) and "log.every" not in {
        line.split()[0] for line in format_config_help(TrainConfig).splitlines() if line.strip()}
    assert "lr -> optim.lr" in text and "record_rate -> record.rate" in text
    assert main(["run", str(CONFIGS / "arith_pg.yaml"), "--help-config"]) == 0
    assert "log.checkpoint_every" in capsys.readouterr().out
