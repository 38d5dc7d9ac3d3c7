"""TFDS side of ``benchmarks/data_store.py``; runs in ``.venv-compat`` (tfds + TensorFlow).

    .venv-compat/bin/python benchmarks/_tfds_side.py --episodes 200 --workdir /tmp/x

Builds the same episodes as the main benchmark (``data_store.make_episode``),
writes them with TFDS's own writer (``tfds.dataset_builders.
store_as_tfds_dataset``: RLDS layout, ``steps`` a ``tfds.features.Dataset``,
frames a raw ``Tensor`` with ``encoding='bytes'`` -- lossless and
uncompressed like the other systems; ``--encoding none`` is TFDS's default,
one int64 per byte, ~20x slower to write) and reads
them back with ``builder.as_dataset(split='train')``, each episode's steps
batched into one tensor per field (the fastest TFDS read path; iterating
step by step is ~30x slower) and iterated as numpy. TFDS has no random
episode access. Prints one JSON line on stdout: times and checksum.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loader import tfds_epochs  # noqa: E402
from data_store import FRAME, make_episode, touch  # noqa: E402

tf.get_logger().setLevel("ERROR")
tfds.disable_progress_bar()
try:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
except ImportError:  # pragma: no cover
    pass


def features(encoding: str) -> tfds.features.FeaturesDict:
    """RLDS layout. ``encoding='bytes'``: a frame is one bytes string per step;
    ``'none'`` is TFDS's default for a uint8 Tensor: an int64 list, 1 per byte."""
    scalar = tfds.features.Scalar
    return tfds.features.FeaturesDict({
        "episode_id": tfds.features.Text(),
        "steps": tfds.features.Dataset({
            "observation": tfds.features.Tensor(shape=FRAME, dtype=np.uint8, encoding=encoding),
            "action": scalar(dtype=np.int64),
            "reward": scalar(dtype=np.float32),
            "discount": scalar(dtype=np.float32),
            "is_first": scalar(dtype=np.bool_),
            "is_last": scalar(dtype=np.bool_),
            "is_terminal": scalar(dtype=np.bool_),
        }),
    })


def write(root: Path, episodes: list[dict], encoding: str) -> Path:
    """TFDS's writer, order kept (no shuffling); returns the prepared data dir."""
    examples = [(i, {"episode_id": str(i), "steps": ep}) for i, ep in enumerate(episodes)]
    builder = tfds.dataset_builders.store_as_tfds_dataset(
        name="bench_frames", version="1.0.0", features=features(encoding), split_datasets={"train": examples},
        data_dir=str(root), disable_shuffling=True,
    )
    return Path(builder.data_dir)


def read_all(data_dir: Path, mode: str) -> int:
    builder = tfds.builder_from_directory(str(data_dir))
    ds = builder.as_dataset(split="train")
    ds = ds.map(lambda ep: ep["steps"].batch(1 << 30).get_single_element())
    total = 0
    for steps in tfds.as_numpy(ds):
        total += touch(steps["observation"], steps["action"], steps["reward"], steps["is_last"], mode)
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--random-reads", type=int, default=500)  # accepted for symmetry; TFDS has no random access
    p.add_argument("--touch", choices=("byte", "all"), default="byte")
    p.add_argument("--encoding", choices=("bytes", "none"), default="bytes")
    p.add_argument("--workdir", required=True)
    p.add_argument("--loader-window", type=int, default=0, help="also time the loader row (_loader.py)")
    p.add_argument("--loader-batch", type=int, default=32)
    args = p.parse_args()

    episodes = [make_episode(i, args.steps, args.seed) for i in range(args.episodes)]
    work = Path(args.workdir) / "tfds"
    write(work / "warmup", episodes[:5], args.encoding)  # untimed, like the other systems' warm-up
    write_s, write_cpu_s, data_dir = [], [], None
    for k in range(args.repeats):
        if work.exists():
            tf.io.gfile.rmtree(str(work))
        work.mkdir(parents=True, exist_ok=True)
        os.sync()
        t, c = time.perf_counter(), time.process_time()
        data_dir = write(work / f"r{k}", episodes, args.encoding)
        write_s.append(time.perf_counter() - t)
        write_cpu_s.append(time.process_time() - c)
    del episodes
    read_s, read_cpu_s, checksum = [], [], None
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        checksum = read_all(data_dir, args.touch)
        read_s.append(time.perf_counter() - t)
        read_cpu_s.append(time.process_time() - c)
    loader = []
    if args.loader_window:
        loader.append(tfds_epochs(data_dir, args.loader_window, args.loader_batch, args.seed, args.repeats))
    tf.io.gfile.rmtree(str(work))
    print(json.dumps({
        "loader": loader,
        "system": f"TFDS {tfds.__version__} (tfrecord, frames as {args.encoding})",
        "steps": args.episodes * args.steps,
        "write_s": write_s,
        "write_cpu_s": write_cpu_s,
        "read_s": read_s,
        "read_cpu_s": read_cpu_s,
        "checksum": checksum,
        "random": "n/a (no random episode access)",
        "versions": {"tensorflow_datasets": tfds.__version__, "tensorflow": tf.__version__},
    }))


if __name__ == "__main__":
    main()
