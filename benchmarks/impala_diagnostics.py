"""Why does (or doesn't) an IMPALA run learn? Per-update measurements on the real runtime pathway.

Runs a game config for ``--updates`` learner updates with the runtime's own
pieces (actor loop and env batches in threads, central inference building the
unrolls and recording behaviour log-probs, the learner with its optimizer,
clipping, lr schedule and publish), and every ``--every`` updates prints:

* gradient norms of each loss term (policy gradient, baseline_cost x baseline,
  entropy_cost x entropy) on each parameter group (torso, policy head, value
  head), before clipping, and the total norm / clip factor;
* advantages' scale (mean |A|, std), non-zero rewards, terminals in the batch;
* ``|log π − log μ|`` on the entries acted with the learner's current weights
  (lag 0: must be ~0, else actors and learner see different inputs);
* how much one update moves the policy: mean KL(π_before || π_after) on the
  batch, the relative change of each parameter group, and the largest logit
  change;
* whether the acting (inference) weights equal the learner's after a publish;
* ``pg_half_cos_*``: agreement of the policy gradients of the two halves of the batch
  (signal against noise, see :func:`pg_half_cosines`).

Usage::

    nice -n 10 python benchmarks/impala_diagnostics.py configs/pong_impala.yaml --updates 300 --every 25
    python benchmarks/impala_diagnostics.py configs/cartpole_impala.yaml --updates 200 -o optim.lr=1e-3

Rows go to stdout and, with ``--out``, to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import copy
import json
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from seedrl.agents.impala import impala_terms
from seedrl.config import load_config
from seedrl.runtime.actor import ActorSpec
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.inference import InferenceServer
from seedrl.runtime.layout import resolve_layout
from seedrl.runtime.learner import Learner, make_optimizer
from seedrl.runtime.loop import build_layout, frames_per_step, probe_spaces
from seedrl.runtime.threaded import ThreadedBackend
from seedrl.models.config import build_model


def param_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """torso (everything below the heads), policy head, value head."""
    groups: dict[str, list] = {"torso": [], "policy": [], "value": []}
    for name, p in model.named_parameters():
        head = name.split(".")[0]
        groups[head if head in ("policy", "value") else "torso"].append(p)
    return groups


def _norm(grads) -> float:
    return float(sum(float((g.float() ** 2).sum()) for g in grads if g is not None)) ** 0.5


class DiagnosticStep:
    """The IMPALA learner step, measuring each term's gradient on each parameter group when asked."""

    uses_replay = False

    def __init__(self, model, cfg):
        self.model, self.cfg = model, cfg
        self.groups = param_groups(model)
        self.measure = False
        self.terms = None

    def loss(self, batch, weights=None):
        cfg = self.cfg
        t = impala_terms(self.model, batch, cfg)
        self.terms = t
        weighted = t.weighted(cfg)
        loss = sum(weighted.values())
        logs = {"pg_loss": t.pg_loss.item(), "baseline_loss": t.baseline_loss.item(), "entropy": t.entropy.item()}
        if self.measure:
            for term, value in weighted.items():
                for group, params in self.groups.items():
                    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                    logs[f"g_{term}_{group}"] = _norm(grads)
            logs.update(pg_half_cosines(t, self.groups))
            with torch.no_grad():
                adv = t.pg_advantages
                logs.update(
                    adv_abs_mean=float(adv.abs().mean()), adv_std=float(adv.std()),
                    rewards_nonzero=int((t.rewards != 0).sum()), terminals=int((t.discounts == 0).sum()),
                    value_mean=float(t.values.mean()), vs_mean=float(t.vs.mean()),
                    logit_std=float(t.logits.std(-1).mean()),
                )
        return loss, None, logs

    def after_update(self, updates):
        pass


