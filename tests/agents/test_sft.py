"""SFT: the loss keeps EOS as a label (pad == eos), a tiny GPT-2 learns single-digit
addition (and to stop), and a resumed run continues exactly."""

import json
import math

import pytest
import torch

from seedrl.agents.sft import (
    SFTConfig,
    SFTDataConfig,
    completion_targets,
    linear_schedule,
    list_sft_checkpoints,
    sft_loss,
    train_sft,
)
from seedrl.config import ConfigError, load_config
from seedrl.envs.text import build_toy_assets

ADD = {"ops": ["add"], "max_digits": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nopad_model(tmp_path_factory):
    """Toy arithmetic tokenizer WITHOUT a pad token (so pad_token='eos': pad id == EOS id) + tiny GPT-2."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("arith_nopad")
    build_toy_assets(path, "arithmetic", seed=0, corpus_size=200, n_embd=64, n_layer=2, n_head=4, n_positions=64)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = None
    tok.save_pretrained(path)
    return str(path)


def _cfg(model, tmp_path, **kw):
    data = kw.pop("data", SFTDataConfig(world="arith", world_options=ADD, num_examples=2000, eval_examples=100,
                                        disjoint_eval=False))
    base = dict(model=model, out_dir=str(tmp_path), pad_token="eos", data=data, batch_size=32,
                optim={"lr": 5e-3, "warmup_steps": 10}, max_completion_tokens=8, eval_prompts=64,
                log={"progress": False, "every": 10}, runtime={"torch_threads": 1})
    for section in ("optim", "log", "runtime"):
        kw[section] = {**base[section], **kw.get(section, {})}
    return load_config(SFTConfig, {**base, **kw})


def test_eos_is_a_label_when_pad_is_eos(nopad_model):
    from seedrl.models.lm.policy import LMPolicy

    policy = LMPolicy.from_pretrained(nopad_model, pad_token="eos")
    eos = policy.tokenizer.eos_token_id
    assert policy.pad_token_id == eos
    target = completion_targets(policy.tokenizer, "12", eos)
    assert target[-1] == eos and len(target) == 3  # "1", "2", EOS
    prompts = policy.tokenize_prompts(["5+7=", "3+4="])
    comps = [target, completion_targets(policy.tokenizer, "7", eos)]
    loss, n = sft_loss(policy, prompts, comps)
    assert n == 5  # both EOS tokens count
    # brute force: full forward of each unpadded sequence, sum -log p over completion tokens incl. EOS
    total = 0.0
    with torch.no_grad():
        for p, c in zip(prompts, comps):
            logp = torch.log_softmax(policy.model(torch.tensor([p + c])).logits[0].float(), -1)
            total -= sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(c))
    assert float(loss.detach()) == pytest.approx(total / 5, rel=1e-5)


def test_schedule_and_config_errors(tmp_path):
    assert [round(linear_schedule(s, 2, 6, 0.0), 3) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert linear_schedule(10, 0, 6, 0.1) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="model"):
        load_config(SFTConfig, {"data": {"world": "arith"}})
    with pytest.raises(ConfigError, match="data.world"):
        load_config(SFTConfig, {"model": "x"})
    with pytest.raises(ConfigError, match="too_long"):
        load_config(SFTConfig, {"model": "x", "data": {"world": "arith"}, "too_long": "cut"})
    for name in ("arith_sft", "facts_sft"):
        cfg = load_config(SFTConfig, f"configs/{name}.yaml", ["model=/some/dir"])
        assert cfg.data.world in ("arithmetic", "facts") and cfg.model == "/some/dir"


def test_sft_learns_addition_and_to_stop(nopad_model, tmp_path):
    """300 steps (~5 s of CPU): exact-match of greedy answers on 64 prompts goes from 0 to
    0.84 (measured; asserted > 0.5), held-out loss 3.95 -> ~0.3, and every answer ends with EOS."""
    res = train_sft(_cfg(nopad_model, tmp_path, name="add", steps=300, eval_every=150))
    first, last = res.first_eval, res.last_eval
    assert first["step"] == 0 and last["step"] == 300 and res.step == 300 and not res.interrupted
    assert first["eval_reward"] <= 0.05
    assert last["eval_reward"] > 0.5, res.evals
    assert last["eval_eos_rate"] == 1.0  # pad == eos and yet the student learned to stop
    assert last["eval_loss"] < 0.5 * first["eval_loss"]
    early = sum(res.losses[s] for s in range(1, 21)) / 20
    late = sum(res.losses[s] for s in range(281, 301)) / 20
    assert late < 0.4 * early
    run = res.run_dir
    assert (run / "final" / "config.json").exists() and (run / "final" / "tokenizer.json").exists()
    assert (run / "curves.png").stat().st_size > 0 and (run / "config.yaml").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in rows if "loss" in r] == list(range(10, 301, 10))
    assert [r["step"] for r in rows if "eval_reward" in r] == [0, 150, 300]
    from seedrl.models.lm.policy import LMPolicy  # the final model loads like a hub checkpoint

    assert LMPolicy.from_pretrained(res.final_dir, pad_token="eos").vocab_size > 0
    with pytest.raises(FileExistsError):
        train_sft(_cfg(nopad_model, tmp_path, name="add", steps=300))


def test_resume_continues_exactly(nopad_model, tmp_path):
    """Stop after step 3 (checkpoint), resume: step 4's loss equals the uninterrupted run's
    (same batch order, optimizer moments, lr schedule and dropout noise)."""
    kw = dict(steps=6, eval_every=0, eval_at_start=False, eval_prompts=4, batch_size=8, log={"every": 1})
    full = train_sft(_cfg(nopad_model, tmp_path, name="full", **{**kw, "log": {"every": 1, "checkpoint_every": 2,
                                                                                "keep_checkpoints": 1}}))
    kept = list_sft_checkpoints(full.run_dir)
    assert [p.name for p in kept] == ["checkpoint-4"]  # periodic (2, 4), newest kept; 6 is final/
    assert {"config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"} <= {p.name for p in kept[0].iterdir()}
    part = train_sft(_cfg(nopad_model, tmp_path, name="part", **kw), max_steps=3)
    assert part.interrupted and part.step == 3 and part.final_dir is None
    assert [p.name for p in list_sft_checkpoints(part.run_dir)] == ["checkpoint-3"]
    assert sorted(part.losses) == [1, 2, 3]
    rest = train_sft(_cfg(nopad_model, tmp_path, name="part", **kw), resume=True)
    assert sorted(rest.losses) == [4, 5, 6] and rest.step == 6 and rest.final_dir is not None
    for s in (1, 2, 3):
        assert part.losses[s] == full.losses[s]
    assert rest.losses[4] == pytest.approx(full.losses[4], abs=1e-6)
    assert all(math.isclose(rest.losses[s], full.losses[s], abs_tol=1e-5) for s in (5, 6))
    rows = [json.loads(line) for line in (part.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(FileExistsError, match="finished"):
        train_sft(_cfg(nopad_model, tmp_path, name="part", **kw), resume=True)


def test_jsonl_data_and_errors(nopad_model, tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(3) for b in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = SFTDataConfig(path=str(path), template="{question}", completion_field="answer", eval_examples=2)
    res = train_sft(_cfg(nopad_model, tmp_path, name="jsonl", data=data, steps=2, batch_size=4, eval_every=0))
    assert res.step == 2 and "eval_loss" in res.last_eval and "eval_reward" not in res.last_eval
    bad = SFTDataConfig(path=str(path), template="{question}", eval_examples=2)  # default field: completion
    with pytest.raises(KeyError, match="'completion'"):
        train_sft(_cfg(nopad_model, tmp_path, name="bad", data=bad, steps=1))
