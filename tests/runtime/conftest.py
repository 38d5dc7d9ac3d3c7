"""Fixtures of the runtime tests."""

from __future__ import annotations

import queue
import threading

import pytest

from seedrl.runtime.actor import ActorSpec
from seedrl.runtime.inference import InferenceServer
from seedrl.runtime.threaded import ThreadedBackend


def _collect_unrolls(model, env_cfg, layout, *, num_actors=2, unroll_length=4, num_unrolls=12, seed=0,
                     actor_seed=lambda a: 1000 * (a + 1)):
    """The first ``num_unrolls`` unrolls central inference builds from threaded actors; returns ``(server, unrolls)``."""
    q: queue.Queue = queue.Queue(maxsize=num_unrolls)
    server = InferenceServer(model, layout, num_actors, unroll_length, q, batch_timeout_s=0.01, seed=seed)
    backend = ThreadedBackend(layout, num_actors, lambda a, r: ActorSpec(a, env_cfg, layout.num_envs, seed=actor_seed(a)))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(backend, stop), daemon=True)
    backend.start()
    thread.start()
    unrolls = [q.get(timeout=60) for _ in range(num_unrolls)]
    stop.set()
    thread.join(5)
    backend.stop()
    assert not backend.errors
    return server, unrolls


@pytest.fixture
def collect_unrolls():
    """``collect_unrolls(model, env_cfg, layout, num_actors=2, unroll_length=4, num_unrolls=12, seed=0, actor_seed=...)``:
    run threaded actors and central inference until ``num_unrolls`` unrolls are out; returns ``(server, unrolls)``."""
    return _collect_unrolls


def _sevens(prompts, completions, examples):
    """Fraction of '7' characters in a completion: a reward a random policy can learn fast."""
    import numpy as np

    return np.array([c.count("7") / max(1, len(c.replace(" ", ""))) for c in completions], dtype=np.float32)


@pytest.fixture
def sevens():
    """A batched reward ``(prompts, completions, examples) -> [N]``: the fraction of '7's."""
    return _sevens


@pytest.fixture(scope="module")
def tiny_arith_assets(tmp_path_factory):
    """A tiny untrained GPT-2 (32 wide, 1 layer) with the arithmetic world's tokenizer."""
    from seedrl.envs.text import build_toy_assets

    return build_toy_assets(tmp_path_factory.mktemp("toy"), world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)