def pg_half_cosines(t, groups) -> dict[str, float]:
    """Cosine between the policy-gradient term's gradients from the two halves of the batch's environments.

    Near 0: each update's policy gradient is mostly noise (the halves disagree); near 1: a consistent
    direction that updates can accumulate. Reported for the policy head and the torso."""
    half = t.target_logp.shape[1] // 2
    parts = [-(t.target_logp[:, s] * t.pg_advantages[:, s]).mean() for s in (slice(0, half), slice(half, None))]
    out = {}
    for group in ("policy", "torso"):
        g = [torch.cat([x.flatten() for x in torch.autograd.grad(p, groups[group], retain_graph=True)]) for p in parts]
        out[f"pg_half_cos_{group}"] = float(torch.nn.functional.cosine_similarity(g[0], g[1], dim=0))
    return out


def gradient_noise_scale(grads: list[torch.Tensor], batch_transitions: int) -> dict[str, float]:
    """The gradient noise scale ``B_noise = tr(Σ) / |G|²`` (McCandlish et al., 2018), in transitions.

    From ``N`` independent batch gradients ``g_i`` of ``b`` transitions each:
    ``E|g_i|² = |G|² + tr(Σ)/b`` and ``|ḡ|² ≈ |G|² + tr(Σ)/(N b)``, so
    ``tr(Σ) = b·N/(N−1)·(mean|g_i|² − |ḡ|²)`` and ``|G|² = |ḡ|² − tr(Σ)/(N b)``. A batch of
    ``b`` transitions has a gradient whose expected squared signal fraction is
    ``|G|² / E|g|² = 1 / (1 + B_noise / b)``. ``|G|²`` can come out negative (no detectable
    signal): then ``B_noise`` is reported as inf, meaning roughly ``B_noise ≳ N·b``.
    """
    n, b = len(grads), batch_transitions
    mean = torch.stack(grads).mean(0)
    mean_sq = float(torch.stack([(g**2).sum() for g in grads]).mean())
    trace = b * n / (n - 1) * (mean_sq - float((mean**2).sum()))
    signal = float((mean**2).sum()) - trace / (n * b)
    return {"noise_scale": trace / signal if signal > 0 else float("inf"),
            "signal_fraction": max(0.0, signal) / mean_sq,
            # N |ḡ|² / mean|g_i|²: ~1 when the batch gradients are pure noise, ~N when they all agree
            "mean_gradient_ratio": n * float((mean**2).sum()) / mean_sq}


def measure_noise_scale(model, cfg, batches, lambdas, groups) -> list[dict]:
    """``B_noise`` of the policy-gradient term on the policy head and the torso, for each V-trace λ,
    on the same batches under the same (frozen) weights."""
    import dataclasses

    rows = []
    for lam in lambdas:
        agent = dataclasses.replace(cfg, lambda_=lam)
        per_group: dict[str, list] = {"policy": [], "torso": []}
        for batch in batches:
            t = impala_terms(model, batch, agent)
            for group in per_group:
                g = torch.autograd.grad(t.pg_loss, groups[group], retain_graph=True)
                per_group[group].append(torch.cat([x.flatten() for x in g]))
        transitions = batches[0].arrays["reward"][1:].size
        row = {"lambda": lam, "batches": len(batches), "batch_transitions": int(transitions)}
        for group, grads in per_group.items():
            row.update({f"{k}_{group}": v for k, v in gradient_noise_scale(grads, transitions).items()})
        rows.append(row)
    return rows


