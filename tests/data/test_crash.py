"""Crash safety: a writer killed with SIGKILL at any moment loses nothing it committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from strategies import simple_steps

from seedrl.data import DatasetWriter, TornTailWarning, open_dataset
from seedrl.data.segment import list_segments, segment_paths

WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from strategies import simple_steps
    from seedrl.data import DatasetWriter
    w = DatasetWriter({path!r})
    i = 0
    while True:
        eid = w.write_episode(simple_steps(20, seed=i, frame=(84, 84)), metadata={{"i": i}})
        print(eid, i, flush=True)
        i += 1
    """
)


def _run_and_kill(path, delay: float) -> dict:
    code = WRITER.format(tests=os.path.dirname(__file__), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    committed = {}
    deadline = time.monotonic() + 60
    # wait for the first commit, then let it run `delay` more seconds
    line = proc.stdout.readline()
    assert line, "writer process died before committing anything"
    eid, i = line.split()
    committed[eid] = int(i)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # only whole lines are acknowledgements: the kill can cut the last print short
    for line in proc.stdout.read().splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            eid, i = line.split()
            committed[eid] = int(i)
    assert time.monotonic() < deadline
    return committed


def _check_committed(path, committed: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        ds = open_dataset(path)
    got = set(ds.episode_ids)
    assert set(committed) <= got, "an episode acknowledged before the kill is missing"
    assert len(got) - len(committed) <= 1  # at most the one in flight when killed, if it completed
    for eid, i in committed.items():
        ep = ds.episode(eid)
        ref = simple_steps(20, seed=i, frame=(84, 84))
        np.testing.assert_array_equal(ep.columns["observation/frame"], np.stack([s["observation"]["frame"] for s in ref]))
        assert ep.metadata["i"] == i


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13, 0.31])
def test_sigkill_keeps_every_committed_episode(tmp_path, delay):
    committed = _run_and_kill(tmp_path, delay)
    _check_committed(tmp_path, committed)
    # Reopening for append repairs the dead segment and keeps everything.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        with DatasetWriter(tmp_path) as w:
            extra = w.write_episode(simple_steps(20, seed=999, frame=(84, 84)), metadata={"i": 999})
    committed[extra] = 999
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)  # repaired: no torn tail is left
        _check_committed(tmp_path, committed)


def _tear(path) -> tuple[str, int]:
    """Cut the last episode of the only segment in half, as a kill mid-write would."""
    (seg,) = list_segments(path)
    arrow, index = segment_paths(path, seg)
    lines = index.read_text().splitlines()
    last = lines[-1]
    import json

    entry = json.loads(last)
    os.truncate(arrow, entry["o"] + entry["n"] // 2)
    index.write_text("\n".join(lines[:-1]) + "\n")
    return seg, entry["n"] // 2


def test_torn_tail_is_detected_and_set_aside(tmp_path):
    with DatasetWriter(tmp_path) as w:
        ids = [w.write_episode(simple_steps(5, seed=i), metadata={"i": i}) for i in range(4)]
    seg, torn = _tear(tmp_path)
    with pytest.warns(TornTailWarning, match="torn"):
        ds = open_dataset(tmp_path)
    assert ds.episode_ids == ids[:3]
    with pytest.warns(TornTailWarning, match="set aside"):
        DatasetWriter(tmp_path).close()
    (aside,) = (tmp_path / "set_aside").iterdir()
    assert aside.name.startswith(seg) and aside.suffix == ".torn" and aside.stat().st_size == torn
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        assert open_dataset(tmp_path).episode_ids == ids[:3]


def test_lost_index_is_rebuilt_from_the_stream(tmp_path):
    with DatasetWriter(tmp_path) as w:
        ids = [w.write_episode(simple_steps(3, seed=i), metadata={"i": i}) for i in range(5)]
    (seg,) = list_segments(tmp_path)
    segment_paths(tmp_path, seg)[1].unlink()
    ds = open_dataset(tmp_path)
    assert ds.episode_ids == ids and [e.metadata["i"] for e in ds] == list(range(5))
    DatasetWriter(tmp_path).close()  # repair rewrites the index
    assert segment_paths(tmp_path, seg)[1].exists()
    assert open_dataset(tmp_path).episode_ids == ids
