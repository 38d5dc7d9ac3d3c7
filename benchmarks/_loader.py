"""The loader row of ``benchmarks/data_store.py``: windows/s into a training loop.

Every system delivers the same windows of the benchmark's episodes:
``--window`` consecutive steps (observation frame + action) starting at
steps 0, W, 2W, ... of each episode, the last one of an episode zero-padded
with a mask (``seedrl.data.windows``, ``boundary="pad"``), in batches of
``--loader-batch``, in a shuffled order, into the same trivial training step
(:func:`train_step`: frames to float32 in [0, 1], their mean, and an exact
checksum of one byte per frame plus the actions, which padding leaves
unchanged, so equal checksums mean the same windows were delivered). Each
timing is one whole epoch, DataLoader worker start-up included.

- seedrl: ``StoreLoader(ShardedStream(WindowDataset(...)))`` with
  ``--loader-workers`` DataLoader workers, a full permutation of the windows;
- plain Arrow: the raw Arrow IPC file of the benchmark, one process, windows
  sliced from zero-copy record batches in a full permutation (the floor: no
  checks, no collation, no workers);
- TFDS (in ``.venv-compat``, ``_tfds_side.py``): ``builder.as_dataset()``,
  each episode's steps ``batch``-ed into windows (the last one ``tf.pad``-ded), ``shuffle`` (a
  buffer of 1024 windows: TFDS shuffles approximately), ``batch``,
  ``prefetch``, iterated with ``tfds.as_numpy``.

numpy only at import: ``_tfds_side.py`` imports this without torch.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

TFDS_SHUFFLE_BUFFER = 1024


def train_step(obs: np.ndarray, action: np.ndarray) -> int:
    """The trivial training step: touch every frame byte as float32; returns the exact checksum."""
    float(np.multiply(obs, np.float32(1 / 255), dtype=np.float32).mean())
    return int(obs[..., 0, 0].sum(dtype=np.int64)) + int(action.sum(dtype=np.int64))


def window_count(lengths, window: int) -> int:
    return int(sum((n + window - 1) // window for n in lengths))


def result(system: str, windows: int, times: list[float], checksum: int) -> dict:
    return {"system": system, "windows": windows, "epoch_s": times,
            "windows_s": windows / statistics.median(times), "checksum": checksum}


def seedrl_epochs(path: Path, window: int, batch: int, workers: int, seed: int, repeats: int) -> dict:
    from seedrl.data.torch import ShardedStream, StoreLoader, WindowDataset

    items = WindowDataset(path, window, fields=["observation", "action"])
    loader = StoreLoader(ShardedStream(items, batch, seed=seed), num_workers=workers)
    times, total = [], 0
    for _ in range(repeats):
        t, total, n = time.perf_counter(), 0, 0
        for steps, mask in loader:
            total += train_step(steps["observation"].numpy(), steps["action"].numpy())
            n += len(mask)
        times.append(time.perf_counter() - t)
        assert n == len(items)
    return result(f"seedrl DataLoader ({workers} workers)", len(items), times, total)


def arrow_epochs(get, lengths, window: int, batch: int, seed: int, repeats: int) -> dict:
    """``get(i)`` -> (obs, action, ...) of episode ``i``, zero copy (the raw Arrow store's opener)."""
    starts = [(e, s) for e, n in enumerate(lengths) for s in range(0, n, window)]
    times, total = [], 0
    for r in range(repeats):
        order = np.random.default_rng([seed, r]).permutation(len(starts))
        t, total = time.perf_counter(), 0
        for b in range(0, len(order), batch):
            picks = [starts[i] for i in order[b : b + batch]]
            first = get(picks[0][0])[0]
            obs = np.zeros((len(picks), window, *first.shape[1:]), first.dtype)
            action = np.zeros((len(picks), window), np.int64)
            for k, (e, s) in enumerate(picks):
                o, a = get(e)[:2]
                obs[k, : len(o[s : s + window])] = o[s : s + window]
                action[k, : len(a[s : s + window])] = a[s : s + window]
            total += train_step(obs, action)
        times.append(time.perf_counter() - t)
    return result("plain Arrow reader (1 process)", len(starts), times, total)


def tfds_epochs(data_dir: Path, window: int, batch: int, seed: int, repeats: int) -> dict:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def fill(b):  # the episode's last window, short, zero-padded to `window` steps
        short = window - tf.shape(b["action"])[0]
        return {k: tf.pad(v, [[0, short]] + [[0, 0]] * (v.shape.rank - 1)) for k, v in b.items()}

    def windows(ep):
        steps = ep["steps"].map(lambda s: {"observation": s["observation"], "action": s["action"],
                                           "valid": tf.constant(1, tf.uint8)})
        return steps.batch(window).map(fill)

    builder = tfds.builder_from_directory(str(data_dir))
    times, total, n = [], 0, 0
    for r in range(repeats):
        ds = builder.as_dataset(split="train").flat_map(windows)
        ds = ds.shuffle(TFDS_SHUFFLE_BUFFER, seed=seed + r).batch(batch).prefetch(tf.data.AUTOTUNE)
        t, total, n = time.perf_counter(), 0, 0
        for b in tfds.as_numpy(ds):
            total += train_step(b["observation"], b["action"])
            n += len(b["valid"])
        times.append(time.perf_counter() - t)
    return result(f"TFDS {tfds.__version__} as_dataset pipeline", n, times, total)


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["system"].startswith("plain Arrow")), rows[0])
    lines = ["| loader | windows/epoch | windows/s | vs plain Arrow |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['windows']:,} | {r['windows_s']:,.0f} | "
                     f"{r['windows_s'] / base['windows_s']:.2f} |")
    return "\n".join(lines)
