"""Best-of-N sampling and its evaluation: reward, KL to the reference, win rate.

Best-of-N (BoN) draws ``N`` completions ``y_1..y_N ~ pi_ref(. | x)`` and returns one of
highest reward, ties broken uniformly at random among the tied *samples*
(:func:`best_of_n`).

Distribution. Let ``R = r(x, Y)`` for ``Y ~ pi_ref``, ``p_<=(v) = P(R <= v)``,
``p_<(v) = P(R < v)`` and ``p_=(v) = p_<=(v) - p_<(v)``. The best reward is ``v`` with
probability ``p_<=(v)^N - p_<(v)^N``, and given that, the chosen sample is distributed
as ``pi_ref(. | R = v)`` (uniform tie-breaking among exchangeable samples), so

    pi_BoN(y) = pi_ref(y) * (p_<=^N - p_<^N) / p_=            (all at v = r(y))
    log pi_BoN(y) / pi_ref(y) = log(p_<=^N - p_<^N) - log p_=  =: g_N(p_<=, p_<)

With distinct rewards (``p_=(r(y)) = pi_ref(y)``) this is ``pi_BoN(y) = p_<=(y)^N - p_<(y)^N``;
for continuous rewards (``p_< -> p_<=``) ``g_N -> log N + (N-1) log p_<=``. Hence
``KL(pi_BoN || pi_ref) = E_{y ~ BoN} g_N`` depends on the reward distribution only, and is
at most the analytic bound ``log N - (N-1)/N`` (equal for continuous rewards;
:func:`kl_upper_bound`). :func:`exact_bon` gives every quantity in closed form for a
categorical reference (tests, toys).

Estimates (:func:`evaluate_bon`), per prompt from ``m >= max(ns)`` reference samples
(the *pool*) and ``k`` further, independent reference samples:

* the expectation over BoN is taken over all ``C(m, N)`` size-``N`` subsets of the pool
  (a U-statistic: unbiased, lower variance than one draw): pool element ``j`` with
  reward ``r_j`` is picked with probability
  ``w_j = (C(c_<=(r_j), N) - C(c_<(r_j), N)) / (C(m, N) c_=(r_j))`` where ``c`` count pool
  rewards ``<=``, ``<``, ``=`` ``r_j``;
* mean BoN reward ``sum_j w_j r_j``;
* win rate against a reference sample (ties count 1/2):
  ``sum_j w_j (#{q < r_j} + #{q = r_j} / 2) / k`` over the ``k`` reference rewards ``q``
  (unbiased);
* Monte Carlo KL: ``sum_j w_j g_N(p^_<=(r_j), p^_<(r_j))`` with the quantiles estimated
  from the ``k`` reference rewards counting the evaluated sample itself,
  ``p^_<= = (#{q <= r} + 1) / (k + 1)``, ``p^_< = #{q < r} / (k + 1)``: the floor
  ``p^_= >= 1/(k+1)`` keeps ``g_N`` finite and ``<= log N``. The estimate is consistent
  (exact as ``k -> inf``) but biased for finite ``k``: ``g_N`` is nonlinear in the
  quantiles (bias ``O(N/k)``; with few distinct reward values, as in exact-match toys,
  it is small already at ``k`` of a few dozen). It uses the discrete form, so ties are
  handled exactly in the limit (an all-equal reward gives KL 0, not ``log N``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedrl.ops.bond import best_of_n_probs, bon_kl_upper_bound, bon_log_ratio, bon_pool_weights, quantiles

__all__ = ["BoNEvaluation", "BoNResult", "best_of_n", "evaluate_bon", "exact_bon", "kl_upper_bound",
           "log_ratio", "plot_frontier"]


def kl_upper_bound(n: int) -> float:
    """``log N - (N - 1) / N``: KL(BoN || ref) for continuous rewards, an upper bound otherwise."""
    return bon_kl_upper_bound(n)


def log_ratio(p_le, p_lt, n: int) -> np.ndarray:
    """``log((p_<=^N - p_<^N) / (p_<= - p_<))`` elementwise (numpy front of :func:`seedrl.ops.bond.bon_log_ratio`)."""
    a = torch.as_tensor(np.asarray(p_le, np.float64))
    b = torch.as_tensor(np.asarray(p_lt, np.float64))
    a, b = torch.broadcast_tensors(a, b)
    return bon_log_ratio(a, b, n).numpy()


# ------------------------------------------------------------------ closed form (categorical)
def exact_bon(probs: Sequence[float], rewards: Sequence[float], n: int) -> dict[str, Any]:
    """BoN of a categorical reference over completions ``i`` with ``pi_ref(i) = probs[i]``.

    Returns ``probs`` (``pi_BoN``), ``kl`` (exact KL(BoN || ref)), ``reward`` (mean),
    ``win_rate`` (against one reference sample, ties 1/2) and ``kl_bound``.
    """
    p, r = np.asarray(probs, np.float64), np.asarray(rewards, np.float64)
    if p.shape != r.shape or p.ndim != 1 or np.any(p < 0) or not math.isclose(p.sum(), 1.0, rel_tol=1e-9):
        raise ValueError(f"probs must be a distribution with one reward each (got {p.shape}, {r.shape})")
    le_t, lt_t = quantiles(torch.as_tensor(p), torch.as_tensor(r))
    le, lt = le_t.numpy(), lt_t.numpy()
    eq = le - lt
    pi = best_of_n_probs(torch.as_tensor(p), torch.as_tensor(r), n).numpy()
    kl = float(np.sum(np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1.0) / np.where(p > 0, p, 1.0)), 0.0)))
    win = float(np.sum(pi * (lt + 0.5 * eq)))
    return {"probs": pi, "kl": kl, "reward": float(pi @ r), "win_rate": win, "kl_bound": kl_upper_bound(n)}


# ------------------------------------------------------------------ sampling
def _prompt_text(prompt: Any, policy: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if hasattr(policy, "decode"):
        return policy.decode(prompt, skip_special_tokens=True)
    raise TypeError("token-id prompts need prompt_texts= (or a policy with decode) for the reward function")


def _sample(policy, prompts: Sequence[Any], n: int, params, gen_kwargs: Mapping) -> list[list[Any]]:
    """``n`` completions per prompt (prompt-major), as lists per prompt."""
    from seedrl.models.lm.sampler import SamplingParams

    params = replace(params or SamplingParams(), n=n)
    comps = list(policy.generate(list(prompts), params, **gen_kwargs))
    if len(comps) != len(prompts) * n:
        raise ValueError(f"policy.generate returned {len(comps)} completions for {len(prompts)} prompts x n={n}")
    return [comps[i * n:(i + 1) * n] for i in range(len(prompts))]


def _rewards(reward_fn, texts: Sequence[str], groups: Sequence[Sequence[Any]], examples) -> np.ndarray:
    """Rewards ``[P, n]`` of every completion (one batched reward call)."""
    n = len(groups[0]) if groups else 0
    flat_p = [t for t in texts for _ in range(n)]
    flat_e = [e for e in examples for _ in range(n)]
    flat_c = [c.text for g in groups for c in g]
    out = np.asarray(reward_fn(flat_p, flat_c, flat_e), np.float64)
    if out.shape != (len(flat_c),):
        raise ValueError(f"reward_fn returned shape {out.shape}, expected ({len(flat_c)},)")
    if not np.all(np.isfinite(out)):
        i = int(np.flatnonzero(~np.isfinite(out))[0])
        raise ValueError(f"reward_fn returned {out[i]} for completion {i} ({flat_c[i]!r:.60})")
    return out.reshape(len(groups), n)


@dataclass
class BoNResult:
    """Output of :func:`best_of_n`: per prompt the chosen completion, its reward and index,
    and all ``n`` candidates with their rewards (``all_rewards [P, n]``)."""

    completions: list[Any]
    texts: list[str]
    rewards: np.ndarray
    chosen: np.ndarray
    all_rewards: np.ndarray
    candidates: list[list[Any]]


def best_of_n(policy, prompts: Sequence[Any], reward_fn, n: int, params=None, *, examples: Sequence[Mapping] | None = None,
              seed: int = 0, prompt_texts: Sequence[str] | None = None, max_batch: int | None = None) -> BoNResult:
    """Sample ``n`` completions per prompt from ``policy`` (its ``generate(prompts, params)``
    with ``params.n = n``) and keep the highest-reward one; ties are broken uniformly at
    random with ``numpy.random.default_rng(seed)``. ``prompts`` are texts or token-id lists."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    texts = list(prompt_texts) if prompt_texts is not None else [_prompt_text(p, policy) for p in prompts]
    examples = [{} for _ in prompts] if examples is None else list(examples)
    if not (len(texts) == len(examples) == len(prompts)):
        raise ValueError(f"{len(prompts)} prompts, {len(texts)} prompt_texts, {len(examples)} examples")
    groups = _sample(policy, prompts, n, params, {"max_batch": max_batch} if max_batch else {})
    rewards = _rewards(reward_fn, texts, groups, examples)
    rng = np.random.default_rng(seed)
    keys = rng.random(rewards.shape)  # uniform tie-breaking: the largest key among the tied best
    keys[rewards < rewards.max(1, keepdims=True)] = -1.0
    chosen = keys.argmax(1)
    best = [g[j] for g, j in zip(groups, chosen)]
    return BoNResult(best, [c.text for c in best], rewards[np.arange(len(groups)), chosen], chosen, rewards, groups)


