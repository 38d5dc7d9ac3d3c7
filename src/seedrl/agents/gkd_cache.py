"""A cached teacher for GKD's supervised part (``seedrl lm cache-teacher``).

The fixed outputs of a text task never change, so neither do the teacher's
distributions over them: :func:`cache_teacher` runs the teacher once over every
example's (prompt, reference + EOS) and stores its top-k next-token distributions
as RLDS in the trajectory store, one single-step episode per example (a completion
step, :mod:`seedrl.envs.text.steps`) with three extra step fields of ``C``
completion tokens:

* ``teacher_logprobs`` float32 ``[C·k]`` (row-major ``[C, k]``): log-probs of the top k;
* ``teacher_indices`` int32 ``[C·k]``: their token ids;
* ``teacher_rest_logprob`` float32 ``[C]``: log of the mass outside them;

and episode metadata ``prompt_index``, ``top_k``, ``temperature``, ``teacher``.
:class:`TeacherCache` reads it back for the learner (``gkd.teacher_cache``): batches
from the dataset then take the teacher's distributions from the cache instead of
the generation server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seedrl.models.lm.policy import TokenDistributions, _length_mask
from seedrl.ops.divergences import TopKTeacher

__all__ = ["TeacherCache", "cache_teacher"]

FIELDS = ("teacher_logprobs", "teacher_indices", "teacher_rest_logprob")


def cache_teacher(cfg, out: str | Path, *, batch_size: int = 16) -> int:
    """Write the teacher's top-``cfg.gkd.top_k`` distributions over the task's fixed outputs
    (``cfg``: an :class:`~seedrl.agents.gkd.LMGKDConfig`) to the dataset ``out``; returns the
    number of episodes written."""
    from seedrl.agents.gkd import GKDUpdate, check_same_vocabulary
    from seedrl.data import DatasetWriter
    from seedrl.envs.text.steps import completion_spec, completion_step
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.runtime.lm_loop import _task_and_reward

    g = cfg.gkd
    if g.top_k < 1:
        raise ValueError(f"gkd.top_k={g.top_k}: the cache stores top-k distributions; give gkd.top_k >= 1")
    teacher = LMPolicy.from_pretrained(cfg.teacher).eval()
    student = LMPolicy.from_pretrained(cfg.policy)
    check_same_vocabulary(student, teacher, cfg.policy, cfg.teacher)
    task, _ = _task_and_reward(cfg, student.tokenizer)
    targets = GKDUpdate.dataset_targets(student.tokenizer, g)
    meta = {"top_k": int(g.top_k), "temperature": float(g.temperature), "teacher": str(cfg.teacher)}
    written = 0
    with DatasetWriter(out) as writer:
        for start in range(0, len(task), batch_size):
            prompts = [task.prompt(i) for i in range(start, min(start + batch_size, len(task)))]
            comps = [targets(p.example) for p in prompts]
            with torch.inference_mode():
                d = teacher.next_token_distributions([p.tokens for p in prompts], comps, temperature=g.temperature,
                                                     top_k=g.top_k)
            t = d.topk
            for b, (p, c) in enumerate(zip(prompts, comps)):
                n = len(c)
                extra = {"teacher_logprobs": t.logprobs[b, :n].reshape(-1).numpy().astype(np.float32),
                         "teacher_indices": t.indices[b, :n].reshape(-1).numpy().astype(np.int32),
                         "teacher_rest_logprob": t.rest_logprob[b, :n].numpy().astype(np.float32)}
                step = completion_step(p.text, np.asarray(p.tokens, np.int32), student.decode(c), np.asarray(c, np.int32),
                                       0.0, extra)
                if writer.spec is None:
                    writer.spec = completion_spec(step)
                writer.write_episode([step], metadata={"prompt_index": int(p.index), **meta})
                written += 1
    return written


class TeacherCache:
    """The cached top-k teacher, by prompt tokens: :meth:`target` gives the fixed output's
    tokens, :meth:`distributions` the teacher's distributions over a batch of them."""

    def __init__(self, path: str | Path, *, temperature: float):
        from seedrl.data import open_dataset

        ds = open_dataset(path)
        self.rows: dict[tuple[int, ...], tuple[list[int], TopKTeacher]] = {}
        self.k = None
        for eid in ds.episode_ids:
            ep = ds.episode(eid)
            k, temp = int(ep.metadata["top_k"]), float(ep.metadata["temperature"])
            if abs(temp - temperature) > 1e-9:
                raise ValueError(f"gkd.temperature={temperature}: the teacher cache {str(path)!r} was made at "
                                 f"temperature {temp}; rebuild it or set gkd.temperature={temp}")
            self.k = k
            step = ep[0]
            comp = [int(x) for x in step["action"]["completion_tokens"]]
            n = len(comp)
            top = TopKTeacher(torch.from_numpy(np.asarray(step["teacher_logprobs"], np.float32).reshape(n, k)),
                              torch.from_numpy(np.asarray(step["teacher_indices"], np.int64).reshape(n, k)),
                              torch.from_numpy(np.asarray(step["teacher_rest_logprob"], np.float32)))
            self.rows[tuple(int(x) for x in step["observation"]["prompt_tokens"])] = (comp, top)
        if not self.rows:
            raise ValueError(f"gkd.teacher_cache={str(path)!r} holds no episodes")

    def target(self, prompt_tokens) -> list[int]:
        key = tuple(prompt_tokens)
        if key not in self.rows:
            raise KeyError(f"prompt of {len(key)} tokens is not in the teacher cache (built for another task?)")
        return self.rows[key][0]

    def distributions(self, prompts) -> TokenDistributions:
        """The cached rows of these prompts, padded to ``[B, L, k]`` (padding masked)."""
        rows = [self.rows[tuple(p)][1] for p in prompts]
        lengths = [r.logprobs.shape[0] for r in rows]
        L, B = max(lengths), len(rows)
        lp, idx, rest = torch.zeros(B, L, self.k), torch.zeros(B, L, self.k, dtype=torch.long), torch.zeros(B, L)
        for b, r in enumerate(rows):
            lp[b, : lengths[b]], idx[b, : lengths[b]], rest[b, : lengths[b]] = r.logprobs, r.indices, r.rest_logprob
        return TokenDistributions(_length_mask(lengths, lp.device), topk=TopKTeacher(lp, idx, rest))
