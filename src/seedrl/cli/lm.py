"""Language-model commands: ``seedrl lm setup-toy``, ``seedrl lm sft``, ``seedrl bon``.

``seedrl lm setup-toy --world arith|facts --out runs/toy/arith``
    tokenizer + tiny GPT-2s for a toy world, a reference (and a bigger teacher) trained
    by SFT from scratch (:func:`seedrl.lm.setup_toy`); prints where everything is.
``seedrl lm sft CONFIG [key=value ...] [--resume]``
    SFT from a YAML config (``configs/arith_sft.yaml``; :func:`seedrl.agents.sft.train_sft`);
    the same as ``seedrl run CONFIG`` on a config with ``algo: sft``.
``seedrl bon --model PATH [--world arith] --n 1,2,4,8,16 --prompts 64``
    Best-of-N evaluation of a model on a toy world: a table of reward, KL (bound and
    estimate) and win rate per N, and the reward-KL frontier plot
    (:func:`seedrl.agents.bon.evaluate_bon`).

Wire with ``lm.register(sub)`` in :func:`seedrl.cli.build_parser`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seedrl.errors import UserError, check_model_folder


def register(sub: argparse._SubParsersAction) -> None:
    lm = sub.add_parser("lm", help="language models: toy setup and supervised fine-tuning")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True, metavar="LM_COMMAND")

    st = lm_sub.add_parser("setup-toy", help="tokenizer, tiny models and SFT-trained reference/teacher for a toy world")
    st.add_argument("--world", required=True, choices=["arith", "arithmetic", "facts"])
    st.add_argument("--out", required=True, help="output directory, e.g. runs/toy/arith")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--no-teacher", action="store_true", help="skip the bigger teacher model")
    st.add_argument("--steps", type=int, default=None, help="SFT steps of the reference (default: per world)")
    st.add_argument("--teacher-steps", type=int, default=None, help="SFT steps of the teacher (default: per world)")
    st.add_argument("--num-examples", type=int, default=20000, help="training examples drawn from the world")
    st.add_argument("--size", default=None, help='JSON sizes per role (n_embd, n_layer, n_head, dropout), e.g. \'{"reference": {"n_embd": 32}}\'')
    st.add_argument("--nli-steps", type=int, default=None, help="facts: training steps of the NLI classifier (0: none)")
    st.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    st.add_argument("--quiet", action="store_true", help="no progress bars")
    st.set_defaults(func=cmd_setup_toy)

    sft = lm_sub.add_parser("sft", help="supervised fine-tuning from a YAML config (e.g. configs/arith_sft.yaml)")
    sft.add_argument("config", nargs="?", default=None, help="YAML file")
    sft.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. steps=300 data.world=facts")
    sft.add_argument("--resume", action="store_true", help="continue <out_dir>/<name> from its newest checkpoint")
    sft.add_argument("--help-config", action="store_true", help="list every config key with its type, default and help")
    sft.set_defaults(func=cmd_sft)

    bon = sub.add_parser("bon", help="Best-of-N evaluation of a model on a toy world: reward, KL, win rate per N")
    bon.add_argument("--model", required=True, help="model directory (e.g. runs/toy/arith/reference) or hub id")
    bon.add_argument("--world", default=None, help="arith|facts (default: the model's seedrl_toy.json)")
    bon.add_argument("--world-options", default=None, help="JSON world options (default: the model's, else the world's)")
    bon.add_argument("--reward", default=None, help="world metric (arith: exact|partial; facts: faithfulness|coverage|f1)")
    bon.add_argument("--n", default="1,2,4,8,16", help="comma-separated N values")
    bon.add_argument("--prompts", type=int, default=64, help="number of prompts")
    bon.add_argument("--quantile-samples", type=int, default=32, help="fresh reference samples per prompt for the KL estimate")
    bon.add_argument("--temperature", type=float, default=1.0)
    bon.add_argument("--max-new-tokens", type=int, default=64)
    bon.add_argument("--data-seed", type=int, default=12345, help="seed of the world's prompts")
    bon.add_argument("--max-batch", type=int, default=128, help="sampler rows decoded together")
    bon.add_argument("--pad-token", default=None, help="for tokenizers without pad: 'eos' or a token")
    bon.add_argument("--device", default="cpu")
    bon.add_argument("--plot", default=None, help="frontier PNG (default: bon_frontier.png next to --json or in cwd)")
    bon.add_argument("--json", default=None, help="also write the rows as JSON here")
    bon.set_defaults(func=cmd_bon)

    ct = lm_sub.add_parser("cache-teacher", help="store a GKD teacher's top-k distributions over a task's fixed outputs as RLDS")
    ct.add_argument("config", help="a GKD config (e.g. configs/arith_gkd.yaml): teacher, policy (tokenizer), task, gkd.top_k")
    ct.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. gkd.top_k=16")
    ct.add_argument("--out", required=True, help="dataset directory to write (then: gkd.teacher_cache=<out>)")
    ct.set_defaults(func=cmd_cache_teacher)


def _json_arg(text: str, flag: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{flag}={text!r}: not valid JSON ({err.msg} at character {err.pos})") from None


def cmd_setup_toy(args: argparse.Namespace) -> int:
    from seedrl.lm.toy_setup import TRAINING, setup_toy, world_name

    name = world_name(args.world)
    training = {role: dict(v) for role, v in TRAINING[name].items()}
    if args.steps is not None:
        training["reference"]["steps"] = args.steps
    if args.teacher_steps is not None:
        training["teacher"]["steps"] = args.teacher_steps
    sizes = _json_arg(args.size, "--size") if args.size else None
    if args.nli_steps is not None and args.nli_steps < 0:
        raise UserError(f"--nli-steps={args.nli_steps}: must be >= 0 (0: no NLI classifier)")
    res = setup_toy(name, args.out, seed=args.seed, teacher=not args.no_teacher, training=training, sizes=sizes,
                    num_examples=args.num_examples, progress=not args.quiet, overwrite=args.overwrite,
                    nli=args.nli_steps != 0 and ({"steps": args.nli_steps} if args.nli_steps else {}))
    print(res.describe())
    print(f"summary:    {Path(res.out) / 'toy.json'}")
    print(f"next:       seedrl bon --model {res.reference} --n 1,2,4,8,16 --prompts 64")
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from seedrl.cli.train import run_config

    if args.config is None and not args.help_config:
        raise UserError("seedrl lm sft: give a YAML config (e.g. configs/arith_sft.yaml) or --help-config")
    # the same path as `seedrl run` on a config with algo: sft
    return run_config("sft", args.config, args.overrides, resume=args.resume, help_config=args.help_config)


def cmd_cache_teacher(args: argparse.Namespace) -> int:
    from seedrl.agents.gkd import LMGKDConfig
    from seedrl.agents.gkd_cache import cache_teacher
    from seedrl.config import load_config

    cfg = load_config(LMGKDConfig, args.config, args.overrides)
    n = cache_teacher(cfg, args.out)
    print(f"{n} teacher distributions (top {cfg.gkd.top_k}) in {args.out}\nnext:       seedrl run {args.config} "
          f"gkd.teacher_cache={args.out} gkd.top_k={cfg.gkd.top_k}")
    return 0


def cmd_bon(args: argparse.Namespace) -> int:
    from seedrl.agents.bon import evaluate_bon
    from seedrl.lm.toy_setup import REWARD, make_world, read_toy_info, world_name
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.sampler import SamplingParams

    try:
        ns = [int(x) for x in args.n.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--n={args.n!r}: expected comma-separated integers like 1,2,4,8") from None
    check_model_folder(args.model, "--model")
    info = read_toy_info(args.model) if Path(args.model).is_dir() else None
    if args.world is None and info is None:
        raise UserError(f"--world is required: {args.model!r} has no seedrl_toy.json naming its world")
    name = world_name(args.world) if args.world else info["world"]
    if args.world_options is not None:
        options = _json_arg(args.world_options, "--world-options")
    else:
        options = info["world_options"] if info and info["world"] == name else {}
    world = make_world(name, options)
    reward = args.reward or REWARD[name]
    policy = LMPolicy.from_pretrained(args.model, device=args.device, pad_token=args.pad_token).eval()
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    examples = world.examples(args.prompts, seed=args.data_seed)
    plot = Path(args.plot) if args.plot else (Path(args.json).with_name("bon_frontier.png") if args.json
                                              else Path("bon_frontier.png"))
    ev = evaluate_bon(policy, examples, world.reward_fn(reward), ns, num_prompts=args.prompts,
                      quantile_samples=args.quantile_samples, params=params, max_batch=args.max_batch)
    ev.plot(plot, title=f"Best-of-N, {name} ({reward}), {Path(args.model).name}")
    print(f"Best-of-N on {name} ({reward} reward), model {args.model}, temperature {args.temperature}")
    print(ev.table())
    print(f"plot:       {plot}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"world": name, "reward": reward, "model": args.model,
                                               "rows": ev.rows}, indent=1))
        print(f"json:       {args.json}")
    return 0
