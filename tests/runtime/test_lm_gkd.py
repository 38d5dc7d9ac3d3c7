"""GKD on the runtime: actors sample the student through the generation server, which also
serves the teacher's distributions; the student's divergence to the teacher falls."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from seedrl.agents.gkd import LMGKDConfig  # noqa: E402
from seedrl.config import load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.runtime.lm_loop import train_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    student = build_toy_assets(root / "student", world="arithmetic", seed=0, n_embd=16, n_layer=1, n_head=2)
    teacher = build_toy_assets(root / "teacher", world="arithmetic", seed=0, n_embd=48, n_layer=2, n_head=2)
    return student.path, teacher.path


def _cfg(tmp_path, assets, gkd, **kw):
    base = {"name": "gkd", "out_dir": str(tmp_path), "policy": str(assets[0]), "teacher": str(assets[1]),
            "task": {"world": "arithmetic", "num_examples": 200}, "sampling": {"max_new_tokens": 6},
            "gkd": gkd, "steps": 25, "prompts_per_step": 4, "lr": 1e-2, "num_actors": 2, "progress": False,
            "log_every": 1}
    return load_config(LMGKDConfig, {**base, **kw})


def test_on_policy_gkd_moves_the_student_towards_the_teacher(tmp_path, assets):
    rows = []
    final = train_lm(_cfg(tmp_path, assets, {"divergence": "jsd", "beta": 0.5, "samples_per_prompt": 2}),
                     on_step=rows.append)
    div = [r["divergence"] for r in rows]
    assert all(r["on_policy"] == 1.0 for r in rows)  # λ = 1: every batch is the student's own samples
    assert np.mean(div[-5:]) < 0.5 * np.mean(div[:3]), div
    assert rows[-1]["frames"] == 25 * 4 * 2
    for name in ("curves.png", "final/config.json", "metrics.jsonl"):
        assert (tmp_path / "gkd" / name).exists(), name
    assert final["divergence"] == rows[-1]["divergence"]


@pytest.mark.parametrize("gkd", [
    {"lmbda": 0.0, "off_policy": "dataset", "divergence": "forward_kl", "top_k": 8},
    {"lmbda": 0.0, "off_policy": "teacher", "teacher_loss": "nll"},
    {"lmbda": 0.5, "off_policy": "teacher", "divergence": "reverse_kl", "alpha": 0.5, "samples_per_prompt": 2},
])
def test_off_policy_sources_and_the_rl_mix_run(tmp_path, assets, gkd):
    rows = []
    train_lm(_cfg(tmp_path, assets, gkd, steps=6), on_step=rows.append)
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["divergence"]) for r in rows)
    if gkd["lmbda"] == 0:
        assert all(r["on_policy"] == 0.0 for r in rows)
    if gkd.get("off_policy") == "teacher":
        assert all("teacher_reward" in r for r in rows)
    if gkd.get("alpha", 1) < 1:
        assert all("pg_loss" in r for r in rows)


def test_seedrl_run_trains_the_shipped_gkd_config(tmp_path, assets, capsys):
    """configs/arith_gkd.yaml through ``seedrl run``'s dispatch (tiny models in place of setup-toy's)."""
    from pathlib import Path

    from seedrl.cli.train import run_config

    config = Path(__file__).resolve().parents[2] / "configs" / "arith_gkd.yaml"
    overrides = [f"policy={assets[0]}", f"teacher={assets[1]}", f"out_dir={tmp_path}", "steps=2", "prompts_per_step=2",
                 "num_actors=1", "progress=false", "task.num_examples=20", "sampling.max_new_tokens=4"]
    assert run_config("gkd", str(config), overrides) == 0
    out = capsys.readouterr().out
    assert "divergence to the teacher" in out and (tmp_path / "arith_gkd" / "final" / "config.json").exists()
