"""The learner: trains on batches of unrolls and publishes weights to inference.

Agent-agnostic: it takes a learner step, an object with ``loss(batch, weights)
-> (loss, priorities or None, logs)`` and ``after_update(updates)`` (the agent's:
:class:`~seedrl.agents.r2d2.R2D2Step`, :class:`~seedrl.agents.appo.AppoStep`), or a plain
``loss_fn(model, batch) -> (loss, logs)``. A step that learns several times from one batch
(APPO's epochs of minibatches) also has ``passes(batch)``, an iterable of what its ``loss``
takes: one optimizer step each, one weight publication per batch. ``weights`` are a replay's importance
weights (None for batches straight from the actors); the priorities a step
returns are kept in :attr:`Learner.priorities` for the replay. After
each update the new weights are copied into the inference model in place,
under the lock inference holds during its forward pass, so no copy goes
through disk and inference never sees half-written weights. The policy lag of
a batch is the number of updates between the weights that chose its actions
and the weights being trained.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from seedrl.config.sections import OptimConfig
from seedrl.runtime.errors import check_finite
from seedrl.runtime.unrolls import Unroll, stack_unrolls
from seedrl.runtime.weights import WeightsMailbox


def make_optimizer(cfg: OptimConfig, params, *, fused: bool = False) -> torch.optim.Optimizer:
    """The torch optimizer of ``optim`` (``name``, ``lr``, ``eps``, ``weight_decay``, ``rmsprop_alpha``).

    ``fused``: Adam / AdamW update every parameter in one fused kernel where all of them are
    floating-point CPU (or CUDA) tensors (the same update rule; the per-parameter Python loop
    of the default CPU path costs ~1 ms per step for a 28-tensor tiny GPT-2, fused ~0.3 ms)."""
    params = list(params)
    kw = {"fused": True} if fused and _fusable(params) else {}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, **kw)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay, **kw)
    return torch.optim.RMSprop(params, lr=cfg.lr, eps=cfg.eps, alpha=cfg.rmsprop_alpha, weight_decay=cfg.weight_decay)


def _fusable(params) -> bool:
    """Parameters torch's fused Adam accepts: floating point, all on one CPU or CUDA device."""
    tensors = [p for p in params if isinstance(p, torch.Tensor)]
    return bool(tensors) and len(tensors) == len(params) and len({p.device for p in tensors}) == 1 \
        and tensors[0].device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in tensors)


class LossFnStep:
    """A learner step around a plain ``loss_fn(model, batch) -> (loss, logs)`` (no replay)."""

    uses_replay = False

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, Unroll], tuple[torch.Tensor, dict]]):
        self.model = model
        self.loss_fn = loss_fn

    def loss(self, batch: Unroll, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, None, dict]:
        loss, logs = self.loss_fn(self.model, batch)
        return loss, None, logs

    def after_update(self, updates: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


class Learner:
    """Pulls ``batch_envs`` environments' unrolls, updates ``model``, publishes to ``weights``
    (the mailbox inference reads; None: publish nowhere)."""

    def __init__(
        self,
        model: torch.nn.Module,
        weights: WeightsMailbox | None,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any,
        unrolls: "queue.Queue[Unroll]",
        batch_envs: int,
        *,
        grad_clip: float | None = 40.0,
        lr_schedule: Callable[[int], float] | None = None,
    ):
        self.model = model
        self.weights = weights
        self.optimizer = optimizer
        #: the learner step (a plain loss_fn is wrapped in :class:`LossFnStep`)
        self.step = loss_fn if hasattr(loss_fn, "loss") else LossFnStep(model, loss_fn)
        self.priorities: np.ndarray | None = None  # of the last batch, when the step computes them
        self.unrolls = unrolls
        self.batch_envs = batch_envs
        self._leftover: Unroll | None = None
        self.grad_clip = grad_clip
        self.lr_schedule = lr_schedule
        self.updates = 0
        self.wait_seconds = 0.0
        self.train_seconds = 0.0

    def next_batch(self, stop: threading.Event) -> Unroll | None:
        """``batch_envs`` environments' unrolls: whole actor unrolls are split or joined
        along the environment axis, so an actor may step more environments than a batch holds."""
        parts, have = [], 0
        start = time.perf_counter()
        while have < self.batch_envs:
            if self._leftover is not None:
                u, self._leftover = self._leftover, None
            else:
                try:
                    u = self.unrolls.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():
                        return None
                    continue
            need = self.batch_envs - have
            if u.num_envs > need:
                u, self._leftover = u.slice(0, need), u.slice(need, u.num_envs)
            parts.append(u)
            have += u.num_envs
        self.wait_seconds += time.perf_counter() - start
        return parts[0] if len(parts) == 1 else stack_unrolls(parts)

    def update(self, batch: Unroll, frames: int, weights: torch.Tensor | None = None) -> dict[str, float]:
        """One gradient step on ``batch`` (``weights``: a replay's importance weights); returns the
        logged terms. A non-finite loss or gradient norm raises
        :class:`~seedrl.runtime.errors.NonFiniteLoss` before the step."""
        start = time.perf_counter()
        if self.lr_schedule is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_schedule(frames)
        self.model.train()
        passes = self.step.passes(batch) if hasattr(self.step, "passes") else (batch,)
        summed: dict[str, float] = {}
        steps = 0
        for part in passes:
            logs = self._gradient_step(part, weights)
            for k, v in logs.items():
                summed[k] = summed.get(k, 0.0) + v
            steps += 1
        if steps > 1:  # the mean of each logged term over the batch's gradient steps
            logs = {k: v / steps for k, v in summed.items()}
            logs["gradient_steps"] = float(steps)
        self.updates += 1
        self.step.after_update(self.updates)
        versions = batch.arrays["version"]
        logs["policy_lag"] = float(self.updates - 1 - np.min(versions))
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        self.publish()
        self.train_seconds += time.perf_counter() - start
        return logs

    def _gradient_step(self, part: Any, weights: torch.Tensor | None) -> dict[str, float]:
        loss, self.priorities, logs = self.step.loss(part, weights)
        check_finite(loss, "loss", self.updates + 1)  # nothing applied, nothing published
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
            check_finite(logs["grad_norm"], "gradient norm", self.updates + 1)
        self.optimizer.step()
        return logs

    def publish(self, version: int | None = None) -> None:
        """Post a snapshot of the weights as ``version`` (default: the update count); never waits for inference."""
        version = self.updates if version is None else version
        if self.weights is not None:
            self.weights.post(self.model, version)
        self.on_publish(version)

    def on_publish(self, version: int) -> None:
        """Hook called after each publish with its version (tests and benchmarks count publications)."""
