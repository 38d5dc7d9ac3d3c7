"""``seedrl run`` on the BOND configs: the bandit end to end, the language configs' keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from seedrl.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_run_bandit_config_prints_policy_beside_exact_target(tmp_path, capsys):
    assert main(["run", str(CONFIGS / "bandit_jbond.yaml"), f"out_dir={tmp_path}", "steps=600", "bond.beta=1.0"]) == 0
    out = capsys.readouterr().out
    policy = [float(x) for x in out.split("policy: ")[1].split("\n")[0].split()]
    target = [float(x) for x in out.split("target: ")[1].split("\n")[0].split()]
    assert target == pytest.approx([0.348, 0.374, 0.278], abs=6e-4)  # J-BOND's beta = 1 fixed point
    assert policy == pytest.approx(target, abs=0.02)
    assert (tmp_path / "bandit_jbond" / "metrics.jsonl").exists()


@pytest.mark.parametrize("name", ["arith_bond.yaml", "arith_jbond.yaml"])
def test_language_bond_configs_load(name, capsys):
    pytest.importorskip("transformers")
    assert main(["run", str(CONFIGS / name), "--help-config"]) == 0
    assert "bond.anchor_kl_coef" in capsys.readouterr().out
    from seedrl.config import load_config
    from seedrl.runtime.lm_loop import LMBondConfig

    cfg = load_config(LMBondConfig, CONFIGS / name)
    assert cfg.algo == "bond" and cfg.policy == "runs/toy/arith/reference"
