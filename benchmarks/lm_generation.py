"""Generation throughput: seedrl's continuous-batching sampler vs Hugging Face ``generate``.

Same randomly initialised GPT-2 weights, same prompts (random ids, 32 tokens), 64 new
tokens per sequence (EOS ignored by both so every row produces exactly 64), fp32,
``torch.set_num_threads(2)``:

* ``tiny``: GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=8192), batch 16;
* ``gpt2-small``: GPT2Config() defaults (124M parameters, vocab 50257), batch 8.

HF: ``model.generate(do_sample=True, top_k=0, max_new_tokens=64, use_cache=True)``.
Ours: ``Sampler(policy, max_batch=B).generate(prompts, SamplingParams(temperature=1,
max_new_tokens=64, ignore_eos=True))`` (decoded text and both log-prob lists included);
``seedrl`` is the default sampler (fp32 weights packed into oneDNN's blocked layout, one
extra copy of the projection weights, counted in its peak memory), ``seedrl-nopack`` the
same with ``pack_weights=False`` (no weight copy), ``seedrl-auto`` the default sampler with
``threads="auto"`` (each decode step's intra-op threads measured and chosen by the sampler,
:mod:`seedrl.models.lm.threads`; its JSON rounds record the count chosen). Every system runs
in every round.

The run also measures the machine's streaming read bandwidth (``x.sum()`` over a 512 MiB
fp32 tensor with the same threads, best of 5) and reports the weight bytes each decode
step must stream, so the tokens/s can be set against a memory-bound ceiling.

Every measurement runs in its own subprocess (model load, one warm-up call with 8 new
tokens, one timed call); ``peak MiB`` is that subprocess's peak resident memory over the
warm-up and timed calls (``VmHWM``, reset through ``/proc/self/clear_refs`` after loading)
minus its resident memory after loading the model and touching every weight, i.e. the
working memory of generation (KV cache, logits, temporaries); ``cpu ms/tok`` is the process CPU time (user + sys) of
the timed call per generated token, steadier than wall time on a shared machine. Each
round runs both systems (which goes first alternates); ``--repeats`` rounds (default 3),
medians reported, the speed-up is the median of the per-round wall-time ratios; the best round of
each system is reported too (on a shared machine the best round is the least disturbed).
Both systems' subprocesses run with ``OMP_WAIT_POLICY=PASSIVE`` by default: on an
oversubscribed machine, spinning OpenMP workers otherwise steal the cores the measured
thread needs and 2-thread timings swing by 10x from run to run. Writes
``benchmarks/results/lm_generation.json`` (``lm_generation_{N}thread.json`` for
``--threads N`` other than 2).

    .venv/bin/python benchmarks/lm_generation.py [--repeats 3] [--threads 2] [--only tiny] [--systems hf,seedrl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "lm_generation.json"
CONFIGS = {
    "tiny": ({"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab_size": 8192, "bos_token_id": 0, "eos_token_id": 0}, 16),
    "gpt2-small": ({}, 8),
}
PROMPT_LEN, NEW_TOKENS = 32, 64


class _IdsTokenizer:
    """Stand-in tokenizer (the random models have no trained vocabulary): ids -> text."""

    pad_token_id, eos_token_id = 0, None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def _status_mib(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (Linux), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(system: str, model_dir: str, batch: int, threads: int) -> dict:
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(threads)
    model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    with torch.no_grad():  # fault in (possibly memory-mapped) weights before the memory baseline
        sum(float(p.sum()) for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, model.config.vocab_size, (batch, PROMPT_LEN), generator=g)
    if system == "hf":
        def run(new=NEW_TOKENS):
            with torch.inference_mode():
                out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, top_k=0,
                                     max_new_tokens=new, use_cache=True, pad_token_id=0, eos_token_id=None)
            assert out.shape == (batch, PROMPT_LEN + new), out.shape
    else:
        from seedrl.models.lm.policy import LMPolicy
        from seedrl.models.lm.sampler import Sampler, SamplingParams

        policy = LMPolicy(model, _IdsTokenizer(), pad_token_id=0, eos_token_ids=[])
        sampler = Sampler(policy, max_batch=batch, pack_weights=False if system == "seedrl-nopack" else None,
                          threads="auto" if system == "seedrl-auto" else None)
        ids = prompts.tolist()

        def run(new=NEW_TOKENS):
            out = sampler.generate(ids, SamplingParams(temperature=1.0, max_new_tokens=new, ignore_eos=True))
            assert all(len(c.tokens) == new for c in out)
    base = _status_mib("VmRSS")
    _reset_peak()
    run(8)  # warm-up
    c0, t0 = _cpu_s(), time.perf_counter()
    run()
    dt, cpu = time.perf_counter() - t0, _cpu_s() - c0
    tokens = batch * NEW_TOKENS
    out = {"tokens_per_s": tokens / dt, "seconds": dt, "cpu_ms_per_token": 1e3 * cpu / tokens,
           "peak_mib": _status_mib("VmHWM") - base}
    if system != "hf":
        out["threads_chosen"] = sampler.threads.chosen
    return out


def stream_read_gbps(threads: int, mib: int = 512) -> float:
    """Best-of-5 bandwidth of ``x.sum()`` over a ``mib`` MiB fp32 tensor (GB/s)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mib * (1 << 20) // 4)
    best = float("inf")
    for _ in range(6):
        t0 = time.perf_counter()
        float(x.sum())
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def _spawn(system: str, model_dir: str, batch: int, threads: int, omp_wait_policy: str) -> dict:
    cmd = [sys.executable, __file__, "--child", system, model_dir, str(batch), str(threads)]
    env = dict(os.environ)
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=sorted(CONFIGS))
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY of both systems' subprocesses ('' = library default, which spins)")
    ap.add_argument("--systems", default="hf,seedrl,seedrl-nopack",
                    help="comma-separated: hf, seedrl, seedrl-nopack, seedrl-auto (hf is always run: ratios are against it)")
    ap.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/lm_generation[_...].json)")
    ap.add_argument("--child", nargs=4)
    args = ap.parse_args()
    if args.child:
        system, model_dir, batch, threads = args.child
        print(json.dumps(child(system, model_dir, int(batch), int(threads))))
        return
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    systems = ["hf"] + [x for x in args.systems.split(",") if x and x != "hf"]
    ours_all = systems[1:]
    gbps = stream_read_gbps(args.threads)
    print(f"stream read bandwidth ({args.threads} threads): {gbps:.1f} GB/s", flush=True)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "threads": args.threads,
                           "omp_wait_policy": args.omp_wait_policy, "stream_read_gbps": gbps},
               "command": " ".join([Path(sys.executable).name] + sys.argv), "configs": {}}
    for name, (over, batch) in CONFIGS.items():
        if args.only and name != args.only:
            continue
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(**over))
        params = sum(p.numel() for p in model.parameters())
        # fp32 bytes one decode step streams: every projection weight once, plus lm_head (tied to wte)
        step_bytes = 4 * (sum(m.weight.numel() for m in model.transformer.h.modules() if hasattr(m, "nf"))
                          + model.lm_head.weight.numel())
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            del model
            rounds = []
            for r in range(args.repeats):
                order = systems[r % len(systems):] + systems[: r % len(systems)]
                res = {x: _spawn(x, tmp, batch, args.threads, args.omp_wait_policy) for x in order}
                res["ratio"] = {x: res[x]["tokens_per_s"] / res["hf"]["tokens_per_s"] for x in ours_all}
                rounds.append(res)
                print(f"{name} round {r}: " + ", ".join(
                    f"{x} {res[x]['tokens_per_s']:.0f} tok/s ({res[x]['cpu_ms_per_token']:.2f} cpu ms/tok"
                    + ("" if x == "hf" else f", x{res['ratio'][x]:.2f}") + ")" for x in systems), flush=True)
        med = lambda sys_, key: statistics.median(x[sys_][key] for x in rounds)  # noqa: E731
        c = results["configs"][name] = {
            "params": params, "batch": batch, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
            "weight_bytes_per_step": step_bytes,
            "memory_bound_tokens_per_s": batch * gbps * 1e9 / step_bytes, "rounds": rounds}
        for x in systems:
            key = x.replace("-", "_")
            c[f"{key}_tokens_per_s"] = med(x, "tokens_per_s")
            c[f"{key}_cpu_ms_per_token"] = med(x, "cpu_ms_per_token")
            c[f"{key}_peak_mib"] = med(x, "peak_mib")
            c[f"{key}_best_tokens_per_s"] = max(r_[x]["tokens_per_s"] for r_ in rounds)
            if x != "hf":
                c[f"speedup_{key}" if x != "seedrl" else "speedup"] = statistics.median(r_["ratio"][x] for r_ in rounds)
                c[f"speedup_best_{key}" if x != "seedrl" else "speedup_best"] = (
                    c[f"{key}_best_tokens_per_s"] / c["hf_best_tokens_per_s"])
    print("\n| model | params | batch | threads | system | tok/s | speed-up vs HF (median of rounds) | cpu ms/tok | "
          "peak MiB | best-round tok/s | memory-bound ceiling tok/s |\n" + "|---" * 11 + "|")
    for name, c in results["configs"].items():
        for x in systems:
            key = x.replace("-", "_")
            sp = "1" if x == "hf" else f"{c['speedup' if x == 'seedrl' else 'speedup_' + key]:.2f}x"
            print(f"| {name} | {c['params'] / 1e6:.1f}M | {c['batch']} | {args.threads} | {x} | "
                  f"{c[key + '_tokens_per_s']:.0f} | {sp} | {c[key + '_cpu_ms_per_token']:.2f} | "
                  f"{c[key + '_peak_mib']:.0f} | {c[key + '_best_tokens_per_s']:.0f} | "
                  f"{c['memory_bound_tokens_per_s']:.0f} |")
    out = RESULTS if args.threads == 2 else RESULTS.with_name(f"lm_generation_{args.threads}thread.json")
    if args.only:
        out = out.with_name(out.stem + f"_{args.only}.json")
    out = args.out or out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
