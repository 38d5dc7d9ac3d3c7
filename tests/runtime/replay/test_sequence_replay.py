"""SequenceReplay: stored sequences against hand-built streams, sampling, weights, FIFO, save/restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.runtime.replay import SequenceReplay
from tests.runtime.replay.streams import ActorStream
from tests.runtime.replay.test_sum_tree import chi2_critical

try:
    import lz4.block  # noqa: F401

    CODECS = ["none", "zlib", "lz4"]
except ImportError:  # the atari extra is not installed
    CODECS = ["none", "zlib"]


def assert_same_unroll(got, want):
    """Byte-for-byte equality of arrays, recurrent state and final observations."""
    assert set(got.arrays) == set(want.arrays)
    for k, v in want.arrays.items():
        assert got.arrays[k].dtype == v.dtype, k
        np.testing.assert_array_equal(got.arrays[k].view(np.uint8), np.ascontiguousarray(v).view(np.uint8), err_msg=k)
    for a, b in zip(got.state0, want.state0, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sorted(got.final_obs) == sorted(want.final_obs)
    for key, o in want.final_obs.items():
        np.testing.assert_array_equal(got.final_obs[key], o)


def column(u, n):
    return u.slice(n, n + 1)


def fill(replay, actors, steps, rng, restart_prob=0.0):
    """Insert ``steps`` unrolls from random actors; returns {id: (actor, env, start)}."""
    where = {}
    for _ in range(steps):
        a = actors[rng.integers(len(actors))]
        start, u = a.next_unroll(restart=bool(rng.random() < restart_prob))
        ids = replay.insert(u, rng.random(a.n) + 0.1)
        for n, i in enumerate(ids):
            where[int(i)] = (a, n, start)
    return where


def check_all_live(replay, where):
    live = np.arange(replay.next_id - len(replay), replay.next_id)
    batch = replay.read(live)
    for b, i in enumerate(live):
        a, n, start = where[int(i)]
        assert_same_unroll(column(batch, b), column(a.window(start), n))


@settings(max_examples=25, deadline=None)
@given(
    burn_in=st.integers(0, 4),
    unroll=st.integers(1, 6),
    stack=st.sampled_from([0, 1, 2, 4]),
    end_prob=st.sampled_from([0.0, 0.2, 0.6]),
    capacity=st.integers(1, 30),
    restart_prob=st.sampled_from([0.0, 0.3]),
    compression=st.sampled_from(CODECS),
    seed=st.integers(0, 1000),
)
def test_stored_sequences_equal_the_hand_built_streams(burn_in, unroll, stack, end_prob, capacity, restart_prob, compression, seed):
    """Overlap, stored states, episode boundaries (first/terminated/truncated and final observations),
    frame de-stacking across episode ends and actor restarts: what comes out is what went in, byte for byte."""
    L, overlap = burn_in + unroll + 1, burn_in + 1
    rng = np.random.default_rng(seed)
    num_envs = int(rng.integers(1, min(3, capacity) + 1))
    actors = [ActorStream(a, num_envs, L, overlap, stack=stack, seed=seed + a, end_prob=end_prob) for a in range(2)]
    replay = SequenceReplay(capacity, L, overlap, seed=seed, compression=compression)
    where = fill(replay, actors, 12, rng, restart_prob)
    assert len(replay) == min(capacity, 12 * num_envs)
    check_all_live(replay, where)


def test_float_observations_round_trip_bytes_exactly():
    """-0.0 == 0.0 and NaN != NaN as floats: de-stacking compares bytes, so both survive exactly."""
    L, overlap = 6, 2
    a = ActorStream(0, 2, L, overlap, stack=3, obs_dtype=np.float32, seed=3)
    a.window(0)
    a.entries[2]["obs"][0, 1] = -0.0 * a.entries[1]["obs"][0, 2]  # breaks the shift by a sign bit only
    a.entries[1]["obs"][0, 2] = 0.0
    a.entries[2]["obs"][1, :] = np.nan
    replay = SequenceReplay(10, L, overlap)
    rng = np.random.default_rng(0)
    where = fill(replay, [a], 4, rng)
    check_all_live(replay, where)


def test_frames_are_stored_once_and_shared_entries_once():
    """A stream of S entries without episode ends stores S entries and S + K - 1 frames, whatever the overlap."""
    L, overlap, K, n = 10, 4, 4, 2
    a = ActorStream(0, n, L, overlap, stack=K, end_prob=0.0, frame=(5, 5))
    replay = SequenceReplay(100, L, overlap)
    for _ in range(6):
        replay.insert(a.next_unroll()[1], np.ones(n))
    entries = L + 5 * (L - overlap)
    mem = replay.memory()
    assert mem["entries"] == n * entries
    assert mem["frames_stored"] == n * (entries + K - 1)
    assert mem["frames"] == n * (entries + K - 1) * 25  # uint8 5x5 frames, no compression
    fields = sum(np.asarray(a.entries[0][f][0]).nbytes for f in a.entries[0] if f != "obs") + 8  # + frame index
    assert mem["fields"] == n * entries * fields
    flat = SequenceReplay(100, L, overlap, frame_stack=False)
    b = ActorStream(0, n, L, overlap, stack=K, end_prob=0.0, frame=(5, 5))
    for _ in range(6):
        flat.insert(b.next_unroll()[1], np.ones(n))
    assert flat.memory()["frames"] == n * entries * K * 25


def test_fifo_eviction_frees_storage_and_ignores_evicted_ids():
    L, overlap, n, cap = 5, 2, 2, 6
    a = ActorStream(0, n, L, overlap, stack=2, end_prob=0.3)
    replay = SequenceReplay(cap, L, overlap)
    rng = np.random.default_rng(0)
    where = fill(replay, [a], 3, rng)
    assert len(replay) == 6
    where.update(fill(replay, [a], 1, rng))  # evicts ids 0 and 1, the oldest
    assert len(replay) == cap and replay.next_id == 8
    with pytest.raises(ValueError, match=r"\[0, 1\] are not stored"):
        replay.read(np.array([0, 1]))
    check_all_live(replay, where)
    before = replay.probabilities(np.arange(2, 8))
    replay.update_priorities(np.array([0, 1]), np.array([100.0, 100.0]))  # evicted: ignored
    np.testing.assert_array_equal(replay.probabilities(np.arange(2, 8)), before)
    with pytest.raises(ValueError, match="never issued"):
        replay.update_priorities(np.array([8]), np.array([1.0]))
    for _ in range(40):
        where.update(fill(replay, [a], 1, rng))
    # Memory stays bounded: live sequences (cap) span at most cap + 1 chunks per stream... plus the stream heads.
    mem = replay.memory()
    assert mem["chunks"] <= cap + n
    assert mem["entries"] <= cap * (L - overlap) + n * L
    check_all_live(replay, where)


def test_sampling_frequencies_follow_p_alpha_and_weights_are_exact():
    L, overlap, n = 3, 1, 4
    a = ActorStream(0, n, L, overlap, stack=0, frame=(2,))
    replay = SequenceReplay(12, L, overlap, alpha=0.7, beta=0.4, seed=5)
    p = np.array([0.5, 1.0, 2.0, 4.0, 0.1, 3.0, 1.5, 0.0, 2.5, 0.7, 6.0, 1.2])
    for k in range(3):
        replay.insert(a.next_unroll()[1], p[4 * k : 4 * k + 4])
    pa = np.maximum(p, 1e-6) ** 0.7
    np.testing.assert_allclose(replay.probabilities(np.arange(12)), pa / pa.sum(), rtol=1e-12)
    counts = np.zeros(12)
    for _ in range(400):
        ids, batch, w = replay.sample(32)
        counts += np.bincount(ids, minlength=12)
        P = pa[ids] / pa.sum()
        want = (1 / (12 * P)) ** 0.4
        np.testing.assert_allclose(w, want / want.max(), rtol=1e-6)
        assert w.dtype == np.float32 and batch.arrays["obs"].shape == (L, 32, 2)
    expected = counts.sum() * pa / pa.sum()
    big = expected > 5  # the clipped priority (p = 0 -> 1e-6) is essentially never drawn
    stat = ((counts[big] - expected[big]) ** 2 / expected[big]).sum()
    assert stat < chi2_critical(int(big.sum()) - 1)
    # Priority updates move the frequencies.
    replay.update_priorities(np.arange(12), np.ones(12))
    replay.update_priorities(np.array([7]), np.array([50.0]))
    q = np.ones(12)
    q[7] = 50.0**0.7
    counts = np.zeros(12)
    for _ in range(300):
        counts += np.bincount(replay.sample(32)[0], minlength=12)
    expected = counts.sum() * q / q.sum()
    assert ((counts - expected) ** 2 / expected).sum() < chi2_critical(11)
    replay.beta = 1.0  # annealing: settable
    ids, _, w = replay.sample(64)
    want = 1 / (12 * q[ids] / q.sum())
    np.testing.assert_allclose(w, want / want.max(), rtol=1e-6)


def test_save_and_load_resume_exactly(tmp_path):
    L, overlap = 6, 3
    rng = np.random.default_rng(2)
    actors = [ActorStream(a, 2, L, overlap, stack=4, seed=a, end_prob=0.2) for a in range(2)]
    replay = SequenceReplay(9, L, overlap, seed=11, compression="zlib")
    fill(replay, actors, 7, rng, 0.2)
    replay.sample(4)
    replay.save(tmp_path / "replay.pkl")
    resumed = SequenceReplay.load(tmp_path / "replay.pkl")
    assert len(resumed) == len(replay) and resumed.next_id == replay.next_id
    for step in range(5):
        (i1, b1, w1), (i2, b2, w2) = replay.sample(5), resumed.sample(5)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(w1, w2)
        assert_same_unroll(b2, b1)
        new = rng.random(5) + 0.1
        replay.update_priorities(i1, new)
        resumed.update_priorities(i2, new)
        start, u = actors[step % 2].next_unroll()
        np.testing.assert_array_equal(replay.insert(u, np.ones(2)), resumed.insert(u, np.ones(2)))
    assert replay.memory() == resumed.memory()
    data = (tmp_path / "replay.pkl").read_bytes()
    (tmp_path / "torn.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="torn.pkl is not a replay written by SequenceReplay.save"):
        SequenceReplay.load(tmp_path / "torn.pkl")
    replay.save(tmp_path / "replay.pkl")  # saving over a previous save replaces it whole
    assert SequenceReplay.load(tmp_path / "replay.pkl").next_id == replay.next_id
    assert not (tmp_path / "replay.pkl.tmp").exists()


def test_bad_input_is_refused_and_nothing_stored_changes():
    L, overlap = 5, 2
    a = ActorStream(0, 2, L, overlap, stack=2)
    replay = SequenceReplay(10, L, overlap)
    _, u = a.next_unroll()
    replay.insert(u, np.ones(2))
    mem, n = replay.memory(), len(replay)
    _, good = a.next_unroll()
    with pytest.raises(ValueError, match=r"priorities\[1\] = nan"):
        replay.insert(good, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="priorities must have one value per sequence"):
        replay.insert(good, np.ones(3))
    bad = a.window(0)
    bad.continues = True  # claims to continue, but its first entries are not the stream's last ones
    with pytest.raises(ValueError, match="continues"):
        replay.insert(bad, np.ones(2))
    short = a.window(0)
    short.arrays = {k: v[:-1] for k, v in short.arrays.items()}
    with pytest.raises(ValueError, match=r"unroll.arrays\['(obs|first)'\] must be \[sequence_length=5"):
        replay.insert(short, np.ones(2))
    odd = a.window(0)
    odd.arrays["reward"] = odd.arrays["reward"].astype(np.float64)
    with pytest.raises(ValueError, match="'reward'"):
        replay.insert(odd, np.ones(2))
    assert replay.memory() == mem and len(replay) == n
    replay.insert(good, np.ones(2))  # the good unroll still continues the stream
    assert replay.memory()["entries"] == 2 * (L + L - overlap)
    with pytest.raises(ValueError, match="beta"):
        replay.beta = 1.5
    with pytest.raises(ValueError, match="empty"):
        SequenceReplay(4, L, overlap).sample(2)
    with pytest.raises(ValueError, match="overlap"):
        SequenceReplay(4, L, L)
    fresh = SequenceReplay(4, L, overlap)
    with pytest.raises(ValueError, match="priorities"):
        fresh.insert(a.window(0), np.array([1.0, -1.0]))
    assert fresh.store.obs_shape is None and len(fresh) == 0  # a refused first insert fixes nothing
    flat = ActorStream(0, 1, L, overlap, stack=0, frame=(3,))
    with pytest.raises(ValueError, match=r"frame_stack=True needs observations \[K > 1, ...\], got obs shape \(3,\)"):
        SequenceReplay(4, L, overlap, frame_stack=True).insert(flat.next_unroll()[1], np.ones(1))


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_frames_round_trip_and_shrink_repetitive_frames(codec):
    L, overlap, n = 8, 3, 2
    class Sparse(ActorStream):  # mostly-zero frames (one random pixel): compressible
        def _frame(self):
            f = np.zeros(self.frame, np.uint8)
            f[tuple(self.rng.integers(0, 16, 2))] = self.rng.integers(1, 255)
            return f

    a = Sparse(0, n, L, overlap, stack=4, frame=(16, 16), end_prob=0.1)
    replay = SequenceReplay(20, L, overlap, compression=codec)
    where = fill(replay, [a], 5, np.random.default_rng(0))
    check_all_live(replay, where)
    mem = replay.memory()
    raw = mem["frames_stored"] * 256
    assert (mem["frames"] == raw) if codec == "none" else (mem["frames"] < raw / 4)


def test_lz4_without_the_package_is_a_one_line_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lz4", None)
    monkeypatch.setitem(sys.modules, "lz4.block", None)
    with pytest.raises(ValueError, match=r"compression 'lz4' needs the lz4 package"):
        SequenceReplay(4, 3, 1, compression="lz4")
    with pytest.raises(ValueError, match="compression must be one of"):
        SequenceReplay(4, 3, 1, compression="gzip")


def test_concurrent_inserts_and_samples_return_exact_sequences():
    """Inference inserting while the learner samples: evictions during a sample never tear a sequence."""
    import threading

    L, overlap, n = 6, 3, 2
    actors = [ActorStream(a, n, L, overlap, stack=4, seed=a, end_prob=0.2, frame=(8, 8)) for a in range(2)]
    replay = SequenceReplay(4, L, overlap, compression="zlib")
    rng = np.random.default_rng(0)
    where = fill(replay, actors, 2, rng)
    done, samples, errors = threading.Event(), [], []

    def learner():
        try:
            while not done.is_set():
                ids, batch, _ = replay.sample(3)
                samples.append((ids, batch))
                replay.update_priorities(ids, np.ones(3))
        except Exception as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=learner)
    thread.start()
    for _ in range(150):
        where.update(fill(replay, actors, 1, rng))
    done.set()
    thread.join(10)
    assert not errors and len(samples) > 0
    for ids, batch in samples:
        for b, i in enumerate(ids):
            a, col, start = where[int(i)]
            assert_same_unroll(column(batch, b), column(a.window(start), col))


def test_unrolls_from_the_runtime_buffer_round_trip():
    """The runtime's own UnrollBuffer (overlap 1 today; R2D2's buffer overlaps by burn-in + 1) feeds the replay."""
    from seedrl.runtime.transport import SlotLayout
    from seedrl.runtime.unrolls import UnrollBuffer

    T, n = 4, 2
    a = ActorStream(3, n, T + 1, 1, stack=4, frame=(6, 6), end_prob=0.2)
    buf = UnrollBuffer(SlotLayout(n, (4, 6, 6), "uint8"), T)
    replay = SequenceReplay(50, T + 1, 1)
    emitted, ids = [], []
    for t in range(20):
        a.window(t)  # makes entry t
        e = {k: v for k, v in a.entries[t].items() if k != "version"}
        finals = {i: o for (s, i), o in a.finals.items() if s == t}
        u = buf.add(e, finals, (torch.from_numpy(a.states[t]),), a.entries[t]["version"][0], a.actor_id)
        if u is not None:
            u.continues = bool(emitted)
            emitted.append(u)
            ids.append(replay.insert(u, np.ones(n)))
    assert replay.memory()["entries"] == n * (1 + T * len(emitted))
    for u, i in zip(emitted, ids):
        assert_same_unroll(replay.read(i), u)


def test_streams_whose_sequences_were_all_evicted_are_dropped():
    """Actors taking turns in a replay too small for both: each continuation finds its stream evicted
    and starts a new one; the old stream objects (and their last observations) must not pile up."""
    L, overlap, n = 5, 2, 2
    actors = [ActorStream(a, n, L, overlap, stack=2, seed=a) for a in range(3)]
    replay = SequenceReplay(n, L, overlap)
    rng = np.random.default_rng(0)
    where = {}
    for k in range(30):
        where.update(fill(replay, [actors[k % 3]], 1, rng))
    assert len(replay.store.streams) <= 3 * n
    check_all_live(replay, where)


@settings(max_examples=40, deadline=None)
@given(
    prios=st.lists(st.floats(0, 100), min_size=1, max_size=12),
    updates=st.lists(st.tuples(st.integers(0, 11), st.floats(0, 100)), max_size=6),
    alpha=st.floats(0, 1.5),
    beta=st.floats(0, 1),
    capacity=st.integers(1, 12),
)
def test_probabilities_and_weights_follow_the_formulas(prios, updates, alpha, beta, capacity):
    a = ActorStream(0, 1, 3, 1, stack=0, frame=(1,))
    replay = SequenceReplay(capacity, 3, 1, alpha=alpha, beta=beta)
    for p in prios:
        replay.insert(a.next_unroll()[1], np.array([p]))
    live = np.arange(len(prios) - min(capacity, len(prios)), len(prios))
    p = {i: max(prios[i], 1e-6) for i in live}
    for i, v in updates:
        replay.update_priorities(np.array([i % len(prios)]), np.array([v]))
        if i % len(prios) in p:
            p[i % len(prios)] = max(v, 1e-6)
    pa = np.array([p[i] ** alpha for i in live])
    np.testing.assert_allclose(replay.probabilities(live), pa / pa.sum(), rtol=1e-9)
    ids, _, w = replay.sample(16)
    assert set(ids) <= set(live.tolist())
    P = np.array([p[i] ** alpha for i in ids]) / pa.sum()
    want = (1 / (len(live) * P)) ** beta
    np.testing.assert_allclose(w, want / want.max(), rtol=1e-5)
