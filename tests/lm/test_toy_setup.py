"""Toy setup and the LM commands (setup-toy, sft, bon) at very small sizes."""

import argparse
import contextlib
import io
import json
from types import SimpleNamespace

import pytest

from seedrl.cli import lm as lm_cli
from seedrl.lm import make_world, read_toy_info, setup_toy, world_name

TINY = {"reference": {"n_embd": 32, "n_layer": 1, "n_head": 2}, "teacher": {"n_embd": 48, "n_layer": 2, "n_head": 2, "dropout": 0.0}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="seedrl")
    lm_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def arith_toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "arith"
    argv = ["lm", "setup-toy", "--world", "arith", "--out", str(out), "--steps", "20", "--teacher-steps", "10",
            "--num-examples", "300", "--size", json.dumps(TINY), "--quiet"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert run_cli(argv) == 0
    return SimpleNamespace(out=out, printed=buf.getvalue())


def test_worlds():
    assert world_name("arith") == "arithmetic" and world_name("facts") == "facts"
    assert make_world("arith", {"ops": ["copy"], "max_len": 3}).ops == ("copy",)
    with pytest.raises(ValueError, match="world='chess'"):
        world_name("chess")
    with pytest.raises(ValueError, match="world_options"):
        make_world("facts", {"colours": 3})


def test_setup_toy_cli(arith_toy):
    from seedrl.models.lm.policy import LMPolicy

    out, printed = arith_toy.out, arith_toy.printed
    summary = json.loads((out / "toy.json").read_text())
    assert summary["world"] == "arithmetic" and summary["reference"] == str(out / "reference")
    assert str(out / "reference") in printed and str(out / "teacher") in printed and "seedrl bon" in printed
    ref = LMPolicy.from_pretrained(out / "reference")
    teacher = LMPolicy.from_pretrained(out / "teacher")
    assert ref.tokenizer.get_vocab() == teacher.tokenizer.get_vocab()  # one vocabulary for distillation
    n_ref = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in teacher.parameters()) > 1.5 * n_ref
    assert read_toy_info(out / "reference")["world_options"] == summary["world_options"]
    assert read_toy_info(out / "teacher")["role"] == "teacher"
    for role, p in (("reference", 0.1), ("teacher", 0.0)):  # arithmetic keeps GPT-2's dropout unless --size sets it
        config = json.loads((out / role / "config.json").read_text())
        assert config["resid_pdrop"] == config["embd_pdrop"] == config["attn_pdrop"] == p
        assert read_toy_info(out / role)["size"]["dropout"] == p
    for role, steps in (("reference", 20), ("teacher", 10)):
        rows = [json.loads(x) for x in (out / "sft" / role / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if "eval_loss" in r]
        assert [r["step"] for r in evals] == [0, steps] and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
        assert summary["evals"][role]["step"] == steps
    with pytest.raises(FileExistsError):
        setup_toy("arith", out)


def test_bon_cli(arith_toy, tmp_path, capsys):
    js = tmp_path / "bon.json"
    argv = ["bon", "--model", str(arith_toy.out / "reference"), "--n", "1,2,4", "--prompts", "6", "--quantile-samples", "4",
            "--max-new-tokens", "6", "--json", str(js), "--reward", "partial"]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "KL estimate" in printed and "arithmetic (partial reward)" in printed
    rows = json.loads(js.read_text())["rows"]
    assert [r["n"] for r in rows] == [1, 2, 4] and rows[0]["kl_estimate"] == 0.0
    assert (tmp_path / "bon_frontier.png").stat().st_size > 0
    with pytest.raises(ValueError, match="--world is required"):
        run_cli(["bon", "--model", str(arith_toy.out / "init" / "reference")])


def test_sft_cli(arith_toy, tmp_path, capsys):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"name: tiny\nout_dir: {tmp_path}\nmodel: {arith_toy.out / 'init' / 'reference'}\n"
                   "data:\n  world: arith\n  num_examples: 50\n  eval_examples: 10\n"
                   "batch_size: 8\nsteps: 2\neval_prompts: 4\nmax_completion_tokens: 16\nlog:\n  progress: false\n")
    assert run_cli(["lm", "sft", str(cfg), "steps=3", "eval_every=0"]) == 0
    printed = capsys.readouterr().out
    assert "done: 3/3 steps" in printed and str(tmp_path / "tiny" / "final") in printed
    assert run_cli(["lm", "sft", "--help-config"]) == 0
    assert "data.world" in capsys.readouterr().out


def test_setup_facts_without_teacher(tmp_path):
    res = setup_toy("facts", tmp_path / "facts", teacher=False, sizes=TINY, num_examples=100, eval_examples=10,
                    eval_prompts=4, corpus_size=300, training={"reference": {"steps": 3, "batch_size": 4}},
                    progress=False, nli={"hidden": 16, "layers": 1, "heads": 2, "steps": 3, "train_documents": 50,
                                         "eval_documents": 20})
    assert res.teacher is None and (tmp_path / "facts" / "reference" / "model.safetensors").exists()
    assert res.world_options["hallucination_rate"] == 0.25  # the SFT reference learns from hallucinating references
    assert res.nli == str(tmp_path / "facts" / "nli") and 0.0 <= res.nli_eval["accuracy"] <= 1.0
    assert json.loads((tmp_path / "facts" / "toy.json").read_text())["nli_eval"]["eval_pairs"] == 20
    assert "nli:" in res.describe()
    assert res.world == "facts" and 0.0 <= res.evals["reference"]["eval_reward"] <= 1.0
    assert not (tmp_path / "facts" / "teacher").exists()
    for model in ("init/reference", "reference"):  # facts models train without dropout (it blocks copying)
        config = json.loads((tmp_path / "facts" / model / "config.json").read_text())
        assert config["resid_pdrop"] == config["embd_pdrop"] == config["attn_pdrop"] == 0.0
