"""``seedrl run CONFIG [key=value ...]`` and ``seedrl eval CHECKPOINT``."""

from __future__ import annotations

import argparse
import logging


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train an agent from a YAML config (e.g. configs/cartpole_impala.yaml)")
    run.add_argument("config", help="YAML file")
    run.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. runtime.num_actors=4")
    run.add_argument("--resume", action="store_true", help="continue the run in <out_dir>/<name> from its last checkpoint")
    run.add_argument("--help-config", action="store_true", help="list every config key with its type, default and help")
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="evaluate a checkpoint: episode returns, optionally a GIF of one episode")
    ev.add_argument("checkpoint", help="a ckpt-*.pt file or a run directory (its latest checkpoint)")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    ev.add_argument("--video", default=None, help="write the first episode's observations to this GIF")
    ev.add_argument("--seed", type=int, default=12345)
    ev.set_defaults(func=cmd_eval)


def cmd_run(args: argparse.Namespace) -> int:
    from seedrl.config import format_config_help, load_config
    from seedrl.runtime.config import TrainConfig

    algo = _algo(args.config, args.overrides)
    if algo == "pg":
        from seedrl.runtime.lm_loop import LMPGConfig, train_lm_pg

        if args.help_config:
            print(format_config_help(LMPGConfig))
            return 0
        final = train_lm_pg(load_config(LMPGConfig, args.config, args.overrides), resume=args.resume)
        print(f"done: {final['updates']} updates, reward {final['reward']:.3f}, KL {final['kl']:.3f}, "
              f"{final['samples_per_s']:.1f} samples/s\nmodel:   {final['final']}\ncurves:  {final['run_dir']}/curves.png")
        return 0
    if args.help_config:
        print(format_config_help(TrainConfig))
        return 0
    cfg = load_config(TrainConfig, args.config, args.overrides)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from seedrl.runtime.loop import train

    result = train(cfg, resume=args.resume)
    ret = "n/a" if result.mean_return is None else f"{result.mean_return:.1f}"
    state = "interrupted" if result.interrupted else ("solved" if result.solved else "done")
    print(
        f"{state}: {result.frames:,} frames, {result.updates:,} updates, {result.episodes:,} episodes in "
        f"{result.seconds:.0f} s ({result.frames / max(result.seconds, 1e-9):,.0f} frames/s); "
        f"mean return (last 100) {ret}"
    )
    print(f"checkpoint: {result.checkpoint}\ncurves:     {result.run_dir / 'curves.png'}\nmetrics:    {result.run_dir / 'metrics.jsonl'}")
    return 0


def _algo(config: str, overrides: list[str]) -> str:
    """Which trainer a config is for: its ``algo`` key (default impala, the game agent)."""
    import yaml

    algo = "impala"
    with open(config, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if isinstance(raw, dict) and "algo" in raw:
        algo = str(raw["algo"])
    for item in overrides:
        if item.startswith("algo="):
            algo = item.split("=", 1)[1]
    if algo not in ("impala", "pg"):
        raise ValueError(f"config error at 'algo': {algo!r} is not one of ['impala', 'pg']")
    return algo


def cmd_eval(args: argparse.Namespace) -> int:
    from seedrl.runtime.evaluate import evaluate

    result = evaluate(args.checkpoint, episodes=args.episodes, greedy=args.greedy, seed=args.seed, video=args.video)
    r = result["returns"]
    print(f"{len(r)} episodes: mean return {sum(r) / len(r):.2f}, min {min(r):.2f}, max {max(r):.2f}")
    if args.video:
        print(f"video: {args.video}")
    return 0
