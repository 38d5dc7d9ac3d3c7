"""Run CleanRL's ``ppo_atari_envpool.py`` unmodified, with two settings aligned to seedrl.

Runs inside the CleanRL peer virtualenv (made by ``benchmarks/peers_pong.py --setup``):

    <venv>/bin/python cleanrl_driver.py <path/to/ppo_atari_envpool.py> [script args...]

* torch intra-op threads: ``PEER_TORCH_THREADS`` (default 2); the script sets none itself.
* sticky actions: ``envpool.make`` gets ``repeat_action_probability=PEER_STICKY`` (default
  0.25, as in seedrl's Pong config) unless the caller passed one; the script exposes no flag.

Everything else (episodic life, reward clipping in the env, PPO hyper-parameters) is the
script's own.
"""

import os
import runpy
import sys

import torch

torch.set_num_threads(int(os.environ.get("PEER_TORCH_THREADS", "2")))

import envpool  # noqa: E402

_make = envpool.make
_sticky = float(os.environ.get("PEER_STICKY", "0.25"))


def _make_sticky(task_id, *args, **kwargs):
    kwargs.setdefault("repeat_action_probability", _sticky)
    return _make(task_id, *args, **kwargs)


envpool.make = _make_sticky

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = [script] + sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
