"""Weight publication (learner -> central inference) through the mailbox: whole versions, no waiting."""

from __future__ import annotations

import queue
import threading

import gymnasium as gym
import numpy as np
import pytest
import torch

from seedrl.models.config import ModelConfig, build_model
from seedrl.runtime.inference import InferenceServer
from seedrl.runtime.learner import Learner
from seedrl.runtime.transport import ActorSlot, SlotLayout
from seedrl.runtime.weights import SharedWeights, WeightsMailbox

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


class Net(torch.nn.Module):
    """Two layers and a buffer; ``fill(v)`` writes v into every tensor one at a time, as an optimizer step does."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 64)
        self.b = torch.nn.Linear(64, 3)
        self.register_buffer("scale", torch.ones(3))

    def forward(self, x):
        return self.b(self.a(x)) * self.scale

    @torch.no_grad()
    def fill(self, value: float) -> None:
        for t in [*self.parameters(), *self.buffers()]:
            t.fill_(value)


def _values(net: torch.nn.Module) -> set[float]:
    return {float(v) for t in [*net.parameters(), *net.buffers()] for v in torch.unique(t.detach())}


def test_every_applied_version_is_whole_while_the_learner_keeps_writing():
    # The learner writes its own net tensor by tensor (between posts too) while an inference loop
    # applies and runs forward passes: each applied version must be all one value (no torn weights),
    # that value must be the version posted with it, versions never go back, and the forward pass
    # must equal the closed form of a net whose every weight is v.
    learner_net, acting = Net(), Net()
    mailbox = WeightsMailbox()
    done = threading.Event()
    seen: list[int] = []
    problems: list[str] = []
    x = torch.ones(1, 4)

    def inference_loop():
        while True:
            finished = done.is_set()
            version = mailbox.apply(acting)
            if version is not None:
                values = _values(acting)
                if values != {float(version)}:
                    problems.append(f"version {version} applied as values {sorted(values)[:5]}")
                if seen and version <= seen[-1]:
                    problems.append(f"version {version} after {seen[-1]}")
                seen.append(version)
                with torch.no_grad():
                    out = acting(x)
                v = float(version)
                expected = (64 * (4 * v + v) * v + v) * v  # b(a(1)) * scale with every weight v
                if not torch.allclose(out, torch.full_like(out, expected), rtol=1e-5):
                    problems.append(f"version {version}: forward {out.tolist()} != {expected}")
            if finished:
                return

    thread = threading.Thread(target=inference_loop, daemon=True)
    thread.start()
    for version in range(1, 401):
        learner_net.fill(float(version))
        mailbox.post(learner_net, version)
        learner_net.fill(-1.0)  # the next optimizer step starts writing at once: the posted copy must not see it
    done.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert not problems, problems[:5]
    assert seen and seen[-1] == 400  # the last version always arrives
    assert _values(acting) == {400.0}


class BlockingNet(torch.nn.Module):
    """A forward pass that waits until released: inference stuck mid-forward."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, x):
        self.entered.set()
        assert self.release.wait(60)
        return x * self.w


def test_publish_does_not_wait_for_a_forward_pass_in_flight():
    learner_net, acting = BlockingNet(), BlockingNet()
    mailbox = WeightsMailbox()
    learner = Learner(learner_net, mailbox, None, None, queue.Queue(), 1)
    learner.updates = 7

    def inference():
        mailbox.apply(acting)
        with torch.no_grad():
            acting(torch.ones(2))

    forward = threading.Thread(target=inference, daemon=True)
    forward.start()
    assert acting.entered.wait(60)
    with torch.no_grad():
        learner_net.w.fill_(3.0)
    publisher = threading.Thread(target=learner.publish, daemon=True)
    publisher.start()
    publisher.join(timeout=60)
    published_mid_forward = not publisher.is_alive() and not acting.release.is_set()
    acting.release.set()
    forward.join(timeout=60)
    assert published_mid_forward  # publish returned while the forward pass was still running
    assert torch.equal(acting.w, torch.zeros(2))  # the forward pass in flight kept its weights
    assert mailbox.apply(acting) == 7 and torch.equal(acting.w, torch.full((2,), 3.0))
    assert mailbox.apply(acting) is None  # nothing new: nothing copied


