"""The PyTorch data path (seedrl.data.torch): windows, steps and episodes against brute-force slicing
of the episodes; every window exactly once per epoch with 0, 2 and 4 DataLoader workers and over 2
simulated ranks; seeded; resumable mid-epoch; picklable without memory maps."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from seedrl.data import DataError, DatasetWriter, open_dataset
from seedrl.data.spec import tree_flatten
from seedrl.data.torch import (
    EpisodeDataset,
    ShardedStream,
    StepDataset,
    StoreLoader,
    WindowDataset,
    pad_episodes,
)

LENGTHS = [5, 1, 7, 3, 9, 2, 6, 4]
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 4 workers on 2 cores: slow, fine


def episode_steps(n: int, first_uid: int) -> list[dict]:
    """Steps whose observation/uid is unique over the dataset (it names a window by its first step)."""
    return [
        {
            "observation": {"uid": np.int64(first_uid + t), "frame": np.full((2, 3), (first_uid + t) % 251, np.uint8)},
            "action": (np.int32(t), np.float64(t / 3)),
            "reward": np.float32(t * 0.5),
            "discount": np.float32(0.0 if t == n - 1 else 1.0),
            "is_first": t == 0,
            "is_last": t == n - 1,
            "is_terminal": t == n - 1,
        }
        for t in range(n)
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch") / "ds"
    uid = 0
    episodes = []
    with DatasetWriter(path) as w:
        for i, n in enumerate(LENGTHS):
            steps = episode_steps(n, uid)
            uid += n
            episodes.append(steps)
            w.write_episode(steps, metadata={"episode_id": f"e{i}", "good": i % 2 == 0})
    return path, episodes


def brute_windows(episodes, length, shift, stride, boundary):
    """Every window, in order, by slicing the episodes' step lists."""
    out = []
    for steps in episodes:
        for s in range(0, len(steps), shift):
            picked = steps[s::stride][:length]
            if boundary == "drop" and len(picked) < length:
                continue
            out.append(picked)
    return out


def first_uids(batches) -> list[int]:
    """Window ids (their first step's uid) of the batches a loader delivered, in order."""
    return [int(u) for steps, _ in batches for u in steps["observation"]["uid"][:, 0]]


@pytest.mark.parametrize("length, shift, stride, boundary", [
    (3, None, 1, "pad"), (3, 1, 1, "pad"), (4, 2, 2, "pad"), (2, 3, 1, "drop"), (3, 1, 2, "drop"), (1, 1, 1, "pad"),
])
def test_windows_and_masks_match_brute_force_slicing(store, length, shift, stride, boundary):
    path, episodes = store
    ds = WindowDataset(path, length, shift=shift, stride=stride, boundary=boundary)
    expected = brute_windows(episodes, length, shift or length, stride, boundary)
    assert len(ds) == len(expected)
    for w, picked in enumerate(expected):
        steps, mask = ds[w]
        k = len(picked)
        assert mask.tolist() == [True] * k + [False] * (length - k)
        uid = steps["observation"]["uid"]
        assert uid.dtype == torch.int64 and uid.tolist() == [int(s["observation"]["uid"]) for s in picked] + [0] * (length - k)
        frame = steps["observation"]["frame"]
        assert frame.shape == (length, 2, 3) and frame.dtype == torch.uint8
        assert np.array_equal(frame[:k].numpy(), np.stack([s["observation"]["frame"] for s in picked]))
        assert not frame[k:].any()
        a0, a1 = steps["action"]  # a tuple stays a tuple
        assert a1.dtype == torch.float64 and a1[:k].tolist() == [float(s["action"][1]) for s in picked]
        assert steps["is_first"][:k].tolist() == [bool(s["is_first"]) for s in picked]
        assert steps["reward"].dtype == torch.float32


def test_batched_window_fetch_equals_default_collate(store):
    path, _ = store
    items = WindowDataset(path, 4, shift=3, stride=2)
    picks = np.random.default_rng(0).permutation(len(items))[:7]
    (fast, fast_mask), (ref, ref_mask) = items.fetch(picks), default_collate([items[int(i)] for i in picks])
    assert torch.equal(fast_mask, ref_mask) and not fast_mask.all()
    flat = [tree_flatten(x)[1] for x in (fast, ref)]
    assert flat[0].keys() == flat[1].keys()
    for p in flat[0]:
        assert flat[0][p].dtype == flat[1][p].dtype and torch.equal(flat[0][p], flat[1][p]), p
    assert isinstance(fast["action"], tuple)


def test_steps_and_episodes_match_the_store(store):
    path, episodes = store
    flat = [s for steps in episodes for s in steps]
    steps_ds = StepDataset(path)
    assert len(steps_ds) == len(flat) == sum(LENGTHS)
    for i in (0, 5, 6, len(flat) - 1):
        assert int(steps_ds[i]["observation"]["uid"]) == int(flat[i]["observation"]["uid"])
        assert bool(steps_ds[i]["is_last"]) == flat[i]["is_last"]
    batch = next(iter(DataLoader(steps_ds, batch_size=4)))
    assert batch["observation"]["uid"].tolist() == [0, 1, 2, 3] and batch["action"][1].dtype == torch.float64

    eps = EpisodeDataset(path, fields=["observation/uid", "reward"])
    assert [len(eps[i]["reward"]) for i in range(len(eps))] == LENGTHS
    (padded, mask) = next(iter(DataLoader(eps, batch_size=3, collate_fn=pad_episodes)))
    assert mask.shape == (3, 7) and mask.sum(1).tolist() == LENGTHS[:3]
    assert set(padded) == {"observation", "reward"}
    for b in range(3):
        n = LENGTHS[b]
        assert padded["reward"][b, :n].tolist() == [float(s["reward"]) for s in episodes[b]]
        assert not padded["observation"]["uid"][b, n:].any()


