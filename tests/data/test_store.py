"""The trajectory store: round trips, random access, selection, sampling, bad input."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import make_episode, make_steps, recipe_spec, simple_steps, step_specs

from seedrl.data import (
    Dataset,
    DatasetWriter,
    Episode,
    EpisodeError,
    SpecError,
    StepSpec,
    open_dataset,
)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(recipe=step_specs(), lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_round_trip_is_bit_exact(tmp_path_factory, recipe, lengths, data):
    path = tmp_path_factory.mktemp("ds")
    spec = recipe_spec(recipe)
    episodes = [make_episode(recipe, n, seed=i, agent=f"a{i}", score=float(i) / 3) for i, n in enumerate(lengths)]
    with DatasetWriter(path, spec) as w:
        ids = [w.write_episode(ep) for ep in episodes]
    ds = open_dataset(path)
    assert len(ds) == len(episodes)
    assert ds.num_steps == sum(lengths)
    for ep, got, eid in zip(episodes, ds, ids):
        expected = Episode(ep.spec, ep.columns, {"episode_id": eid, **ep.metadata})
        assert got.equals(expected)
    # random access by id, in a random order
    order = data.draw(st.permutations(range(len(ids))))
    for i in order:
        assert ds.episode(ids[i]).equals(ds[i])


def test_step_by_step_equals_columns(tmp_path):
    steps = simple_steps(7, seed=3)
    with DatasetWriter(tmp_path / "a") as w:
        with w.episode({"k": 1}) as ep:
            for s in steps:
                ep.append(s)
    with DatasetWriter(tmp_path / "b") as w:
        w.write_episode(steps, metadata={"k": 1})
    a, b = open_dataset(tmp_path / "a")[0], open_dataset(tmp_path / "b")[0]
    assert len(a) == 7
    for name in a.columns:
        np.testing.assert_array_equal(a.columns[name], b.columns[name])
    np.testing.assert_array_equal(a.steps["observation"]["frame"][2], steps[2]["observation"]["frame"])
    assert a[6]["is_last"] and a[6]["is_terminal"] and not a[5]["is_last"]


def test_last_step_kept_exactly_as_given(tmp_path):
    steps = simple_steps(3)
    steps[-1]["action"] = np.int64(2)
    steps[-1]["reward"] = np.float32(7.5)  # D4RL-style real last reward: never zeroed
    with DatasetWriter(tmp_path) as w:
        w.write_episode(steps)
    ep = open_dataset(tmp_path)[0]
    assert ep[-1]["action"] == 2 and ep[-1]["reward"] == np.float32(7.5)


def test_truncated_episode_is_last_without_terminal(tmp_path):
    with DatasetWriter(tmp_path) as w:
        w.write_episode(simple_steps(4, terminal=False))
    ep = open_dataset(tmp_path)[0]
    assert ep.columns["is_last"].tolist() == [False, False, False, True]
    assert not ep.columns["is_terminal"].any()


def test_multi_dimensional_varying_shapes(tmp_path):
    rng = np.random.default_rng(0)
    steps = simple_steps(4)
    for i, s in enumerate(steps):
        s["observation"]["image"] = rng.integers(0, 9, (i + 1, 3 - i % 2, 2), dtype=np.int16)
    spec = StepSpec.infer(steps, varying=["observation/image"])
    assert spec.field("observation/image").shape == (None, None, None)
    with DatasetWriter(tmp_path, spec) as w:
        w.write_episode(steps)
    got = open_dataset(tmp_path)[0].columns["observation/image"]
    for s, g in zip(steps, got):
        np.testing.assert_array_equal(g, s["observation"]["image"])
        assert g.shape == s["observation"]["image"].shape


def test_infer_marks_dimensions_that_vary():
    steps = simple_steps(3)
    for i, s in enumerate(steps):
        s["tokens"] = np.arange(i + 1, dtype=np.int32)
    spec = StepSpec.infer(steps)
    assert spec.field("tokens").shape == (None,)
    assert spec.field("observation/frame").shape == (4, 4)


def test_numeric_columns_are_zero_copy_views_of_the_map(tmp_path):
    steps = simple_steps(5, frame=(84, 84))
    steps[0]["observation"]["frame"][:] = 7
    with DatasetWriter(tmp_path) as w:
        w.write_episode(steps)
    frames = open_dataset(tmp_path)[0].columns["observation/frame"]
    assert not frames.flags.owndata and not frames.flags.writeable
    # Change the bytes on disk under the reader: a view of the shared map sees it, a copy would not.
    (segment,) = (tmp_path / "segments").glob("*.arrow")
    where = segment.read_bytes().find(b"\x07" * 84 * 84)
    fd = os.open(segment, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\x09", where)
    finally:
        os.close(fd)
    assert frames[0, 0, 0] == 9 and frames[0, 0, 1] == 7


def test_select_reads_only_chosen_fields(tmp_path):
    with DatasetWriter(tmp_path) as w:
        w.write_episode(simple_steps(5))
    ds = open_dataset(tmp_path, fields=["observation/pos", "reward"])
    ep = ds[0]
    assert set(ep.columns) == {"observation/pos", "reward"}
    assert set(ep.steps) == {"observation", "reward"} and set(ep.steps["observation"]) == {"pos"}
    with pytest.raises(KeyError, match="nope"):
        open_dataset(tmp_path).select(["nope"])


def test_filter_by_metadata_without_reading_steps(tmp_path):
    with DatasetWriter(tmp_path) as w:
        for i in range(10):
            w.write_episode(simple_steps(2 + i % 3, seed=i), metadata={"agent": "ab"[i % 2], "i": i})
    ds = open_dataset(tmp_path)
    odd = ds.filter(lambda m: m["agent"] == "b")
    assert [e.metadata["i"] for e in odd] == [1, 3, 5, 7, 9]
    assert odd.num_steps == sum(2 + i % 3 for i in (1, 3, 5, 7, 9))


def test_steps_iterate_in_order(tmp_path):
    all_steps = []
    with DatasetWriter(tmp_path) as w:
        for i in range(3):
            s = simple_steps(i + 2, seed=i)
            all_steps += s
            w.write_episode(s)
    got = list(open_dataset(tmp_path).steps())
    assert len(got) == len(all_steps)
    for g, s in zip(got, all_steps):
        np.testing.assert_array_equal(g["observation"]["frame"], s["observation"]["frame"])
        assert g["is_first"] == s["is_first"]


def test_sample_sequences_never_cross_episodes(tmp_path):
    lengths = [3, 1, 8, 5]
    with DatasetWriter(tmp_path) as w:
        for i, n in enumerate(lengths):
            steps = simple_steps(n, seed=i)
            for t, s in enumerate(steps):
                s["observation"]["pos"] = np.array([i, t], dtype=np.float64)  # tag: (episode, step)
            w.write_episode(steps)
    ds = open_dataset(tmp_path)
    cols, mask = ds.sample_sequences(400, 4, rng=0)
    tags = cols["observation/pos"]
    starts = set()
    for b in range(400):
        ep, t0 = tags[b, 0].astype(int)
        starts.add((ep, t0))
        valid = min(4, lengths[ep] - t0)
        assert mask[b].tolist() == [True] * valid + [False] * (4 - valid)
        np.testing.assert_array_equal(tags[b, :valid, 1], np.arange(t0, t0 + valid))
        assert (tags[b, :valid, 0] == ep).all()
        assert (tags[b, valid:] == 0).all() and not cols["is_first"][b, valid:].any()
    assert starts == {(e, t) for e, n in enumerate(lengths) for t in range(n)}  # every start is reachable


def test_sample_steps_is_uniform_over_steps(tmp_path):
    lengths = [1, 9]
    with DatasetWriter(tmp_path) as w:
        for i, n in enumerate(lengths):
            steps = simple_steps(n, seed=i)
            for s in steps:
                s["observation"]["pos"] = np.array([i, 0.0])
            w.write_episode(steps)
    cols = open_dataset(tmp_path).sample_steps(4000, rng=1)
    frac = (cols["observation/pos"][:, 0] == 0).mean()
    assert abs(frac - 0.1) < 0.03  # one step in ten belongs to the short episode


def test_reopen_appends_and_ids_are_unique(tmp_path):
    ids = []
    for round_ in range(3):
        with DatasetWriter(tmp_path) as w:
            ids += [w.write_episode(simple_steps(2, seed=i)) for i in range(4)]
    ds = open_dataset(tmp_path)
    assert len(ds) == 12 and len(set(ids)) == 12
    assert ds.episode_ids == ids


def test_close_is_idempotent_and_writing_after_close_fails(tmp_path):
    w = DatasetWriter(tmp_path)
    w.write_episode(simple_steps(2))
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write_episode(simple_steps(2))
    assert len(open_dataset(tmp_path)) == 1


def test_threads_write_concurrently(tmp_path):
    def work(k: int) -> None:
        with DatasetWriter(tmp_path) as w:  # one segment per writer, no global lock
            for i in range(10):
                w.write_episode(simple_steps(3, seed=k * 100 + i), metadata={"k": k, "i": i})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ds = open_dataset(tmp_path)
    assert len(ds) == 60
    for ep in ds:
        ref = simple_steps(3, seed=ep.metadata["k"] * 100 + ep.metadata["i"])
        np.testing.assert_array_equal(ep.columns["observation/pos"], np.stack([s["observation"]["pos"] for s in ref]))


def test_one_writer_shared_by_threads(tmp_path):
    with DatasetWriter(tmp_path) as w:
        def work(k):
            for i in range(20):
                with w.episode({"k": k}) as ep:
                    for s in simple_steps(3, seed=k * 100 + i):
                        ep.append(s)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(open_dataset(tmp_path)) == 80


# ------------------------------------------------------------------ bad input


def _written(path) -> list[Episode]:
    return list(open_dataset(path))


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda s: s[1].pop("reward"), SpecError, "reward"),
        (lambda s: s[1].update(reward=np.float64(1.0)), SpecError, "'reward'.*float32.*float64"),
        (lambda s: s[1]["observation"].update(pos=np.zeros(3)), SpecError, "'observation/pos'.*shape"),
        (lambda s: s[1]["observation"].update(extra=1), SpecError, "observation/extra"),
        (lambda s: s[1].update(is_last=True), EpisodeError, "is_last"),
        (lambda s: s[1].update(is_first=True), EpisodeError, "is_first"),
        (lambda s: s[0].update(is_first=False), EpisodeError, "is_first"),
        (lambda s: s[1].update(is_terminal=True), EpisodeError, "is_terminal"),
    ],
)
def test_bad_episodes_are_refused_and_nothing_is_lost(tmp_path, mutate, error, match):
    with DatasetWriter(tmp_path) as w:
        w.write_episode(simple_steps(3, seed=1))
    before = _written(tmp_path)
    steps = simple_steps(3, seed=2)
    mutate(steps)
    with DatasetWriter(tmp_path) as w:
        with pytest.raises(error, match=match):
            w.write_episode(steps)
        with pytest.raises(error, match=match):
            with w.episode() as ep:
                for s in steps:
                    ep.append(s)
        w.write_episode(simple_steps(2, seed=3))  # the writer still works afterwards
    after = _written(tmp_path)
    # Step by step, an early is_last legitimately commits a shorter episode before the error.
    assert len(after) == (3 if match == "is_last" else 2) and after[0].equals(before[0])


def test_step_after_is_last_is_refused(tmp_path):
    steps = simple_steps(2)
    with DatasetWriter(tmp_path) as w:
        ep = w.episode()
        for s in steps:
            ep.append(s)
        with pytest.raises(EpisodeError, match="after is_last"):
            ep.append(steps[0])
    assert len(open_dataset(tmp_path)) == 1


def test_episode_without_is_last_is_dropped_with_error(tmp_path):
    with DatasetWriter(tmp_path) as w:
        w.write_episode(simple_steps(2))
        with pytest.raises(EpisodeError, match="without an is_last"):
            with w.episode() as ep:
                ep.append(simple_steps(3)[0])
    assert len(open_dataset(tmp_path)) == 1


def test_appending_with_a_different_spec_is_refused(tmp_path):
    with DatasetWriter(tmp_path) as w:
        w.write_episode(simple_steps(2))
    other = StepSpec.infer(simple_steps(2, frame=(5, 5)))
    with pytest.raises(SpecError, match="observation/frame"):
        DatasetWriter(tmp_path, other)
    with DatasetWriter(tmp_path) as w, pytest.raises(SpecError, match="observation/frame"):
        w.write_episode(simple_steps(2, frame=(5, 5)))
    assert len(open_dataset(tmp_path)) == 1


def test_metadata_types_stay_consistent(tmp_path):
    with DatasetWriter(tmp_path) as w:
        w.write_episode(simple_steps(2), metadata={"agent_id": "a", "seed": 1})
        with pytest.raises(SpecError, match="'seed'.*int.*float"):
            w.write_episode(simple_steps(2), metadata={"agent_id": "a", "seed": 1.5})
        with pytest.raises(SpecError, match="'other'"):
            w.write_episode(simple_steps(2), metadata={"agent_id": "a", "seed": 1, "other": 2})
        with pytest.raises(SpecError, match="steps"):
            w.write_episode(simple_steps(2), metadata={"steps": 1})


def test_metadata_round_trips_losslessly(tmp_path):
    nan = np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f", np.float64)[0]
    md = {
        "environment_config": json.dumps({"id": "CartPole-v1"}),
        "weights": np.arange(6, dtype=np.float16).reshape(2, 3),
        "nan": float(nan),
        "big": 2**64 - 1,
        "blob": b"\x00\xff",
        "pair": (1, "x"),
        "empty": "",
        "u64": np.uint64(2**64 - 1),
    }
    with DatasetWriter(tmp_path) as w:
        eid = w.write_episode(simple_steps(1), metadata=md)
    got = open_dataset(tmp_path).episode(eid).metadata
    assert got["episode_id"] == eid
    assert np.float64(got["nan"]).tobytes() == nan.tobytes()
    assert got["weights"].dtype == np.float16 and (got["weights"] == md["weights"]).all()
    assert got["u64"] == md["u64"] and isinstance(got["u64"], np.uint64)
    assert got["pair"] == (1, "x") and got["blob"] == b"\x00\xff" and got["big"] == 2**64 - 1


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        Dataset(tmp_path)


def test_durable_writer_round_trips(tmp_path):
    with DatasetWriter(tmp_path, durable=True) as w:
        w.write_episode(simple_steps(3))
    assert open_dataset(tmp_path)[0].columns["is_last"][-1]


def test_reader_sees_episodes_of_a_live_writer(tmp_path):
    w = DatasetWriter(tmp_path)
    w.write_episode(simple_steps(2))
    ds = open_dataset(tmp_path)
    assert len(ds) == 1
    w.write_episode(simple_steps(3))
    assert len(ds.refresh()) == 2
    w.close()
    assert len(ds.refresh()) == 2 and len(ds[1]) == 3


def test_make_steps_helper_covers_every_dtype():
    recipe = {"obs": {"a": ("uint64", (2,)), "b": ("str", ())}, "action": ("float16", ()), "reward": ("float64", (0,)),
              "nested_tuple": True}
    steps = make_steps(recipe, 3, 0)
    assert steps[0]["reward"].shape == (0,) and isinstance(steps[0]["action"], tuple)


def _process_writer(path: str, k: int) -> None:
    with DatasetWriter(path) as w:
        for i in range(8):
            w.write_episode(simple_steps(3, seed=k * 100 + i), metadata={"k": k, "i": i})


def test_processes_write_concurrently(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(str(tmp_path), k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ds = open_dataset(tmp_path)
    assert sorted((e.metadata["k"], e.metadata["i"]) for e in ds) == [(k, i) for k in range(3) for i in range(8)]


def test_a_writer_that_committed_nothing_leaves_an_empty_dataset(tmp_path):
    DatasetWriter(tmp_path / "d").close()
    ds = open_dataset(tmp_path / "d")
    assert len(ds) == 0 and ds.num_steps == 0 and list(ds) == []
    with DatasetWriter(tmp_path / "d") as w:
        w.write_episode(simple_steps(2))
    assert len(open_dataset(tmp_path / "d")) == 1