def test_central_inference_acts_with_and_stamps_the_posted_version():
    layout = SlotLayout(2, (4,), "float32")
    acting, trained = (build_model(ModelConfig(torso="mlp", hidden=(8,)), OBS, gym.spaces.Discrete(3)).eval()
                       for _ in range(2))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    mailbox = WeightsMailbox()
    q: queue.Queue = queue.Queue()
    server = InferenceServer(acting, layout, 1, 1, q, weights=mailbox)

    class Endpoint:
        slots = [ActorSlot(layout, bytearray(layout.nbytes()))]

        def reply(self, ids):
            pass

    ep = Endpoint()
    ep.slots[0].obs[:] = np.arange(8, dtype=np.float32).reshape(2, 4)
    ep.slots[0].first[:] = True
    mailbox.post(trained, 5)
    server.infer(ep, [0])
    server.infer(ep, [0])
    unroll = q.get_nowait()
    assert unroll.arrays["version"].tolist() == [[5, 5], [5, 5]]
    for name, value in trained.state_dict().items():
        assert torch.equal(acting.state_dict()[name], value), name


def test_a_snapshot_of_another_network_is_refused_by_name():
    mailbox = WeightsMailbox()
    mailbox.post(torch.nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="2 tensors, the network has 4"):
        mailbox.apply(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))


# ---------------------------------------------------------------- SharedWeights (actor-side inference)

def _shared_child(weights, conn) -> None:  # a spawned process: attach by pickle, apply, report
    net = Net()
    net.fill(-1.0)
    version = weights.apply(net)
    conn.send((version, sorted(_values(net)), weights.apply(net)))
    weights.close()


def test_shared_weights_reach_another_process_whole_and_once():
    import multiprocessing as mp

    net = Net()
    net.fill(2.5)
    weights = SharedWeights(net, version=11)
    try:
        parent, child = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(target=_shared_child, args=(weights, child))
        proc.start()
        version, values, again = parent.recv()
        proc.join(30)
        assert (version, values, again) == (11, [2.5], None)  # every tensor, the posted version; nothing new after
    finally:
        weights.close()


def test_shared_weights_apply_only_whole_new_versions():
    source, acting = Net(), Net()
    weights = SharedWeights(source, version=0)
    try:
        assert weights.apply(acting) == 0
        assert weights.apply(acting) is None  # nothing new
        source.fill(3.0)
        weights.post(source, 4)
        assert weights.apply(acting) == 4 and _values(acting) == {3.0}
        # a write in progress (odd sequence number) is never read: the acting network keeps version 4
        source.fill(5.0)
        weights._header[0] += 1
        for dst, src in zip(weights._views, [*source.parameters(), *source.buffers()]):
            dst.copy_(src.detach())
        assert weights.apply(acting) is None and _values(acting) == {3.0}
        weights._header[1] = 5
        weights._header[0] += 1
        assert weights.apply(acting) == 5 and _values(acting) == {5.0}
    finally:
        weights.close()


def test_shared_weights_drop_a_copy_a_write_overlapped(monkeypatch):
    source, acting = Net(), Net()
    acting.fill(1.0)
    source.fill(7.0)
    weights = SharedWeights(source, version=2)
    try:
        header = weights._header

        class Racing(list):  # the learner starts a write while the reader copies the block
            def __iter__(self):
                header[0] += 1
                return super().__iter__()

        views = weights._views
        weights._views = Racing(views)
        assert weights.apply(acting) is None and _values(acting) == {1.0}  # the torn copy was dropped
        header[0] += 1  # the write ends
        weights._views = views
        assert weights.apply(acting) == 2 and _values(acting) == {7.0}
    finally:
        weights.close()
