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
            "gkd": gkd, "steps": 25, "prompts_per_step": 4, "optim": {"lr": 1e-2}, "runtime": {"num_actors": 2},
            "log": {"progress": False, "every": 1}}
    return load_config(LMGKDConfig, {**base, **kw})


def test_on_policy_gkd_moves_the_student_towards_the_teacher(tmp_path, assets):
    rows = []
    final = train_lm(_cfg(tmp_path, assets, {"divergence": "jsd", "beta": 0.5, "samples_per_prompt": 2}),
                     on_step=rows.append)
    div = [r["divergence"] for r in rows]
    assert all(r["on_policy"] == 1.0 for r in rows)  # λ = 1: every batch is the student's own samples
    assert all(r["tokens"] == pytest.approx(r["length"] * 4 * 2) for r in rows)  # the distilled completion tokens
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
                 "runtime.num_actors=1", "log.progress=false", "task.num_examples=20", "sampling.max_new_tokens=4"]
    assert run_config("gkd", str(config), overrides) == 0
    out = capsys.readouterr().out
    assert "divergence to the teacher" in out and (tmp_path / "arith_gkd" / "final" / "config.json").exists()


def test_cached_teacher_round_trips_and_feeds_the_dataset_batches(tmp_path, assets):
    """`seedrl lm cache-teacher` stores the teacher's top-k over the fixed outputs as RLDS; read back
    they equal the live teacher's, and a supervised-KD run (λ = 0) trains from them."""
    from pathlib import Path

    import torch

    from seedrl.agents.gkd import GKDUpdate
    from seedrl.agents.gkd_cache import TeacherCache
    from seedrl.cli import main
    from seedrl.data import open_dataset
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.runtime.lm_loop import _task_and_reward

    config = Path(__file__).resolve().parents[2] / "configs" / "arith_gkd.yaml"
    out = tmp_path / "cache"
    over = [f"policy={assets[0]}", f"teacher={assets[1]}", "task.num_examples=12", "gkd.top_k=5", "gkd.temperature=1.5",
            f"out_dir={tmp_path}", "log.progress=false", "runtime.num_actors=1", "prompts_per_step=2", "sampling.max_new_tokens=4"]
    assert main(["lm", "cache-teacher", str(config), *over, "--out", str(out)]) == 0
    assert len(open_dataset(out).episode_ids) == 12
    cache = TeacherCache(out, temperature=1.5)
    teacher, student = LMPolicy.from_pretrained(assets[1]), LMPolicy.from_pretrained(assets[0])
    cfg = load_config(LMGKDConfig, str(config), over)
    targets = GKDUpdate.dataset_targets(student.tokenizer, cfg.gkd)
    task, _ = _task_and_reward(cfg, student.tokenizer)
    prompts = [task.prompt(i) for i in range(4)]
    comps = [targets(p.example) for p in prompts]
    assert [cache.target(p.tokens) for p in prompts] == comps
    live = teacher.next_token_distributions([p.tokens for p in prompts], comps, temperature=1.5, top_k=5)
    got = cache.distributions([p.tokens for p in prompts])
    assert torch.equal(got.mask, live.mask)
    m = live.mask
    torch.testing.assert_close(got.topk.logprobs[m], live.topk.logprobs[m].detach())
    assert torch.equal(got.topk.indices[m], live.topk.indices[m])
    torch.testing.assert_close(got.topk.rest_logprob[m], live.topk.rest_logprob[m].detach())
    with pytest.raises(ValueError, match="gkd.temperature=1.0"):
        TeacherCache(out, temperature=1.0)
    # the learner's dataset batch: the same loss from the cache (no server at all) as from the live teacher
    from seedrl.models.lm.server import GenerationServer
    from seedrl.runtime.lm_updates import Group

    batch = [Group(p.tokens, [], np.zeros(0, np.float32), example=p.example) for p in prompts]
    cfg = load_config(LMGKDConfig, str(config), [*over, "gkd.lmbda=0", f"gkd.teacher_cache={out}", "steps=4", "name=cached"])
    cached = GKDUpdate(cfg, student)
    assert cached.server is None
    loss_cached, _ = cached.loss(batch)
    live_update = GKDUpdate(load_config(LMGKDConfig, str(config), [*over, "gkd.lmbda=0"]), student)
    with GenerationServer({"teacher": teacher}) as live_update.server:
        loss_live, _ = live_update.loss(batch)
    torch.testing.assert_close(loss_cached, loss_live)
    rows = []
    train_lm(cfg, on_step=rows.append)
    assert all(r["on_policy"] == 0.0 and np.isfinite(r["divergence"]) for r in rows)


@pytest.mark.parametrize("off_policy, served", [("dataset", set()), ("teacher", {"teacher"})])
def test_lambda_zero_never_samples_the_student(tmp_path, assets, monkeypatch, off_policy, served):
    """λ = 0: every batch is the dataset's or the teacher's, so the actors generate nothing from the
    student (no wasted sampling) and the rows carry no student reward."""
    from seedrl.models.lm.server import GenerationServer

    asked = []
    submit = GenerationServer.submit
    monkeypatch.setattr(GenerationServer, "submit", lambda self, model, *a, **k: (asked.append(model), submit(self, model, *a, **k))[1])
    rows = []
    train_lm(_cfg(tmp_path, assets, {"lmbda": 0.0, "off_policy": off_policy, "teacher_loss": "nll"}, steps=3),
             on_step=rows.append)
    assert set(asked) == served
    assert len(rows) == 3 and all(r["on_policy"] == 0.0 and np.isfinite(r["loss"]) for r in rows)
    assert all("reward" not in r for r in rows)  # no student samples: no student reward to report
    if off_policy == "teacher":
        assert all(np.isfinite(r["teacher_reward"]) for r in rows)


