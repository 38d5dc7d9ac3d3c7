"""The sampler in the pattern of on-policy LM runs: a few prompts in flight, each finished one replaced at once.

GKD and PG actors submit one prompt each and submit the next as soon as its completion comes back, so the
generation server admits a prompt or two at most decode steps. This drives ``Sampler`` alone in one thread
that way (``--inflight`` prompts, a finished one's replacement submitted from its callback, so it is admitted
at the next step) and reports CPU milliseconds, decode steps and tokens per completion, after a
1-second warm-up. Prompts are the toy arithmetic world's (``seedrl lm setup-toy --world arith``).

    .venv/bin/python benchmarks/sampler_closed_loop.py --model runs/toy/arith/reference --seconds 4

Compare two trees by running each one's copy with ``PYTHONPATH=<tree>/src``, alternating, on a quiet machine.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from seedrl.models.lm.policy import LMPolicy
from seedrl.models.lm.sampler import Request, Sampler, SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/toy/arith/reference")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(1)
    policy = LMPolicy.from_pretrained(a.model).eval()
    rng = random.Random(0)
    prompts = policy.tokenize_prompts([f"add {rng.randint(0, 99)} {rng.randint(0, 99)} =" for _ in range(64)])
    sampler = Sampler(policy, max_batch=64)
    params = SamplingParams(temperature=1.0, max_new_tokens=a.max_new_tokens)
    done, tokens = [0], [0]

    def replace(handle) -> None:
        done[0] += 1
        tokens[0] += len(handle.result()[0].tokens)
        sampler.submit(Request(prompts[done[0] % len(prompts)], params, replace))

    for i in range(a.inflight):
        sampler.submit(Request(prompts[i], params, replace))
    steps = 0
    for seconds in (1.0, a.seconds):  # warm-up, then the measurement
        t0, cpu0, done0, steps0, tokens0 = time.perf_counter(), time.thread_time(), done[0], steps, tokens[0]
        while time.perf_counter() - t0 < seconds:
            sampler.step()
            steps += 1
    n = done[0] - done0
    print(f"{(time.thread_time() - cpu0) * 1e3 / n:.3f} ms CPU per completion, {(steps - steps0) / n:.2f} decode steps "
          f"per completion, {(tokens[0] - tokens0) / n:.2f} tokens per completion, {n} completions")


if __name__ == "__main__":
    main()
