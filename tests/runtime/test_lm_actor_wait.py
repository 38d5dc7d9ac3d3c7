"""An LM actor waiting for central inference: it blocks on its futures, does not poll them."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np
import pytest

from seedrl.runtime.lm_loop import LocalPlay
from seedrl.runtime.lm_updates import Request


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