def test_text_and_varying_fields_are_refused_for_windows_naming_the_field(tmp_path):
    path = tmp_path / "txt"
    steps = episode_steps(3, 0)
    for s in steps:
        s["observation"]["note"] = "hi"
    with DatasetWriter(path) as w:
        w.write_episode(steps)
    with pytest.raises(DataError, match="field 'observation/note'.*fields="):
        WindowDataset(path, 2)
    assert WindowDataset(path, 2, fields=["observation/uid", "reward"])[0][1].tolist() == [True, True]
    assert StepDataset(path)[1]["observation"]["note"] == "hi"  # one step at a time: str as it is


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_every_window_once_per_epoch_whatever_the_workers(store, workers):
    path, episodes = store
    items = WindowDataset(path, 3, shift=2)
    all_ids = sorted(int(steps[0]["observation"]["uid"]) for steps in brute_windows(episodes, 3, 2, 1, "pad"))
    runs = {}
    for seed in (0, 0, 1):
        loader = StoreLoader(ShardedStream(items, 4, seed=seed), num_workers=workers, multiprocessing_context="fork"
                             if workers else None)
        epoch0 = first_uids(list(loader))
        assert sorted(epoch0) == all_ids  # each window once per epoch
        if not runs:
            epoch1 = first_uids(list(loader))
            assert sorted(epoch1) == all_ids and epoch0 != epoch1  # a new order each epoch
        stream = ShardedStream(items, 4, seed=seed)
        assert epoch0 == [all_ids[w] for b in stream.plan() for w in b]  # the plan's order, whatever the workers
        runs.setdefault(seed, []).append(epoch0)
    assert runs[0][0] == runs[0][1]  # same seed, same order
    assert runs[0][0] != runs[1][0]  # another seed, another order
    unshuffled = first_uids(StoreLoader(ShardedStream(items, 4, shuffle=False), num_workers=workers))
    assert unshuffled == all_ids


def test_two_ranks_share_every_window_exactly_once(store):
    path, _ = store
    items = WindowDataset(path, 2, shift=1, stride=2, boundary="drop")
    seen = []
    orders = []
    for rank in range(2):
        loader = StoreLoader(ShardedStream(items, 3, rank=rank, world_size=2, seed=7), num_workers=2)
        order = first_uids(loader)
        orders.append(order)
        seen += order
    assert sorted(seen) == sorted(int(items[w][0]["observation"]["uid"][0]) for w in range(len(items)))
    assert len(set(seen)) == len(items) and abs(len(orders[0]) - len(orders[1])) <= 1
    even = [ShardedStream(items, 3, rank=r, world_size=2, drop_last=True) for r in range(2)]
    assert len(StoreLoader(even[0])) == len(StoreLoader(even[1]))  # DDP needs as many batches on every rank
    assert all(len(b) == 3 for s in even for b in s.plan())


def test_distributed_sampler_over_the_map_style_dataset(store):
    path, _ = store
    items = WindowDataset(path, 2, boundary="drop")
    assert len(items) % 2 == 0  # so DistributedSampler pads nothing
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(items, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(1)
        seen += first_uids(DataLoader(items, batch_size=2, sampler=sampler, num_workers=2))
    assert sorted(seen) == sorted(int(items[w][0]["observation"]["uid"][0]) for w in range(len(items)))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_sees_exactly_the_rest(store, workers):
    path, _ = store
    items = WindowDataset(path, 2, shift=1)

    def loader():
        return StoreLoader(ShardedStream(items, 3, rank=1, world_size=2, seed=5), num_workers=workers)

    full = loader()
    whole = [first_uids(list(full)), first_uids(list(full))]  # epochs 0 and 1 in one go
    first = loader()
    taken = []
    for b, batch in enumerate(first):
        taken += first_uids([batch])
        if b == 1:
            break
    state = first.state_dict()
    assert state["epoch"] == 0 and state["position"] == 6
    resumed = loader()
    resumed.load_state_dict(state)
    assert taken + first_uids(list(resumed)) == whole[0]  # the rest of the epoch, exactly once
    assert first_uids(list(resumed)) == whole[1]  # and the next epoch as if never interrupted
    bad = loader()
    with pytest.raises(DataError, match="'seed' is 1"):
        bad.load_state_dict({**state, "seed": 1})
    with pytest.raises(DataError, match="'position' 99"):
        bad.load_state_dict({**state, "position": 99})


def test_pickles_without_memory_maps_and_reopens_in_each_worker(store):
    path, _ = store
    items = WindowDataset(open_dataset(path).filter(lambda m: m["good"]), 2)
    assert items.episode_ids == ["e0", "e2", "e4", "e6"]
    before = items[0]
    assert items._ds is not None
    blob = pickle.dumps(items)
    assert len(blob) < 20_000 and b"frame" in blob  # the spec, not the segment's bytes
    again = pickle.loads(blob)
    assert again._ds is None and torch.equal(again[0][0]["observation"]["uid"], before[0]["observation"]["uid"])

    class Pids(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            items[i]
            return torch.tensor([os.getpid(), items._pid, len(items.store)])

    got = torch.cat(list(DataLoader(Pids(), batch_size=1, num_workers=2, multiprocessing_context="fork")))
    assert (got[:, 0] != os.getpid()).all() and (got[:, 0] == got[:, 1]).all()  # reopened in the worker
    assert (got[:, 2] == 4).all()  # the filtered episodes, found again by id
