"""``seedrl run CONFIG [key=value ...]`` and ``seedrl eval CHECKPOINT``.

``seedrl run`` picks the trainer from the config's ``algo`` key (default ``impala``)
through :data:`ALGOS`, one :class:`Algo` per algorithm: the config dataclass, the
training function (``train(cfg, resume=bool)``) and a one-line summary of its
result. Adding an algorithm is one entry there.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="train from a YAML config: games (algo: impala, appo or r2d2), behaviour cloning from a dataset (bc), LM SFT (sft), PG (pg), BOND (bond), GKD (gkd) or entailment-feedback RL (rlef)")
    run.add_argument("config", help="YAML file")
    run.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. runtime.num_actors=4")
    run.add_argument("--resume", action="store_true", help="continue the run in <out_dir>/<name> from its last checkpoint")
    run.add_argument("--help-config", action="store_true", help="list every config key with its type, default and help")
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="evaluate a checkpoint: episode returns, optionally a GIF of one episode")
    ev.add_argument("checkpoint", help="a ckpt-*.pt file or a run directory (its latest checkpoint)")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling (r2d2: ε = 0 instead of agent.eval_epsilon; bc: the mean of a Gaussian policy)")
    ev.add_argument("--video", default=None, help="write the first episode's observations to this GIF")
    ev.add_argument("--seed", type=int, default=12345)
    ev.set_defaults(func=cmd_eval)


# ----------------------------------------------------------------------------- summaries
def _report_impala(result) -> str:
    ret = "n/a" if result.mean_return is None else f"{result.mean_return:.1f}"
    state = "interrupted" if result.interrupted else ("solved" if result.solved else "done")
    if result.interrupted and result.stop_signal:
        state += f" ({result.stop_signal})"
    return (
        f"{state}: {result.frames:,} frames, {result.updates:,} updates, {result.episodes:,} episodes in "
        f"{result.seconds:.0f} s ({result.frames / max(result.seconds, 1e-9):,.0f} frames/s); "
        f"mean return (last 100) {ret}\n"
        f"checkpoint: {result.checkpoint}\ncurves:     {result.run_dir / 'curves.png'}\n"
        f"metrics:    {result.run_dir / 'metrics.jsonl'}"
    )


def _report_bc(result) -> str:
    state = "interrupted" if result.interrupted else "done"
    if result.interrupted and result.stop_signal:
        state += f" ({result.stop_signal})"
    ret = "" if result.eval_return is None else f"; live mean return {result.eval_return:.1f}"
    loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
    return (f"{state}: {result.updates:,} updates on {result.episodes:,} episodes ({result.steps:,} steps) in "
            f"{result.seconds:.0f} s; last loss {loss}{ret}\ncheckpoint: {result.checkpoint}\n"
            f"curves:     {result.run_dir / 'curves.png'}\nmetrics:    {result.run_dir / 'metrics.jsonl'}")


def _report_lm_pg(final: dict) -> str:
    if final.get("interrupted"):
        return (f"interrupted ({final['stop_signal']}): {final['updates']} updates\ncheckpoint: {final['checkpoint']}\n"
                f"curves:  {final['run_dir']}/curves.png")
    return (f"done: {final['updates']} updates, reward {final['reward']:.3f}, KL {final['kl']:.3f}, "
            f"{final['samples_per_s']:.1f} samples/s\nmodel:   {final['final']}\ncurves:  {final['run_dir']}/curves.png")


def _report_lm_bond(final: dict) -> str:
    from pathlib import Path

    if final.get("interrupted"):
        return _report_lm_pg(final)
    text = _report_lm_pg(final) + f"\nKL to the anchor {final['kl_anchor']:.3f}, log-quantile {final['log_quantile']:.3f}"
    plot = Path(final["run_dir"]) / "reward_vs_kl.png"
    return text + (f"\nfront:   {plot}  (policy beside Best-of-N of the reference)" if plot.exists() else "")


def _report_lm_gkd(final: dict) -> str:
    return (f"done: {final['updates']} updates, divergence to the teacher {final['divergence']:.4f}, "
            f"reward {final['reward']:.3f}, {final['samples_per_s']:.1f} samples/s\n"
            f"model:   {final['final']}\ncurves:  {final['run_dir']}/curves.png")


def _report_lm_rlef(final: dict) -> str:
    if final.get("interrupted"):
        return _report_lm_pg(final)
    return _report_lm_pg(final) + (f"\nvalue loss {final['value_loss']:.4f}, explained variance "
                                   f"{final['explained_variance']:.2f}, length {final['length']:.1f}")


def _report_bandit(result: dict) -> str:
    from seedrl.agents.bond_bandit import format_bandit_result

    return format_bandit_result(result)


def _report_sft(res) -> str:
    state = "interrupted" if res.interrupted else "done"
    if res.interrupted and res.stop_signal:
        state += f" ({res.stop_signal})"
    ev = res.last_eval or {}
    score = ", ".join(f"{k} {v:.4f}" for k, v in ev.items() if k.startswith("eval_"))
    lines = [f"{state}: {res.step}/{res.total_steps} steps in {res.seconds:.0f} s; last eval (step {ev.get('step')}): {score}"]
    if res.final_dir:
        lines.append(f"model:      {res.final_dir}")
    if res.interrupted and res.checkpoint:
        lines.append(f"checkpoint: {res.checkpoint}")
    lines.append(f"curves:     {res.run_dir / 'curves.png'}\nmetrics:    {res.run_dir / 'metrics.jsonl'}")
    return "\n".join(lines)


def _report_any(result: Any) -> str:
    """Summary of a trainer without its own: a dict's scalar entries, else the result's repr."""
    if isinstance(result, dict):
        return "done: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())
    return f"done: {result!r}"


# ----------------------------------------------------------------------------- dispatch
@dataclass(frozen=True)
class Algo:
    """How ``seedrl run`` trains one ``algo``: ``"module:name"`` of its config dataclass and of
    its ``train(cfg, resume=bool)`` function (imported only when used), and its summary."""

    config: str
    train: str
    report: Callable[[Any], str] = _report_any

    @staticmethod
    def _load(spec: str):
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)

    def config_class(self) -> type:
        return self._load(self.config)

    def train_fn(self) -> Callable[..., Any]:
        return self._load(self.train)


#: ``algo`` key of a config -> its trainer (add one line per algorithm).
ALGOS: dict[str, Algo] = {
    "impala": Algo("seedrl.runtime.config:TrainConfig", "seedrl.runtime.loop:train", _report_impala),
    "appo": Algo("seedrl.runtime.config:AppoTrainConfig", "seedrl.runtime.loop:train", _report_impala),
    "r2d2": Algo("seedrl.runtime.config:R2D2TrainConfig", "seedrl.runtime.loop:train", _report_impala),
    "pg": Algo("seedrl.runtime.lm_loop:LMPGConfig", "seedrl.runtime.lm_loop:train_lm_pg", _report_lm_pg),
    "sft": Algo("seedrl.agents.sft:SFTConfig", "seedrl.agents.sft:train_sft", _report_sft),
    "bond": Algo("seedrl.runtime.lm_loop:LMBondConfig", "seedrl.runtime.lm_loop:train_lm", _report_lm_bond),
    "gkd": Algo("seedrl.agents.gkd:LMGKDConfig", "seedrl.runtime.lm_loop:train_lm", _report_lm_gkd),
    "rlef": Algo("seedrl.agents.rlef:LMRLEFConfig", "seedrl.runtime.lm_loop:train_lm", _report_lm_rlef),
    "bc": Algo("seedrl.agents.bc_train:BCTrainConfig", "seedrl.agents.bc_train:train_bc", _report_bc),
    "bond_bandit": Algo("seedrl.agents.bond_bandit:BanditBondConfig", "seedrl.agents.bond_bandit:train_bond_bandit",
                        _report_bandit),
}


def cmd_run(args: argparse.Namespace) -> int:
    return run_config(_algo(args.config, args.overrides), args.config, args.overrides,
                      resume=args.resume, help_config=args.help_config)


def run_config(algo: str, config: str, overrides: list[str], *, resume: bool = False, help_config: bool = False) -> int:
    """Load ``config`` (+ ``overrides``) as ``algo``'s config, train (or print its keys), print the summary."""
    from seedrl.config import format_config_help, load_config

    entry = ALGOS[algo]
    if help_config:
        print(format_config_help(entry.config_class()))
        return 0
    cfg = load_config(entry.config_class(), config, overrides)
    if hasattr(cfg, "check_inputs"):  # model folders, data files, a writable out_dir: before anything is written
        cfg.check_inputs()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(entry.report(entry.train_fn()(cfg, resume=resume)))
    return 0


def _algo(config: str, overrides: list[str]) -> str:
    """Which trainer a config is for: its ``algo`` key (default impala, the game agent)."""
    from seedrl.config import ConfigError
    from seedrl.config.loader import read_yaml_file

    algo = "impala"
    raw = read_yaml_file(config)
    if isinstance(raw, dict) and "algo" in raw:
        algo = str(raw["algo"])
    for item in overrides:
        if item.startswith("algo="):
            algo = item.split("=", 1)[1]
    if algo not in ALGOS:
        raise ConfigError(f"config error at 'algo': {algo!r} is not one of {sorted(ALGOS)}", "algo")
    return algo


def cmd_eval(args: argparse.Namespace) -> int:
    from seedrl.runtime.evaluate import evaluate

    result = evaluate(args.checkpoint, episodes=args.episodes, greedy=args.greedy, seed=args.seed, video=args.video)
    r = result["returns"]
    print(f"{len(r)} episodes: mean return {sum(r) / len(r):.2f}, min {min(r):.2f}, max {max(r):.2f}")
    if args.video:
        print(f"video: {args.video}")
    return 0
