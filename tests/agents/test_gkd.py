"""GKD pieces: the teacher's distributions from the generation server, the tokenizer check,
the loss with its RL mix, and the config's checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "lm"))
import tiny  # noqa: E402

from seedrl.agents.gkd import LMGKDConfig, check_same_vocabulary, gkd_loss  # noqa: E402
from seedrl.config import load_config  # noqa: E402
from seedrl.models.lm.policy import LMPolicy  # noqa: E402
from seedrl.models.lm.server import GenerationServer  # noqa: E402
from seedrl.ops.divergences import token_divergence  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [[5, 6, 7], [8, 9]]
COMPS = [[10, 11, tiny.EOS], [12]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gkd_models")
    student = tiny.build_model("gpt2", root / "student", seed=0)
    teacher = tiny.build_model("llama", root / "teacher", seed=1, hidden_size=48, num_hidden_layers=3)  # bigger, other kind
    other = root / "other"
    tiny.build_tokenizer(other, vocab_size=280)
    import transformers as tf

    tf.AutoModelForCausalLM.from_config(tiny.model_config("gpt2", 280)).save_pretrained(str(other))
    return {"student": student, "teacher": teacher, "other": other}


def test_server_gives_the_teachers_full_and_top_k_distributions(models):
    teacher = LMPolicy.from_pretrained(models["teacher"])
    student = LMPolicy.from_pretrained(models["student"])
    check_same_vocabulary(student, teacher, "s", "t")  # other size and architecture, same tokenizer: fine
    with GenerationServer({"teacher": teacher}) as server:
        full = server.distributions("teacher", PROMPTS, COMPS, temperature=2.0).result(30)
        top = server.distributions("teacher", PROMPTS, COMPS, temperature=2.0, top_k=5).result(30)
    assert full.mask.tolist() == [[True, True, True], [True, False, False]]  # EOS kept, padding off
    scores = teacher.score(PROMPTS, COMPS, temperature=2.0)
    labels = torch.tensor([[10, 11, tiny.EOS], [12, 0, 0]])
    got = full.logprobs.gather(-1, labels[..., None]).squeeze(-1) * full.mask
    torch.testing.assert_close(got, scores.token_logprobs.detach())
    torch.testing.assert_close(full.logprobs.exp().sum(-1), torch.ones(2, 3))
    t = top.topk
    assert t.indices.shape == (2, 3, 5)
    torch.testing.assert_close(t.logprobs, full.logprobs.topk(5, -1).values)
    torch.testing.assert_close(t.logprobs.exp().sum(-1) + t.rest_logprob.exp(), torch.ones(2, 3))
    # the student's divergence to either form: top-k never above the full one
    # the student's divergence to either form (under autograd: the server's tensors may be saved
    # for backward, so they are not inference-mode tensors); top-k never above the full one
    logits = student.completion_logits(PROMPTS, COMPS)
    d_full = token_divergence(logits, teacher.completion_logits(PROMPTS, COMPS).detach(), temperature=2.0,
                              mask=full.mask, reduction="none")  # full: raw logits, tempered by the divergence
    d_top = token_divergence(logits, top.teacher(), temperature=2.0, mask=full.mask, reduction="none")
    assert (d_top <= d_full + 1e-6).all() and (d_full[full.mask] > 0).all()
    (d_full.sum() + d_top.sum()).backward()


def test_tokenizer_mismatch_fails_naming_both(models):
    student = LMPolicy.from_pretrained(models["student"])
    other = LMPolicy.from_pretrained(models["other"])
    with pytest.raises(ValueError, match=r"teacher '/t/other' and student '/s/student' do not share a tokenizer.*300 vs 280"):
        check_same_vocabulary(student, other, "/s/student", "/t/other")


def test_train_lm_refuses_a_mismatched_teacher_before_training(models, tmp_path):
    from seedrl.runtime.lm_loop import train_lm

    cfg = load_config(LMGKDConfig, {"policy": str(models["student"]), "teacher": str(models["other"]),
                                    "out_dir": str(tmp_path), "task": {"world": "arithmetic", "num_examples": 4},
                                    "log": {"progress": False}})
    with pytest.raises(ValueError, match="do not share a tokenizer"):
        train_lm(cfg)
    assert not list((tmp_path / "lm_gkd").glob("checkpoint-*"))


def test_gkd_loss_rl_mix_is_the_weighted_sum():
    div = torch.tensor([0.5, 1.5, 1.0, 2.0], requires_grad=True)
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0], requires_grad=True)
    r = torch.tensor([1.0, 0.0, 0.0, 2.0])  # 2 prompts x 2 samples: LOO advantages +1, -1, -2, +2
    loss, logs = gkd_loss(div, lp, r, alpha=0.25, samples_per_prompt=2)
    loss.backward()
    pg = -(1 * -1.0 + -1 * -2.0 + -2 * -3.0 + 2 * -4.0) / 4
    assert loss.item() == pytest.approx(0.25 * 1.25 + 0.75 * pg)
    assert logs["divergence"] == pytest.approx(1.25) and logs["pg_loss"] == pytest.approx(pg)
    torch.testing.assert_close(div.grad, torch.full((4,), 0.25 / 4))
    # gradient ascent on the reward: samples above their baseline get their log-prob pushed up
    torch.testing.assert_close(lp.grad, -0.75 * torch.tensor([1.0, -1.0, -2.0, 2.0]) / 4)
    pure, _ = gkd_loss(div, alpha=1.0)
    assert pure.item() == pytest.approx(1.25)


def test_config_checks_name_the_field(models):
    base = {"policy": "p", "task": {"world": "arithmetic"}}
    with pytest.raises(Exception, match="teacher"):
        load_config(LMGKDConfig, base)
    with pytest.raises(Exception, match="gkd.samples_per_prompt=1"):
        load_config(LMGKDConfig, {**base, "teacher": "t", "gkd": {"alpha": 0.5}})
    with pytest.raises(Exception, match="gkd.beta"):
        load_config(LMGKDConfig, {**base, "teacher": "t", "gkd": {"beta": 1.0}})


def test_teacher_samples_with_nll_is_the_students_per_token_nll(models, tmp_path):
    """Sequence-level KD with ``teacher_loss: nll``: the loss is −(1/L)Σ log p_S(y_n) averaged over the
    teacher's samples (closed form from ``LMPolicy.score``); λ = 0 never uses the student's samples."""
    from types import SimpleNamespace

    import numpy as np

    from seedrl.agents.gkd import GKDUpdate
    from seedrl.runtime.lm_updates import Group

    cfg = load_config(LMGKDConfig, {"policy": str(models["student"]), "teacher": str(models["teacher"]),
                                    "task": {"world": "arithmetic"}, "gkd": {"lmbda": 0.0, "off_policy": "teacher",
                                                                           "teacher_loss": "nll", "temperature": 2.0}})
    student = LMPolicy.from_pretrained(models["student"])
    update = GKDUpdate(cfg, student)
    assert [r.model for r in update.requests()] == ["policy", "teacher"]
    mine = [SimpleNamespace(tokens=[40, 41])]  # the student's own sample: must not enter the loss
    batch = [Group(p, mine, np.zeros(1, np.float32), [SimpleNamespace(tokens=c)], np.ones(1, np.float32))
             for p, c in zip(PROMPTS, COMPS)]
    with GenerationServer(update.served_models()) as update.server:
        loss, logs = update.loss(batch)
    s = student.score(PROMPTS, COMPS, temperature=2.0)
    want = -(s.token_logprobs.sum(-1) / s.mask.sum(-1)).mean()
    torch.testing.assert_close(loss, want)
    assert logs["on_policy"] == 0.0 and logs["teacher_reward"] == 1.0


@pytest.mark.parametrize("top_k", [0, 5])
def test_the_temperature_tempers_the_teacher_once(models, top_k):
    """``gkd.temperature`` = τ: the loss is D(softmax(z_T/τ) ‖ softmax(z_S/τ)) on the teacher's and the
    student's raw logits, full vocabulary (the server's log-probs must not be tempered a second time
    by the divergence) and top-k (already tempered by the server, the tail in one bucket) alike."""
    from types import SimpleNamespace

    import numpy as np

    from seedrl.agents.gkd import GKDUpdate
    from seedrl.ops.divergences import TopKTeacher, token_divergence
    from seedrl.runtime.lm_updates import Group

    cfg = load_config(LMGKDConfig, {"policy": str(models["student"]), "teacher": str(models["teacher"]),
                                    "task": {"world": "arithmetic"},
                                    "gkd": {"lmbda": 1.0, "temperature": 2.0, "top_k": top_k, "divergence": "forward_kl",
                                            "reduction": "token"}})
    student = LMPolicy.from_pretrained(models["student"])
    update = GKDUpdate(cfg, student)
    batch = [Group(p, [SimpleNamespace(tokens=c)], np.zeros(1, np.float32)) for p, c in zip(PROMPTS, COMPS)]
    with GenerationServer(update.served_models()) as update.server:
        loss, _ = update.loss(batch)
    with torch.no_grad():
        zt = update.teacher.completion_logits(PROMPTS, COMPS)
        zs = student.completion_logits(PROMPTS, COMPS)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    teacher = zt
    if top_k:
        lp = torch.log_softmax(zt / 2.0, -1)
        vals, idx = lp.topk(top_k, -1)
        teacher = TopKTeacher(vals, idx, torch.logsumexp(lp.scatter(-1, idx, float("-inf")), -1))
    want = token_divergence(zs, teacher, kind="forward_kl", temperature=2.0, mask=mask, reduction="token")
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-6)