def lag0_logp_error(batch, terms, updates_before: int) -> float | None:
    """max |log π − log μ| over entries acted with the weights being trained (None when there are none)."""
    version = torch.from_numpy(batch.arrays["version"][:-1])
    mask = version == updates_before
    if not bool(mask.any()):
        return None
    diff = (terms.target_logp.detach() - terms.behaviour_logp).abs()
    return float(diff[mask].max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--noise-batches", type=int, default=0,
                    help="after the updates, freeze the weights and measure the gradient noise scale on this many batches")
    ap.add_argument("--lambdas", default="1.0", help="comma-separated V-trace lambdas for --noise-batches")
    ap.add_argument("-o", "--override", action="append", default=[], help="key=value config overrides")
    args = ap.parse_args(argv)

    cfg = load_config(TrainConfig, args.config, args.override)
    torch.set_num_threads(cfg.runtime.torch_threads)
    torch.manual_seed(cfg.seed)
    obs_space, act_space = probe_spaces(cfg)
    cfg, _ = resolve_layout(cfg, obs_space, act_space)
    layout = build_layout(cfg, obs_space, act_space)
    model = build_model(cfg.model, obs_space, act_space)
    if len(obs_space.shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    acting = copy.deepcopy(model).eval()
    rt = cfg.runtime
    unrolls: queue.Queue = queue.Queue(maxsize=rt.queue_unrolls)
    lock = threading.Lock()
    inference = InferenceServer(acting, layout, rt.num_actors, rt.unroll_length, unrolls, weights_lock=lock,
                                batch_timeout_s=rt.batch_timeout_ms / 1000, seed=cfg.seed + 1)
    backend = ThreadedBackend(layout, rt.num_actors,
                              lambda i, r: ActorSpec(i, cfg.env, cfg.env.num_envs, 1000 * (cfg.seed + 1) + i))
    step = DiagnosticStep(model, cfg.agent)
    total = cfg.total_frames

    def lr_at(frames):
        return cfg.optim.lr * max(0.0, 1.0 - frames / total) if cfg.optim.lr_decay == "linear" else cfg.optim.lr

    learner = Learner(model, acting, make_optimizer(cfg.optim, model.parameters()), step, unrolls, rt.batch_size, lock,
                      grad_clip=cfg.optim.clip_norm, lr_schedule=lr_at)
    learner.on_publish = lambda v: setattr(inference, "version", v)
    stop = threading.Event()
    server = threading.Thread(target=inference.serve, args=(backend, stop), daemon=True)
    backend.start()
    server.start()
    out = args.out.open("w") if args.out else None
    frames, returns, start = 0, [], time.perf_counter()
    try:
        for u in range(1, args.updates + 1):
            batch = learner.next_batch(stop)
            step.measure = u == 1 or u % args.every == 0
            before = {name: p.detach().clone() for name, p in model.named_parameters()}
            logs = learner.update(batch, frames)
            frames += int(batch.arrays["reward"][1:].size) * frames_per_step(cfg)
            while backend.episodes:
                returns.append(backend.episodes.popleft()[2])
            if not step.measure:
                continue
            terms = step.terms
            row = {"update": u, "frames": frames, "seconds": round(time.perf_counter() - start, 1), **logs,
                   "return_last20": float(np.mean(returns[-20:])) if returns else None, "episodes": len(returns),
                   "lag0_logp_err": lag0_logp_error(batch, terms, u - 1)}
            with torch.no_grad():
                a = {k: torch.from_numpy(v) for k, v in batch.arrays.items()}
                new_logits, _, _ = model.unroll(a["obs"], batch.state0, a["first"], a["prev_action"], a["prev_reward"])
                old = torch.log_softmax(terms.logits.detach(), -1)
                new = torch.log_softmax(new_logits.float(), -1)
                row["kl_update"] = float((old.exp() * (old - new)).sum(-1).mean())
                row["max_logit_change"] = float((new_logits.float() - terms.logits.detach()).abs().max())
                for group in ("torso", "policy", "value"):
                    names = [n for n, p in model.named_parameters() if any(p is q for q in step.groups[group])]
                    delta = _norm([model.get_parameter(n) - before[n] for n in names])
                    row[f"rel_change_{group}"] = delta / max(1e-12, _norm([before[n] for n in names]))
                row["published"] = all(torch.equal(p, q) for p, q in zip(acting.parameters(), model.parameters()))
            row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
            print(json.dumps(row), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
        if args.noise_batches:
            for _ in range(rt.queue_unrolls):  # drain unrolls acted by older weights
                learner.next_batch(stop)
            batches = [learner.next_batch(stop) for _ in range(args.noise_batches)]
            lags = [u - int(b.arrays["version"].min()) for b in batches]
            for row in measure_noise_scale(model, cfg.agent, batches, [float(x) for x in args.lambdas.split(",")],
                                           step.groups):
                row = {"noise_scale_after_updates": args.updates, "max_lag": max(lags), **row}
                print(json.dumps(row), flush=True)
                if out:
                    out.write(json.dumps(row) + "\n")
    finally:
        stop.set()
        server.join(5)
        backend.stop()
        if out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