# ------------------------------------------------------------------ evaluation
def bon_estimates(pool: np.ndarray, ref: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per-prompt estimates (see the module docstring) from pool rewards ``[P, m]`` and
    independent reference rewards ``[P, k]``: ``reward``, ``kl``, ``win_rate`` (each ``[P]``)."""
    P, m = pool.shape
    k = ref.shape[1]
    if n > m:
        raise ValueError(f"N={n} exceeds the pool of {m} samples per prompt")
    w = bon_pool_weights(torch.from_numpy(np.asarray(pool, np.float64)), n).numpy()
    q_le = (ref[:, None, :] <= pool[:, :, None]).sum(-1)
    q_lt = (ref[:, None, :] < pool[:, :, None]).sum(-1)
    g = log_ratio((q_le + 1) / (k + 1), q_lt / (k + 1), n)
    win = (q_lt + 0.5 * (q_le - q_lt)) / k
    return {"reward": (w * pool).sum(1), "kl": (w * g).sum(1), "win_rate": (w * win).sum(1)}


@dataclass
class BoNEvaluation:
    """Rows per ``N``: ``n``, ``reward`` (+ ``reward_se``), ``kl_bound``, ``kl_estimate``
    (+ ``kl_se``), ``win_rate`` (+ ``win_rate_se``); standard errors over prompts."""

    rows: list[dict[str, float]]
    num_prompts: int
    pool_size: int
    quantile_samples: int
    reference_reward: float
    per_prompt: dict[int, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def row(self, n: int) -> dict[str, float]:
        return next(r for r in self.rows if r["n"] == n)

    def table(self) -> str:
        head = f"{'N':>4} {'reward':>14} {'KL bound':>9} {'KL estimate':>16} {'win rate':>14}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['n']:>4} {r['reward']:>7.4f} ±{r['reward_se']:.4f} {r['kl_bound']:>9.4f} "
                         f"{r['kl_estimate']:>8.4f} ±{r['kl_se']:.4f}  {r['win_rate']:>6.4f} ±{r['win_rate_se']:.4f}")
        lines.append(f"{self.num_prompts} prompts, pool {self.pool_size} samples/prompt, "
                     f"{self.quantile_samples} quantile samples/prompt; reference reward {self.reference_reward:.4f}")
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        return plot_frontier(self, path, title)


def _prompts_of(task: Any, num_prompts: int):
    """(policy inputs, prompt texts, examples) of the first ``num_prompts`` examples."""
    if hasattr(task, "prompt") and hasattr(task, "num_examples"):  # TextTask
        items = [task.prompt(i) for i in range(min(num_prompts, task.num_examples))]
        inputs = [p.tokens if p.tokens is not None else p.text for p in items]
        return inputs, [p.text for p in items], [p.example for p in items]
    examples = list(task)[:num_prompts]
    for i, e in enumerate(examples):
        if not isinstance(e, Mapping) or not isinstance(e.get("prompt"), str):
            raise ValueError(f"example {i}: needs a str 'prompt' field (or pass a TextTask)")
    return [e["prompt"] for e in examples], [e["prompt"] for e in examples], [dict(e) for e in examples]


def evaluate_bon(policy, task, reward_fn, ns: Sequence[int] = (1, 2, 4, 8, 16), num_prompts: int = 64,
                 quantile_samples: int = 32, *, params=None, pool_size: int | None = None,
                 max_batch: int | None = None, plot: str | Path | None = None) -> BoNEvaluation:
    """Mean reward, KL (bound and Monte Carlo estimate) and win rate of BoN for each ``N``.

    ``task`` is a :class:`~seedrl.envs.text.TextTask` (its first ``num_prompts`` examples in
    dataset order; the prompt stream is not advanced) or a list of example dicts with a
    ``prompt`` field. One batched ``generate`` call draws ``pool_size`` (default
    ``max(ns)``) + ``quantile_samples`` completions per prompt; see the module docstring.
    Keep ``params.seed = None`` (the default): every sample then gets its own seed from the
    sampler's generator (reproducible for a freshly loaded policy); one fixed seed would
    give every prompt the same random stream.
    """
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise ValueError(f"ns={ns}: every N must be >= 1")
    m = pool_size or ns[-1]
    if m < ns[-1]:
        raise ValueError(f"pool_size={m} must be >= max(ns)={ns[-1]}")
    if quantile_samples < 1:
        raise ValueError(f"quantile_samples={quantile_samples} must be >= 1")
    inputs, texts, examples = _prompts_of(task, num_prompts)
    if not inputs:
        raise ValueError("evaluate_bon: no prompts")
    from seedrl.models.lm.sampler import SamplingParams

    params = params or SamplingParams()
    groups = _sample(policy, inputs, m + quantile_samples, params, {"max_batch": max_batch} if max_batch else {})
    rewards = _rewards(reward_fn, texts, groups, examples)
    pool, ref = rewards[:, :m], rewards[:, m:]
    rows, per = [], {}
    P = len(inputs)
    for n in ns:
        est = bon_estimates(pool, ref, n)
        per[n] = est
        se = {k: float(v.std(ddof=1) / math.sqrt(P)) if P > 1 else float("nan") for k, v in est.items()}
        rows.append({"n": n, "reward": float(est["reward"].mean()), "reward_se": se["reward"],
                     "kl_bound": kl_upper_bound(n), "kl_estimate": float(est["kl"].mean()), "kl_se": se["kl"],
                     "win_rate": float(est["win_rate"].mean()), "win_rate_se": se["win_rate"]})
    out = BoNEvaluation(rows, P, m, quantile_samples, float(pool.mean()), per)
    if plot is not None:
        out.plot(plot)
    return out


def plot_frontier(evaluation: BoNEvaluation, path: str | Path, title: str | None = None,
                  curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> Path:
    """Reward against KL(BoN || ref): the Monte Carlo estimate (with standard errors) and
    the analytic bound, one point per ``N``; ``curves`` adds trained policies as
    ``label -> (KL to the reference, reward)`` sequences (a training trajectory, or one
    point per run), drawn beside the frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluation.rows
    y = [r["reward"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.errorbar([r["kl_estimate"] for r in rows], y, xerr=[r["kl_se"] for r in rows],
                yerr=[r["reward_se"] for r in rows], marker="o", lw=1.4, capsize=2,
                label="Best-of-N, KL estimate" if curves else "KL estimate")
    ax.plot([r["kl_bound"] for r in rows], y, "s--", lw=1.0, alpha=0.7, label="bound log N - (N-1)/N")
    for r in rows:
        ax.annotate(f"N={r['n']}", (r["kl_estimate"], r["reward"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=8)
    for label, (kls, rewards) in (curves or {}).items():
        ax.plot(kls, rewards, ".-", lw=0.9, ms=3, alpha=0.85, label=label)
        if len(kls):
            ax.plot(kls[-1:], rewards[-1:], "*", ms=9, color=ax.lines[-1].get_color())
    ax.set_xlabel("KL(· || reference) [nats]" if curves else "KL(BoN || reference) [nats]")
    ax.set_ylabel("mean reward")
    ax.set_title(title or f"Best-of-N frontier ({evaluation.num_prompts} prompts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
