"""PyTorch datasets over the trajectory store (the only data module that imports torch).

- :class:`StepDataset`: item ``i`` is global step ``i``, nested like a step;
- :class:`WindowDataset`: item ``w`` is window ``w`` (:mod:`seedrl.data.windows`):
  ``(steps [length, ...], mask [length])``, zero padding where ``mask`` is False;
- :class:`EpisodeDataset`: item ``i`` is episode ``i``'s steps ``[n, ...]``;
  :func:`pad_episodes` collates them to ``(steps [B, T, ...], mask [B, T])``.

They are map-style ``torch.utils.data.Dataset`` s: any sampler works,
``DistributedSampler`` included. :class:`ShardedStream` is the rank-sharded,
seeded, resumable path: an ``IterableDataset`` of batches over any of them
(rank ``rank`` of ``world_size``, DataLoader workers sharded inside the rank),
and :class:`StoreLoader` a DataLoader over it that counts what it delivered,
so ``state_dict()`` after any batch resumes with exactly the rest of the epoch.

Memory maps are per process: a dataset pickles (to DataLoader workers, any
start method) without its open store, and a process that did not open it
(a forked worker included) reopens it on first use. The episodes are those
of the source at construction, found again by id, so a dataset still being
appended to gives every worker the same items.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import default_collate

from seedrl.data.columns import batch_to_columns
from seedrl.data.errors import DataError
from seedrl.data.reader import Dataset, open_dataset
from seedrl.data.spec import tree_flatten, tree_unflatten
from seedrl.data.windows import WindowIndex, plan_batches, rank_share


class StoreItems(TorchDataset):
    """Base of the map-style datasets: the store opened lazily, once per process.

    ``source``: a dataset path, or a :class:`~seedrl.data.reader.Dataset`
    (a ``filter`` / ``select`` / ``take`` view keeps its episodes and fields).
    ``fields``: read only these (paths; a prefix selects a subtree).
    """

    tensor_only = False  # windows and episodes stack steps: every field must be a fixed-shape number

    def __init__(self, source: str | os.PathLike | Dataset, fields: Iterable[str] | None = None, *,
                 verify: bool = True):
        ds = source if isinstance(source, Dataset) else open_dataset(source, verify=verify)
        if fields is not None:
            ds = ds.select(fields)
        if ds.spec is None:
            raise DataError(f"{ds.root}: the dataset has no episode yet, nothing to load")
        self.path, self.verify = str(ds.root), ds.verify
        self.fields = None if ds.spec == ds.full_spec else list(ds.spec.paths)
        self.spec = ds.spec
        self.episode_ids = [str(i) for i in ds.episode_ids]
        self.lengths = np.array([e.num_steps for e in ds.entries], dtype=np.int64)
        if self.tensor_only:
            for f in self.spec.fields:
                if f.is_text or not f.is_fixed:
                    kind = f.dtype if f.is_text else f"{f.dtype} of varying shape {f.shape}"
                    raise DataError(f"field '{f.path}': {kind} cannot be stacked into a tensor over steps; "
                                    f"pass fields= without it")
        self._ds: Dataset | None = ds
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_ds"] = None  # memory maps are not pickled: each process maps the segments itself
        return state

    @property
    def store(self) -> Dataset:
        """The open store in this process (reopened after a fork or an unpickle)."""
        if self._ds is None or self._pid != os.getpid():
            ds = open_dataset(self.path, self.fields, verify=self.verify)
            if ds.episode_ids != self.episode_ids:
                ds = ds.take([ds.index_of(i) for i in self.episode_ids])
            now = np.array([e.num_steps for e in ds.entries], dtype=np.int64)
            if not np.array_equal(now, self.lengths):
                bad = int(np.argmax(now != self.lengths))
                raise DataError(f"{self.path}: episode {self.episode_ids[bad]!r} has {now[bad]} steps, "
                                f"{self.lengths[bad]} when this loader was built")
            self._ds, self._pid = ds, os.getpid()
        return self._ds

    def read(self, episode: int, start: int, stop: int, stride: int = 1) -> dict[str, np.ndarray]:
        """Steps ``start, start + stride, ... < stop`` of an episode as ``{path: column}`` (views where Arrow allows)."""
        batch = self.store.read_batch(episode).slice(start, stop - start)
        return {p: c[::stride] for p, c in batch_to_columns(self.spec, batch).items()}

    def nest(self, flat: dict[str, Any]) -> Any:
        return tree_unflatten(self.spec.treedef, flat)

    def metadata(self, episode: int) -> dict:
        """Episode metadata (no step read)."""
        return self.store.entries[episode].metadata

    collate = staticmethod(default_collate)

    def fetch(self, indices: Sequence[int]) -> Any:
        """Items ``indices`` collated into one batch (what :class:`ShardedStream` yields)."""
        return self.collate([self[int(i)] for i in indices])


def to_tensor(column: np.ndarray, length: int | None = None) -> torch.Tensor:
    """A writable copy of a column as a tensor; ``length``: zero-padded (or left as is) to that many rows."""
    if length is None or len(column) == length:
        return torch.from_numpy(np.array(column))
    out = np.zeros((length, *column.shape[1:]), dtype=column.dtype)
    out[: len(column)] = column
    return torch.from_numpy(out)


def _leaf(value: Any) -> Any:
    """One step's value: a tensor for numbers (0-d for scalars), str/bytes as they are."""
    if isinstance(value, (str, bytes)):
        return value
    return torch.from_numpy(np.array(value))


