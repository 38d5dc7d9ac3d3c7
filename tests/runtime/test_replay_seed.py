"""``agent.replay_seed``: a run's recorded episodes seed the next run's replay; a mismatched dataset is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seedrl.config import ConfigError
from seedrl.data import DatasetWriter, StepSpec, open_dataset
from seedrl.runtime.checkpoint import list_checkpoints, replay_path
from seedrl.runtime.loop import train
from seedrl.runtime.replay import SequenceReplay
from seedrl.runtime.replay.from_dataset import episodes_to_stream

from tests.runtime.test_r2d2_runtime import _cfg


def _windows(size: int, length: int, overlap: int) -> int:
    """Sequences of ``length`` entries with stride ``length − overlap`` over a stream of ``size``, plus one
    aligned to its end when the stride does not reach it (every transition stored)."""
    starts = list(range(0, size - length + 1, length - overlap))
    return len(starts) + (starts[-1] != size - length)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The episodes a short MemoryCue R2D2 run recorded (every episode)."""
    tmp = tmp_path_factory.mktemp("recorded")
    cfg = _cfg(tmp, **{"record.rate": 1.0, "name": "rec"})
    train(cfg, max_updates=6)
    path = cfg.run_dir / "episodes"
    assert len(open_dataset(path)) >= 2  # MemoryCue episodes are 7 RLDS steps
    return path


def test_a_recorded_dataset_seeds_the_replay_of_the_next_run(tmp_path, recorded):
    cfg = _cfg(tmp_path, **{"agent.replay_seed": str(recorded), "agent.replay_capacity": 4096, "name": "seeded"})
    length, overlap = cfg.agent.burn_in + cfg.runtime.unroll_length + 1, cfg.agent.burn_in + 1
    dataset = open_dataset(recorded)
    stream, _ = episodes_to_stream(dataset)
    expected = _windows(len(stream["obs"]), length, overlap)
    assert expected >= 2
    train(cfg, max_updates=1)
    replay = SequenceReplay.load(replay_path(list_checkpoints(cfg.run_dir)[-1]))
    assert len(replay) >= expected
    seeded = replay.read(np.arange(expected))  # the seeded stream is inserted first: ids 0 .. expected − 1
    for s in seeded.state0:  # the dataset has no recurrent state: zeros at every window start
        assert torch.count_nonzero(torch.as_tensor(s)) == 0
    starts = np.arange(expected) * (length - overlap)
    starts[-1] = min(starts[-1], len(stream["obs"]) - length)  # the end-aligned window
    for k, s in enumerate(starts):
        for name in ("obs", "action", "reward", "first", "terminated", "truncated"):
            np.testing.assert_array_equal(seeded.arrays[name][:, k], stream[name][s:s + length], err_msg=f"{name} {k}")
    # episode starts inside the stream are marked (the network zeroes its state there)
    episodes = dataset.num_steps - len(dataset)  # each episode of n steps gives n − 1 entries ...
    assert stream["first"][:-1].sum() == len(dataset) and len(stream["obs"]) == episodes + 1  # ... plus a closing one
    assert replay.read(np.arange(expected)).arrays["action"].dtype == np.int64


def test_a_dataset_that_does_not_match_the_env_is_refused_naming_the_key(tmp_path):
    bad = tmp_path / "cartpole_like"
    steps = [{"observation": np.zeros(4, np.float32), "action": np.int64(0), "reward": np.float32(1),
              "discount": np.float32(1), "is_first": i == 0, "is_last": i == 2, "is_terminal": i == 2} for i in range(3)]
    with DatasetWriter(bad, StepSpec.infer(steps[0])) as writer:
        writer.write_episode(steps)
    cfg = _cfg(tmp_path, **{"agent.replay_seed": str(bad), "name": "bad"})
    with pytest.raises(ConfigError, match=r"'agent.replay_seed' = '.*cartpole_like': the dataset's observation is "
                                          r"float32 \(4,\), the env's is float32 \(3,\)"):
        train(cfg, max_updates=1)
    assert not (tmp_path / "bad" / "config.yaml").exists()  # refused before the run wrote anything
    assert not list_checkpoints(tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"'agent.replay_seed' = '.*nowhere' is not a directory"):
        _cfg(tmp_path, **{"agent.replay_seed": str(tmp_path / "nowhere")})  # at load time
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"'agent.replay_seed' = '.*empty': .*not an RLDS dataset"):
        train(_cfg(tmp_path, **{"agent.replay_seed": str(tmp_path / "empty"), "name": "bad3"}), max_updates=1)
