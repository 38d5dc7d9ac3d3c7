"""BOND / J-BOND on a categorical bandit: the learners of :mod:`seedrl.agents.bond`
with a softmax policy over ``K`` arms, and the exact targets they must reach.

A bandit is a single prompt whose completions are the arms: ``π = softmax(θ)``,
``π_ref`` given, reward ``r_a`` per arm. Training uses the *same* sampled losses
as the language-model learner (:func:`~seedrl.agents.bond.bond_loss`,
:func:`~seedrl.agents.bond.backward_reward`, :func:`~seedrl.agents.bond.move_anchor`)
with ``P`` independent rows per update, so the bandit tests check the code that
trains language models.

Exact targets (:func:`exact_fixed_point`). With a fixed anchor ``π_a`` the
expected sampled gradient is the gradient of

    F(π) = (1 − β)·Σ_y q(y)·log π(y) + β·Σ_y π(y)·(R̄(y) − log π(y)/π_a(y)) − γ·KL(π ‖ π_a),

``q = Bo_n(π_a)`` and ``R̄(y) = E[r_B(y)]``: for ``jbond``
``−log 16·(1 − p_≤(y))²`` (both anchor samples strictly better), for ``exact``
``log((p_≤^n − p_<^n)/(p_≤ − p_<))``, for ``log_quantile``
``(n − 1)·E_{j~Bin(k, p_≤(y))} log max(j/k, floor)`` (the Monte Carlo estimate's
own expectation, not ``log p_≤``). ``F`` is strictly concave in ``π`` on the
simplex, so its maximiser is the unique fixed point; closed forms: ``β = 0`` →
``Bo_n(π_a)``; ``β = 1`` → ``π ∝ π_a·exp(R̄/(1 + γ))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from seedrl.agents.bond import BondConfig, anchor_samples_needed, backward_reward, bond_loss, forward_weights, move_anchor
from seedrl.config.sections import LogConfig, OptimConfig, RunConfig
from seedrl.ops.bond import best_of_n_probs, bon_log_ratio, quantiles

__all__ = ["BanditBondConfig", "format_bandit_result", "exact_fixed_point", "expected_backward_reward", "iterated_target", "train_bond_bandit"]


def _bandit_optim() -> OptimConfig:
    return OptimConfig(lr=0.03, grad_clip=None, lr_decay="linear", min_lr_ratio=0.1)


def _bandit_log() -> LogConfig:
    return LogConfig(every=50, tensorboard=False)


@dataclass
class BanditBondConfig(RunConfig):
    """BOND / J-BOND on a categorical bandit (``configs/bandit_*.yaml``).

    ``optim``: Adam on the logits; with ``lr_decay: linear`` the learning rate decays to
    ``lr * min_lr_ratio`` by the end of each anchor round."""

    algo: str = field(default="bond_bandit", metadata={"help": "bond_bandit", "choices": ["bond_bandit"]})
    name: str = field(default="bandit_bond", metadata={"help": "run name"})
    reference: list[float] = field(default_factory=lambda: [0.5, 0.3, 0.2], metadata={"help": "π_ref over the arms (sums to 1)"})
    rewards: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0], metadata={"help": "reward of each arm (ties allowed)"})
    bond: BondConfig = field(default_factory=BondConfig)
    steps: int = field(default=1500, metadata={"help": "updates", "min": 1})
    prompts_per_step: int = field(default=512, metadata={"help": "P rows per update", "min": 1})
    optim: OptimConfig = field(default_factory=_bandit_optim)
    log: LogConfig = field(default_factory=_bandit_log)

    renamed_keys: ClassVar[dict[str, str]] = {
        "lr": "optim.lr", "lr_final_fraction": "optim.min_lr_ratio", "log_every": "log.every"}

    # seconds-long runs: no checkpoints, progress bar or TensorBoard
    unused_keys: ClassVar[tuple[str, ...]] = ("log.every_s", "log.tensorboard", "log.checkpoint_every",
                                              "log.keep_checkpoints", "log.progress", "log.solved_return",
                                              "optim.warmup_steps")

    def validate(self) -> None:
        self.refuse_unused_keys()
        if len(self.reference) != len(self.rewards) or len(self.reference) < 2:
            raise ValueError(f"reference: needs as many arms (>= 2) as rewards, got {len(self.reference)} and {len(self.rewards)}")
        if any(p < 0 for p in self.reference) or abs(sum(self.reference) - 1.0) > 1e-6:
            raise ValueError(f"reference: must be probabilities summing to 1, got {self.reference}")


def expected_backward_reward(anchor: torch.Tensor, rewards: torch.Tensor, cfg: BondConfig) -> torch.Tensor:
    """``R̄(y) = E[r_B(y)]`` per arm for anchor probabilities ``[K]`` (module docstring)."""
    anchor, rewards = anchor.double(), rewards.double()
    p_le, p_lt = quantiles(anchor, rewards)
    p_le = p_le.clamp(max=1.0)
    if cfg.backward_reward == "jbond":
        return -math.log(16.0) * (1.0 - p_le) ** 2
    if cfg.backward_reward == "exact":
        return bon_log_ratio(p_le, p_lt.clamp(max=1.0), cfg.n)
    k = cfg.quantile_samples
    floor = 1.0 / (k + 1) if cfg.quantile_floor is None else cfg.quantile_floor
    j = torch.arange(k + 1, dtype=torch.float64)
    log_binom = torch.lgamma(torch.tensor(k + 1.0, dtype=torch.float64)) - torch.lgamma(j + 1) - torch.lgamma(k - j + 1)
    p = p_le[:, None]
    with torch.no_grad():
        log_pmf = log_binom + j * torch.log(p.clamp(min=1e-300)) + (k - j) * torch.log1p(-p.clamp(max=1 - 1e-16))
        log_pmf = torch.where((p >= 1) & (j < k), torch.full_like(log_pmf, -math.inf), log_pmf)
        log_pmf = torch.where((p >= 1) & (j == k), torch.zeros_like(log_pmf), log_pmf)
    values = torch.log((j / k).clamp(min=floor))
    return (cfg.n - 1) * (log_pmf.exp() * values).sum(-1)


def exact_fixed_point(anchor: torch.Tensor, rewards: torch.Tensor, cfg: BondConfig, iters: int = 500) -> torch.Tensor:
    """The maximiser of ``F`` (module docstring) for a fixed anchor, by L-BFGS on the logits (float64)."""
    anchor, rewards = anchor.double(), rewards.double()
    q = best_of_n_probs(anchor, rewards, cfg.n)
    r_bar = expected_backward_reward(anchor, rewards, cfg)
    beta, gamma = cfg.beta, cfg.anchor_kl_coef
    log_anchor = torch.log(anchor.clamp(min=1e-300))
    support = anchor > 0
    theta = torch.where(support, log_anchor, torch.full_like(log_anchor, -math.inf)).clone()
    free = theta[support].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([free], max_iter=iters, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(free, 0)
        p = logp.exp()
        delta = logp - log_anchor[support]
        f = (1 - beta) * (q[support] * logp).sum() + beta * (p * (r_bar[support] - delta)).sum() - gamma * (p * delta).sum()
        (-f).backward()
        return -f

    opt.step(closure)
    out = torch.zeros_like(anchor)
    out[support] = torch.softmax(free.detach(), 0)
    return out


def iterated_target(reference: torch.Tensor, rewards: torch.Tensor, cfg: BondConfig, rounds: int) -> torch.Tensor:
    """Where iterative BOND ends after ``rounds`` anchor rounds: the fixed point of each round
    becomes the next anchor (``β = 0``: ``Bo_{n^rounds}(π_ref)``)."""
    anchor = reference.double()
    for _ in range(rounds):
        anchor = exact_fixed_point(anchor, rewards, cfg)
    return anchor


def train_bond_bandit(cfg: BanditBondConfig, on_step: Callable[[dict], None] | None = None, *,
                      resume: bool = False) -> dict[str, Any]:
    """Train a softmax policy with the sampled BOND losses; returns the final probabilities,
    the exact target, their total-variation distance and the KLs. A bandit run takes
    seconds and keeps no checkpoint: its folder follows the rules of every run
    (:class:`~seedrl.runtime.run_dir.RunDir`: locked, not reused), and ``resume``
    starts a previous run of the folder over.

    The policy starts at ``π_ref``. With ``anchor: periodic`` the anchor moves every
    ``anchor_every`` updates and the target is :func:`iterated_target` over the
    number of rounds; with ``ema`` the target of the last anchor is reported."""
    from seedrl.runtime.run_dir import RunDir

    with RunDir(Path(cfg.out_dir) / cfg.name, resume=resume, checkpoints=lambda _: []) as run:
        return _train_bond_bandit(cfg, run, on_step)


def _train_bond_bandit(cfg: BanditBondConfig, run, on_step: Callable[[dict], None] | None) -> dict[str, Any]:
    from seedrl.report.metrics import MetricsLogger, plot_curves
    from seedrl.runtime.learner import make_optimizer

    b = cfg.bond
    gen = torch.Generator().manual_seed(cfg.seed)
    ref = torch.tensor(cfg.reference, dtype=torch.float64)
    rewards = torch.tensor(cfg.rewards, dtype=torch.float64)
    log_ref = torch.log(ref.clamp(min=1e-30)).float()
    theta = log_ref.clone().requires_grad_(True)
    anchor_theta = log_ref.clone()
    opt = make_optimizer(cfg.optim, [theta])
    round_len = b.anchor_every if b.anchor == "periodic" else cfg.steps
    final = cfg.optim.min_lr_ratio if cfg.optim.lr_decay == "linear" else 1.0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 1.0 - (1.0 - final) * min(i % round_len, round_len - 1) / max(round_len - 1, 1))
    exact_table = None
    run_dir = run.path
    run.begin(cfg)
    metrics = MetricsLogger(run_dir, tensorboard=False)
    p_rows, s, m = cfg.prompts_per_step, b.policy_samples, anchor_samples_needed(b)
    row: dict[str, Any] = {}
    try:
        for step in range(1, cfg.steps + 1):
            anchor_probs = torch.softmax(anchor_theta, 0)
            y = torch.multinomial(torch.softmax(theta.detach(), 0), p_rows * s, replacement=True, generator=gen).view(p_rows, s)
            ya = torch.multinomial(anchor_probs, p_rows * m, replacement=True, generator=gen).view(p_rows, m)
            if b.backward_reward == "exact":
                if exact_table is None or b.anchor != "fixed":
                    exact_table = expected_backward_reward(anchor_probs.double(), rewards, b).float()
                r_b = exact_table[y]
            else:
                r_b = backward_reward(rewards[y], rewards[ya], b)
            weights = forward_weights(rewards[ya], b, gen)
            logp = torch.log_softmax(theta, 0)
            loss, logs = bond_loss(logp[y], torch.log_softmax(anchor_theta, 0)[y], r_b, logp[ya], weights, b)
            opt.zero_grad()
            loss.backward()
            if cfg.optim.clip_norm:
                torch.nn.utils.clip_grad_norm_([theta], cfg.optim.clip_norm)
            opt.step()
            sched.step()
            move_anchor([anchor_theta], [theta], step, b)
            if step % cfg.log.every == 0 or step == cfg.steps:
                with torch.no_grad():
                    p = torch.softmax(theta, 0).double()
                row = {"updates": step, **logs, "reward": float((p * rewards).sum()), "kl_ref": _kl(p, ref),
                       "kl_anchor_exact": _kl(p, torch.softmax(anchor_theta, 0).double()),
                       **{f"p{i}": float(v) for i, v in enumerate(p)}}
                metrics.log(row)
                if on_step is not None:
                    on_step(row)
    finally:
        metrics.close()
    probs = torch.softmax(theta.detach(), 0).double()
    if b.anchor == "periodic":
        target = iterated_target(ref, rewards, b, cfg.steps // b.anchor_every + (1 if cfg.steps % b.anchor_every else 0))
    else:
        target = exact_fixed_point(torch.softmax(anchor_theta, 0).double(), rewards, b)
    try:
        plot_curves(metrics.path, run_dir / "curves.png", keys=tuple(f"p{i}" for i in range(len(ref))) + ("kl_ref", "reward"),
                    title=cfg.name)
    except Exception:  # a plot never loses a run
        pass
    return {**row, "probs": probs.tolist(), "target": target.tolist(), "tv": 0.5 * float((probs - target).abs().sum()),
            "run_dir": str(run_dir)}


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    mask = p > 0
    return float((p[mask] * (p[mask].log() - q[mask].clamp(min=1e-300).log())).sum())


def format_bandit_result(result: dict[str, Any]) -> str:
    """The ``seedrl run`` summary of a bandit run: trained probabilities beside the exact target."""
    fmt = lambda xs: " ".join(f"{x:.4f}" for x in xs)  # noqa: E731
    return (f"done: {result['updates']} updates\npolicy: {fmt(result['probs'])}\ntarget: {fmt(result['target'])}\n"
            f"total variation {result['tv']:.4f}, KL to the reference {result['kl_ref']:.4f}, reward {result['reward']:.4f}\n"
            f"curves: {result['run_dir']}/curves.png")