class StepDataset(StoreItems):
    """Item ``i``: global step ``i`` (episodes in order), nested like a step, numbers as tensors."""

    def __init__(self, source, fields=None, *, verify: bool = True):
        super().__init__(source, fields, verify=verify)
        self.cum = np.concatenate([[0], np.cumsum(self.lengths)])

    def __len__(self) -> int:
        return int(self.cum[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """Step ``i`` -> (episode, step within it)."""
        if not 0 <= i < len(self):
            raise IndexError(f"step {i} out of range for {len(self)} steps")
        e = int(np.searchsorted(self.cum, i, side="right")) - 1
        return e, int(i - self.cum[e])

    def __getitem__(self, i: int) -> Any:
        e, t = self.locate(int(i))
        return self.nest({p: _leaf(c[0]) for p, c in self.read(e, t, t + 1).items()})


class WindowDataset(StoreItems):
    """Item ``w``: ``(steps, mask)``, window ``w`` of :class:`~seedrl.data.windows.WindowIndex`.

    ``steps`` is nested like a step with leaves ``[length, ...]``; ``mask``
    ``[length]`` is True on real steps and False on the zero padding after an
    episode's end (``boundary="pad"``; ``"drop"`` keeps only whole windows).
    ``shift``: steps between window starts (default ``length``: no overlap);
    ``stride``: steps between a window's steps.
    """

    tensor_only = True

    def __init__(self, source, length: int, fields=None, *, shift: int | None = None, stride: int = 1,
                 boundary: str = "pad", verify: bool = True):
        super().__init__(source, fields, verify=verify)
        self.index = WindowIndex(self.lengths, length, shift, stride, boundary)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, w: int) -> tuple[Any, torch.Tensor]:
        e, start, real = self.index.locate(int(w))
        cols = self.read(e, start, start + (real - 1) * self.index.stride + 1, self.index.stride)
        mask = torch.zeros(self.index.length, dtype=torch.bool)
        mask[:real] = True
        return self.nest({p: to_tensor(c, self.index.length) for p, c in cols.items()}), mask


    def fetch(self, indices: Sequence[int]) -> tuple[Any, torch.Tensor]:
        """``default_collate`` of the windows, read straight into the batch's tensors (one copy, no stack;
        in shared memory inside a DataLoader worker, as ``default_collate`` does)."""
        size, length = len(indices), self.index.length
        shared = get_worker_info() is not None
        out: dict[str, np.ndarray] = {}
        tensors: dict[str, torch.Tensor] = {}
        mask = np.zeros((size, length), dtype=bool)
        for b, w in enumerate(indices):
            e, start, real = self.index.locate(int(w))
            cols = self.read(e, start, start + (real - 1) * self.index.stride + 1, self.index.stride)
            mask[b, :real] = True
            for p, c in cols.items():
                if p not in out:
                    t = torch.from_numpy(np.zeros((size, length, *c.shape[1:]), dtype=c.dtype))
                    tensors[p] = t.share_memory_() if shared else t
                    out[p] = tensors[p].numpy()
                out[p][b, :real] = c
        return self.nest(tensors), torch.from_numpy(mask)


class EpisodeDataset(StoreItems):
    """Item ``i``: episode ``i``'s steps, nested like a step with leaves ``[n, ...]``.

    Episodes differ in length: batch them with ``collate_fn=pad_episodes``
    (the default ``collate`` of this class).
    """

    tensor_only = True

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> Any:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range for {len(self)} episodes")
        return self.nest({p: to_tensor(c) for p, c in self.read(i, 0, int(self.lengths[i])).items()})

    @staticmethod
    def collate(items: Sequence[Any]) -> tuple[Any, torch.Tensor]:
        return pad_episodes(items)


def pad_episodes(items: Sequence[Any]) -> tuple[Any, torch.Tensor]:
    """Episodes (nested, leaves ``[n_b, ...]``) -> ``(steps [B, T, ...], mask [B, T])``, ``T = max n_b``,
    zero padding where ``mask`` is False."""
    if not items:
        raise DataError("pad_episodes needs at least one episode")
    flats = [tree_flatten(it) for it in items]
    treedef = flats[0][0]
    sizes = [len(next(iter(flat.values()))) for _, flat in flats]
    longest = max(sizes)
    mask = torch.arange(longest)[None, :] < torch.tensor(sizes)[:, None]
    out = {}
    for path, first in flats[0][1].items():
        leaf = first.new_zeros((len(items), longest, *first.shape[1:]))
        for b, (_, flat) in enumerate(flats):
            leaf[b, : sizes[b]] = flat[path]
        out[path] = leaf
    return tree_unflatten(treedef, out), mask


class ShardedStream(IterableDataset):
    """Batches of ``items`` for one rank: seeded shuffling, worker sharding, resumable.

    Epoch ``e`` visits the items in the order of
    :func:`~seedrl.data.windows.rank_share` (a permutation seeded by
    ``(seed, e)``, positions ``rank, rank + world_size, ...``), from
    ``position`` on, in batches of ``batch_size`` collated by
    ``collate`` (default: the dataset's own ``fetch``). DataLoader worker ``k`` of
    ``K`` builds batches ``k, k + K, ...``, so the loader yields them in
    plan order. Use it through :class:`StoreLoader` (``batch_size=None``
    DataLoader) to get ``state_dict()`` after each batch.
    """

    def __init__(self, items: StoreItems, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 collate: Callable[[list], Any] | None = None):
        if world_size < 1:
            raise DataError(f"world_size must be >= 1, got {world_size}")
        self.items, self.batch_size = items, int(batch_size)
        self.rank, self.world_size, self.shuffle, self.seed, self.drop_last = rank, world_size, shuffle, seed, drop_last
        self.collate = collate  # None: the dataset's own fetch (its collate, or a faster equivalent)
        self.epoch, self.position = 0, 0
        self.plan()  # checks rank, batch size

    def share(self) -> np.ndarray:
        """This rank's items this epoch, in order."""
        return rank_share(len(self.items), self.epoch, self.seed, self.shuffle, self.rank, self.world_size,
                          self.drop_last)

    def plan(self) -> list[np.ndarray]:
        """The batches left in this epoch (from ``position``)."""
        return plan_batches(self.share(), self.batch_size, self.position, self.drop_last)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for batch in self.plan()[worker::workers]:
            yield self.items.fetch(batch) if self.collate is None else self.collate([self.items[int(i)] for i in batch])

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        """Where this rank is: epoch and items delivered in it, plus what the plan depends on."""
        return {"epoch": self.epoch, "position": self.position, "items": len(self.items), "seed": self.seed,
                "shuffle": self.shuffle, "rank": self.rank, "world_size": self.world_size,
                "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state``; refused (naming the key) if the plan it came from differs from this one."""
        mine = self.state_dict()
        for key in ("items", "seed", "shuffle", "world_size", "rank", "drop_last"):
            if key in state and state[key] != mine[key]:
                raise DataError(f"state_dict {key!r} is {state[key]!r}, this stream has {mine[key]!r}: "
                                "it would resume a different order")
        epoch, position = int(state["epoch"]), int(state["position"])
        share = rank_share(len(self.items), epoch, self.seed, self.shuffle, self.rank, self.world_size,
                           self.drop_last)
        if not 0 <= position <= len(share):
            raise DataError(f"state_dict 'position' {position} is outside this rank's {len(share)} items")
        self.epoch, self.position = epoch, position


class StoreLoader:
    """A DataLoader over a :class:`ShardedStream` that knows where it is.

    Iterating yields the epoch's remaining batches (``DataLoader`` keyword
    arguments such as ``num_workers`` pass through), advancing
    ``stream.position`` as each batch is handed to the caller; at the end of
    the epoch it moves to the next one. ``state_dict()`` taken after a batch
    and loaded into a fresh loader resumes with exactly the batches after it.
    """

    def __init__(self, stream: ShardedStream, **loader_kwargs: Any):
        if loader_kwargs.get("batch_size") is not None:
            raise DataError("StoreLoader: the stream batches; pass batch_size to ShardedStream, not the DataLoader")
        self.stream, self.kwargs = stream, {**loader_kwargs, "batch_size": None}

    def __len__(self) -> int:
        return len(self.stream.plan())

    def __iter__(self) -> Iterator[Any]:
        plan = self.stream.plan()
        if plan:
            for batch, items in zip(DataLoader(self.stream, **self.kwargs), plan):
                self.stream.position += len(items)
                yield batch
        self.stream.set_epoch(self.stream.epoch + 1)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


__all__ = ["EpisodeDataset", "ShardedStream", "StepDataset", "StoreItems", "StoreLoader", "WindowDataset",
           "pad_episodes", "to_tensor"]