def test_gkd_does_not_load_the_reference_model(tmp_path, assets, monkeypatch):
    """GKD never uses the reference (its divergence is to the teacher): it is neither loaded nor served."""
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.server import GenerationServer

    loaded, served = [], []
    load = LMPolicy.from_pretrained.__func__
    monkeypatch.setattr(LMPolicy, "from_pretrained", classmethod(lambda cls, path, *a, **k: (loaded.append(str(path)),
                                                                                           load(cls, path, *a, **k))[1]))
    init = GenerationServer.__init__
    monkeypatch.setattr(GenerationServer, "__init__", lambda self, models, *a, **k: (served.append(set(models)),
                                                                                    init(self, models, *a, **k))[1])
    train_lm(_cfg(tmp_path, assets, {"lmbda": 1.0}, steps=1))
    assert loaded.count(str(assets[0])) == 2  # the learner's student and the served one; no reference copy
    assert served == [{"policy", "teacher"}]


def test_resume_continues_the_lambda_coin(tmp_path, assets):
    """A run stopped after update 4 and resumed makes the same on/off-policy choices as one never stopped."""
    gkd = {"lmbda": 0.5, "off_policy": "dataset"}
    whole = []
    train_lm(_cfg(tmp_path / "a", assets, gkd, steps=12, log={"progress": False, "every": 1, "checkpoint_every": 100}),
             on_step=whole.append)

    def stop_at_4(row):
        parts.append(row)
        if row["updates"] == 4:
            raise KeyboardInterrupt

    parts = []
    cfg = _cfg(tmp_path / "b", assets, gkd, steps=12, log={"progress": False, "every": 1, "checkpoint_every": 100})
    assert train_lm(cfg, on_step=stop_at_4)["interrupted"]
    train_lm(cfg, resume=True, on_step=parts.append)
    assert [r["updates"] for r in parts] == list(range(1, 13))
    coins = [r["on_policy"] for r in whole]
    assert 0 < sum(coins) < 12  # both kinds of batch occur
    assert [r["on_policy"] for r in parts] == coins


def _batches_seen(monkeypatch):
    """Patch the GKD learner step to record each batch's prompts (token tuples), in training order."""
    from seedrl.agents.gkd import GKDUpdate

    seen: list[list[tuple]] = []
    loss = GKDUpdate.loss
    monkeypatch.setattr(GKDUpdate, "loss", lambda self, batch: (seen.append([tuple(g.prompt_tokens) for g in batch]),
                                                                loss(self, batch))[1])
    return seen


def test_the_run_seed_drives_the_batch_order_and_resume_continues_it(tmp_path, assets, monkeypatch):
    """At λ = 0 nothing is sampled, so the batches' order is all that can differ between seeds: it must
    follow the run's ``seed`` (reproducibly), while the examples stay ``task.seed``'s; a resumed run
    continues the same stream after the prompts already drawn."""
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.runtime.lm_loop import _task_and_reward

    seen = _batches_seen(monkeypatch)
    gkd = {"lmbda": 0.0, "off_policy": "dataset"}
    one = {"runtime": {"num_actors": 1}, "log": {"progress": False, "every": 1, "checkpoint_every": 100}}

    def run(name, seed, steps=4, **kw):
        seen.clear()
        cfg = _cfg(tmp_path, assets, gkd, name=name, seed=seed, steps=steps, **one)
        train_lm(cfg, **kw)
        return [p for b in seen for p in b], cfg

    a0, cfg0 = run("s0", 0)
    a1, cfg1 = run("s1", 1)
    again, _ = run("s0_again", 0)
    assert again == a0  # reproducible
    assert a1 != a0 and sorted(a1) != sorted(a0)  # the run's seed changes which prompts come first ...
    tok = LMPolicy.from_pretrained(assets[0]).tokenizer
    t0, t1 = (_task_and_reward(c, tok)[0] for c in (cfg0, cfg1))
    assert [t0.example(i) for i in range(len(t0))] == [t1.example(i) for i in range(len(t1))]  # ... not the examples
    assert t0.seed == cfg0.task.seed  # seed 0 keeps the order of runs made before the run's seed counted
    # resume (seed 1): stopped after update 2, the continuation is the same stream, after what was drawn
    whole, cfg = run("s1_whole", 1, steps=8)
    stream = [tuple(p.tokens) for p in _task_and_reward(cfg, tok)[0].next_batch(200)]
    assert whole == stream[:32]

    def stop_after_2(row):
        if row["updates"] == 2:
            raise KeyboardInterrupt

    seen.clear()
    cfg = _cfg(tmp_path, assets, gkd, name="s1_resumed", seed=1, steps=8, **one)
    assert train_lm(cfg, on_step=stop_after_2)["interrupted"]
    before = [p for b in seen for p in b]
    seen.clear()
    train_lm(cfg, resume=True)
    after = [p for b in seen for p in b]
    assert before == stream[:8] and len(after) == 6 * 4
    starts = [j for j in range(8, len(stream) - len(after)) if stream[j:j + len(after)] == after]
    assert starts, "the resumed run left the seed's prompt stream"
    # only groups in flight at the stop are skipped: the queue's and the batch the loop had taken ahead
    assert starts[0] <= 8 + cfg.runtime.queue_groups + cfg.prompts_per_step + 1
