"""What overlaps the generation server in an LM run: actors block on their futures (no polling);
the learner's weight push is copied while the next loss is computed, never while the optimizer steps."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from seedrl.agents.gkd import LMGKDConfig  # noqa: E402
from seedrl.config import load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.models.lm.policy import LMPolicy  # noqa: E402
from seedrl.models.lm.server import GenerationServer  # noqa: E402
from seedrl.runtime.lm_loop import LocalPlay, train_lm  # noqa: E402
from seedrl.runtime.lm_updates import Request  # noqa: E402


class FutureServer:
    """A generation server whose futures the test resolves by hand."""

    def __init__(self):
        self.futures: list[Future] = []

    def submit(self, model, prompt_ids, params) -> Future:
        fut: Future = Future()
        self.futures.append(fut)
        return fut


class CountingStop(threading.Event):
    """A stop event that counts how often the actor looked at it (one look per wake-up)."""

    def __init__(self):
        super().__init__()
        self.looks = 0

    def is_set(self) -> bool:
        self.looks += 1
        return super().is_set()


PROMPT = SimpleNamespace(tokens=[1, 2], text="1+1=", example={"answer": "2"})


def zero_reward(prompts, completions, examples):
    return np.zeros(len(completions), np.float32)


def start(play, stop):
    out: dict = {}

    def run():
        try:
            out["group"] = play(PROMPT, stop)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_play_waits_for_every_request_and_keeps_their_order():
    server = FutureServer()
    play = LocalPlay(server, zero_reward, [(Request("policy", 2), None), (Request("teacher", 0), None),
                                          (Request("anchor", 1), None)])
    thread, out = start(play, threading.Event())
    threading.Event().wait(0.05)
    assert len(server.futures) == 2  # a request for 0 samples submits nothing
    server.futures[1].set_result([SimpleNamespace(text="b")])
    thread.join(0.3)
    assert thread.is_alive()  # the first request is still pending
    server.futures[0].set_result([SimpleNamespace(text="a0"), SimpleNamespace(text="a1")])
    thread.join(5)
    group = out["group"]
    assert [c.text for c in group.completions] == ["a0", "a1"]
    assert group.anchor_completions == []  # the second request (n = 0) contributed no samples


def test_a_failed_request_reaches_the_actor():
    server = FutureServer()
    play = LocalPlay(server, zero_reward, [(Request("policy", 1), None)])
    thread, out = start(play, threading.Event())
    threading.Event().wait(0.05)
    server.futures[0].set_exception(RuntimeError("inference died"))
    thread.join(5)
    with pytest.raises(RuntimeError, match="inference died"):
        raise out["error"]


def test_stop_ends_a_wait_that_would_never_end_and_the_wait_does_not_poll():
    server = FutureServer()
    stop = CountingStop()
    play = LocalPlay(server, zero_reward, [(Request("policy", 1), None)])
    thread, out = start(play, stop)
    threading.Event().wait(0.5)
    # blocked on the future with a 0.1 s timeout: ~5 looks; a 1 ms polling loop makes hundreds
    assert stop.looks <= 20, stop.looks
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and out == {"group": None}


def test_weight_pushes_are_copied_whole_and_the_run_ends_with_the_final_weights(tmp_path, monkeypatch):
    """A push reaches the server whenever the server gets to it (here: 50 ms late, while the server
    keeps generating); until then the learner's weights must still equal what it pushed, and the
    served policy ends the run on the final weights."""
    student = build_toy_assets(tmp_path / "student", world="arithmetic", seed=0, n_embd=16, n_layer=1, n_head=2)
    teacher = build_toy_assets(tmp_path / "teacher", world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)
    torn, served = [], []
    push, load = GenerationServer.update_weights, LMPolicy.load_state_dict_from

    def late_push(self, model, weights, *, wait=True, timeout=None):
        if not isinstance(weights, LMPolicy):
            return push(self, model, weights, wait=wait, timeout=timeout)
        sent = {k: v.clone() for k, v in weights.model.state_dict().items()}
        out: Future = Future()

        def deliver():
            time.sleep(0.05)
            now = weights.model.state_dict()
            torn.extend(k for k, v in sent.items() if not torch.equal(now[k], v))
            push(self, model, weights, wait=False).add_done_callback(lambda f: out.set_result(f.result()))

        threading.Thread(target=deliver, daemon=True).start()
        return out.result(timeout) if wait else out

    def copy(self, other):
        served[:] = [self]
        return load(self, other)

    monkeypatch.setattr(GenerationServer, "update_weights", late_push)
    monkeypatch.setattr(LMPolicy, "load_state_dict_from", copy)
    # GKD asks the server for the teacher's distributions a batch ahead: its learner never waits on the server
    cfg = load_config(LMGKDConfig, {
        "name": "gkd", "out_dir": str(tmp_path), "policy": str(student.path), "teacher": str(teacher.path),
        "task": {"world": "arithmetic", "num_examples": 50}, "sampling": {"max_new_tokens": 4},
        "gkd": {"samples_per_prompt": 2}, "steps": 6, "prompts_per_step": 2, "optim": {"lr": 1e-2},
        "runtime": {"num_actors": 2}, "log": {"progress": False, "every": 1},
    })
    rows: list[dict] = []
    train_lm(cfg, on_step=rows.append)
    assert len(rows) == 6 and not torn, torn
    final = LMPolicy.from_pretrained(tmp_path / "gkd" / "final").model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in served[0].model.state_dict().items())
    assert [r["policy_lag"] >= 0 for r in rows] == [True] * 6
