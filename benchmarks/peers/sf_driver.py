"""Run Sample Factory 2's Atari example (``sf_examples.atari.train_atari``) with seedrl's settings.

Runs inside the Sample Factory peer virtualenv (made by ``benchmarks/peers_pong.py --setup``):

    <venv>/bin/python sf_driver.py --env=atari_pong --device=cpu [sample-factory args...]

Sample Factory starts its workers with ``spawn``, which re-imports this file in each child,
so the patches below sit at module level and apply in every process:

* ``import ale_py`` registers the ALE ids (``PongNoFrameskip-v4``) with gymnasium 0.29;
* sticky actions: ``gym.make`` of a ``*NoFrameskip-v4`` id gets
  ``repeat_action_probability=PEER_STICKY`` (default 0.25, as in seedrl's Pong config);
  Sample Factory's Atari example has no flag for it;
* the learner's torch intra-op threads: ``PEER_TORCH_THREADS`` (default 2; Sample Factory
  pins its learner and inference workers to 1). Rollout/inference workers keep 1.
"""

import os
import sys

import ale_py  # noqa: F401  (registers the ALE environments)
import gymnasium as gym

_sticky = float(os.environ.get("PEER_STICKY", "0.25"))
_threads = int(os.environ.get("PEER_TORCH_THREADS", "2"))
_make = gym.make


def _make_sticky(env_id, *args, **kwargs):
    if isinstance(env_id, str) and env_id.endswith("NoFrameskip-v4"):
        kwargs.setdefault("repeat_action_probability", _sticky)
    return _make(env_id, *args, **kwargs)


gym.make = _make_sticky

import sample_factory.algo.learning.learner_worker as _learner_worker  # noqa: E402

_init_torch_runtime = _learner_worker.init_torch_runtime


def _init_learner_torch(cfg, max_num_threads=1):
    return _init_torch_runtime(cfg, max_num_threads=_threads)


_learner_worker.init_torch_runtime = _init_learner_torch

if __name__ == "__main__":
    from sf_examples.atari.train_atari import main

    sys.exit(main())
