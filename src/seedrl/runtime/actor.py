"""The actor: steps a batch of environments and holds no network.

Runs in its own process (embedded backend) or as a remote worker. Each
round trip: write the environments' outputs into its slot, submit, wait for
actions, step. It imports no torch, so starting one is cheap.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

import numpy as np

from seedrl.runtime.transport import ActorSlot

STOP = b"s"
GO = b"g"


@dataclass
class ActorSpec:
    """Everything an actor process needs to start (picklable)."""

    actor_id: int
    env_config: Any
    num_envs: int
    seed: int
    record_path: str | None = None
    record_rate: float = 0.0


def run_actor(spec: ActorSpec, slot: ActorSlot, submit, wait_reply) -> None:
    """The actor loop, transport-agnostic.

    ``submit(payload)`` announces that the slot holds fresh outputs (payload:
    finished episodes as (env, return, length) tuples, or None);
    ``wait_reply()`` blocks until actions are in the slot and returns False
    when the actor must stop.
    """
    from seedrl.envs import make_env_batch

    envs = make_env_batch(spec.env_config, spec.num_envs, spec.seed)
    recorder = None
    if spec.record_path and spec.record_rate > 0:
        from seedrl.runtime.recorder import BatchRecorder

        recorder = BatchRecorder(spec.record_path, spec.num_envs, spec.record_rate, seed=spec.seed, actor_id=spec.actor_id)
    try:
        obs = envs.reset(seed=spec.seed)
        slot.obs[:] = obs
        slot.reward[:] = 0
        slot.first[:] = True
        slot.terminated[:] = False
        slot.truncated[:] = False
        if recorder:
            recorder.start(obs)
        submit(None)
        while wait_reply():
            actions = slot.action.copy()
            result = envs.step(actions)
            slot.obs[:] = result.obs
            slot.reward[:] = result.reward
            slot.terminated[:] = result.terminated
            slot.truncated[:] = result.truncated
            slot.first[:] = np.logical_or(result.terminated, result.truncated)
            for i, final in result.final_obs.items():
                if result.truncated[i]:
                    slot.final_obs[i] = final
            if recorder:
                recorder.step(actions, result)
            submit(list(result.episodes) or None)
    finally:
        if recorder:
            recorder.close()
        envs.close()


def actor_process_main(spec: ActorSpec, slots_name: str, layout, num_actors: int, conn) -> None:
    """Entry point of an embedded actor process: shared-memory slot + pipe."""
    from seedrl.runtime.transport import SharedSlots

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner process handles Ctrl-C and stops us
    slots = SharedSlots(layout, num_actors, name=slots_name)
    slot = slots.slots[spec.actor_id]

    def submit(payload):
        conn.send(payload)

    def wait_reply() -> bool:
        try:
            return conn.recv_bytes() == GO
        except (EOFError, OSError):
            return False

    try:
        run_actor(spec, slot, submit, wait_reply)
    except (BrokenPipeError, EOFError):
        pass
    finally:
        del slot
        slots.close()
        conn.close()
