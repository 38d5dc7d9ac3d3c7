"""Trajectory store benchmark: seedrl vs raw Arrow IPC vs TFDS vs Minari (HDF5).

    .venv/bin/python benchmarks/data_store.py [--episodes 1000] [--workdir /tmp]

The same synthetic Atari-like data goes through every system in one run:
``--episodes`` episodes of ``--steps`` steps, each step an 84x84 uint8 frame
(random bytes: incompressible, and nothing is compressed) plus ``action``
int64, ``reward`` / ``discount`` float32 and the three RLDS bool flags. The
payload is 7075 bytes per step (7056 frame + 19 scalar bytes).

Measured per system, each repeated ``--repeats`` times (the median is kept):

- write: from opening the writer to closing it, into a fresh directory;
  MB/s of payload (1 MB = 1e6 bytes) and steps/s. ``os.sync()`` runs before
  each repetition (untimed) so no system pays for another's dirty pages.
- full read: open the dataset and iterate over every episode, touching
  each one the same way (:func:`touch`: one byte per frame, i.e.
  ``obs[:, 0, 0].sum()``, plus the action/reward/flag columns; ``--touch
  all`` sums every frame byte instead). Reads are warm-cache: the OS page
  cache cannot be dropped without root, so every system reads what it has
  just written, from memory.
- random episode: ``--random-reads`` uniformly drawn episode indices (the
  same for every system), each timed from the request to the touched
  columns; median and p90 in ms.

The images rows (``images`` in ``--systems``; see ``benchmarks/_images_row.py``)
compare camera frames stored raw against PNG / JPEG encoded fields: bytes on
disk, write steps/s and read-and-decode steps/s.

Loader row (``loader`` in ``--systems``): windows/s into a trivial
training loop through seedrl's PyTorch DataLoader path, a plain Arrow
reader and (with ``tfds`` also chosen) TFDS's own ``as_dataset`` pipeline;
see ``benchmarks/_loader.py``.

Every system's touches add up to a checksum; they must agree, which proves
the systems read the same data. TFDS runs in ``.venv-compat`` as a
subprocess (``benchmarks/_tfds_side.py``). Results: a table on stdout and
``benchmarks/results/data_store.json``. ``--profile`` also prints cProfile
summaries of seedrl's write and read paths.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from seedrl.data import DatasetWriter, StepSpec, open_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _images_row import images_table, measure_images  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FRAME = (84, 84)
STEP_BYTES = FRAME[0] * FRAME[1] + 8 + 4 + 4 + 3
FIELDS = ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal")


# ------------------------------------------------------------------ data
def make_episode(i: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Episode ``i`` as flat columns; deterministic across numpy versions.

    RLDS alignment: the last step holds the final frame with action 0 and
    reward 0; even episodes end terminal (discount 0), odd ones truncated.
    """
    rng = np.random.default_rng([seed, i])
    obs = np.frombuffer(rng.bytes(steps * FRAME[0] * FRAME[1]), np.uint8).reshape(steps, *FRAME)
    raw = np.frombuffer(rng.bytes(steps * 4), np.uint32)
    action = (raw % 18).astype(np.int64)
    reward = ((raw >> 8) % 1000).astype(np.float32) / np.float32(100)
    action[-1], reward[-1] = 0, 0
    discount = np.ones(steps, np.float32)
    flag = np.zeros(steps, bool)
    is_first, is_last, is_terminal = flag.copy(), flag.copy(), flag.copy()
    is_first[0] = is_last[-1] = True
    if i % 2 == 0:
        is_terminal[-1], discount[-1] = True, 0
    return {"observation": obs, "action": action, "reward": reward, "discount": discount,
            "is_first": is_first, "is_last": is_last, "is_terminal": is_terminal}


def touch(obs: np.ndarray, action: np.ndarray, reward: np.ndarray, is_last: np.ndarray, mode: str = "byte") -> int:
    """Read an episode's columns; returns an exact integer checksum.

    ``mode='byte'`` reads one byte per frame (``obs[:, 0, 0]``, so every
    frame's first page is faulted in from a memory map); ``'all'`` every byte.
    """
    frames = obs.sum(dtype=np.int64) if mode == "all" else obs[:, 0, 0].sum(dtype=np.int64)
    return int(frames) + int(action.sum()) + int(round(float(reward.sum(dtype=np.float64)) * 100)) + int(is_last.sum())


def median(xs):
    return float(statistics.median(xs))


def rates(r: dict) -> dict:
    """Add throughputs (from median times) and random latency (per-run median
    and p90 in ms, then the median over runs) to a result dict."""
    r["write_mb_s"] = r["steps"] * STEP_BYTES / median(r["write_s"]) / 1e6
    r["write_steps_s"] = r["steps"] / median(r["write_s"])
    if "read_s" in r:
        r["read_steps_s"] = r["steps"] / median(r["read_s"])
    if "random_runs" in r:
        runs = r.pop("random_runs")
        r["median_ms"] = median([np.percentile(x, 50) * 1e3 for x in runs])
        r["p90_ms"] = median([np.percentile(x, 90) * 1e3 for x in runs])
    return r


def timed_accesses(get, indices, mode: str) -> tuple[list[float], int]:
    """Seconds per ``touch(*get(i))`` over ``indices``, and the checksum."""
    times, total = [], 0
    for i in indices:
        t = time.perf_counter()
        total += touch(*get(int(i)), mode)
        times.append(time.perf_counter() - t)
    return times, total


# ---------------------------------------------------------------- stores
# Each store: write(folder, episodes) into an empty folder; episodes(folder)
# yields (obs, action, reward, is_last) per episode in order; opener(folder)
# (untimed) returns get(i) -> the same tuple for episode i.
class RawArrow:
    """The physical limit: one record batch per episode in an Arrow IPC stream,
    no index file, no checks; random access by (offset, length) recorded while
    writing, zero copy (a slice of the mapped file)."""

    FILE = "episodes.arrow"

    def __init__(self, fsync: bool = False):
        self.fsync, self.readable, self.offsets = fsync, not fsync, []
        self.schema = pa.schema([("observation", pa.list_(pa.uint8(), FRAME[0] * FRAME[1])), ("action", pa.int64()),
                                 ("reward", pa.float32()), ("discount", pa.float32()), ("is_first", pa.bool_()),
                                 ("is_last", pa.bool_()), ("is_terminal", pa.bool_())])

    def write(self, folder: Path, episodes: list[dict]) -> None:
        self.offsets = []
        with pa.OSFile(str(folder / self.FILE), "wb") as sink:
            writer = pa.ipc.new_stream(sink, self.schema)
            for ep in episodes:
                obs = pa.FixedSizeListArray.from_arrays(pa.array(ep["observation"].reshape(-1)), FRAME[0] * FRAME[1])
                batch = pa.RecordBatch.from_arrays([obs] + [pa.array(ep[k]) for k in FIELDS[1:]], schema=self.schema)
                start = sink.tell() or len(self.schema.serialize())  # the schema goes out with the first batch
                writer.write_batch(batch)
                self.offsets.append((start, sink.tell() - start))
            writer.close()
        if self.fsync:
            fd = os.open(folder / self.FILE, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    @staticmethod
    def columns(batch: pa.RecordBatch) -> tuple:
        obs = batch.column(0).values.to_numpy(zero_copy_only=True).reshape(batch.num_rows, *FRAME)
        return obs, batch.column(1).to_numpy(), batch.column(2).to_numpy(), batch.column(5).to_numpy(False)

    def episodes(self, folder: Path):
        with pa.memory_map(str(folder / self.FILE)) as mm:
            for batch in pa.ipc.open_stream(mm):
                yield self.columns(batch)

    def opener(self, folder: Path):
        whole = pa.memory_map(str(folder / self.FILE)).read_buffer()  # NativeFile.read_at would copy
        read = pa.ipc.read_record_batch
        return lambda i: self.columns(read(pa.ipc.read_message(whole.slice(*self.offsets[i])), self.schema))


class Seedrl:
    """``DatasetWriter.write_episode(columns)``; ``open_dataset`` iteration and ``ds[i]``."""

    def __init__(self, spec, durable: bool = False, verify: bool = True):
        self.spec, self.durable, self.readable, self.verify = spec, durable, not durable, verify

    def write(self, folder: Path, episodes: list[dict]) -> None:
        with DatasetWriter(folder / "ds", self.spec, durable=self.durable) as w:
            for ep in episodes:
                w.write_episode(ep)

    @staticmethod
    def columns(ep) -> tuple:
        c = ep.columns
        return c["observation"], c["action"], c["reward"], c["is_last"]

    def episodes(self, folder: Path):
        return map(self.columns, open_dataset(folder / "ds", verify=self.verify))

    def opener(self, folder: Path):
        ds = open_dataset(folder / "ds", verify=self.verify)
        return lambda i: self.columns(ds[i])


class Minari:
    """HDF5 backend, raw frames (``jpeg_encoding=False``: lossless like the others).

    A Minari episode holds RLDS steps 0..N-1 as N observations and N-1
    transitions: the last RLDS step's action/reward (zeros) have no place,
    ``terminations | truncations`` of transition t is ``is_last`` of step t+1.
    """

    ID = "bench/frames-v0"
    readable = True

    def write(self, folder: Path, episodes: list[dict]) -> None:
        import warnings

        import gymnasium as gym
        import minari
        from minari.data_collector import EpisodeBuffer

        warnings.filterwarnings("ignore", module="minari")  # advice to set algorithm_name, description...
        os.environ["MINARI_DATASETS_PATH"] = str(folder)
        buffers = [EpisodeBuffer(id=j, observations=ep["observation"], actions=ep["action"][:-1],
                                 rewards=ep["reward"][:-1], terminations=ep["is_terminal"][1:],
                                 truncations=ep["is_last"][1:] & ~ep["is_terminal"][1:])
                   for j, ep in enumerate(episodes)]
        minari.create_dataset_from_buffers(
            self.ID, buffers, observation_space=gym.spaces.Box(0, 255, FRAME, np.uint8),
            action_space=gym.spaces.Discrete(18), data_format="hdf5", jpeg_encoding=False)

    @staticmethod
    def columns(ep) -> tuple:
        return ep.observations, ep.actions, ep.rewards, ep.terminations | ep.truncations

    def _open(self, folder: Path):
        import minari

        os.environ["MINARI_DATASETS_PATH"] = str(folder)
        return minari.load_dataset(self.ID)

    def episodes(self, folder: Path):
        return map(self.columns, self._open(folder).iterate_episodes())

    def opener(self, folder: Path):
        ds = self._open(folder)
        return lambda i: self.columns(ds[i])


def stores(spec) -> dict:
    return {"raw": ("raw Arrow IPC", RawArrow()), "raw+fsync": ("raw Arrow IPC + fsync at end", RawArrow(fsync=True)),
            "seedrl": ("seedrl", Seedrl(spec)), "durable": ("seedrl durable=True", Seedrl(spec, durable=True)),
            "noverify": ("seedrl, read with verify=False", Seedrl(spec, verify=False)),
            "minari": ("Minari 0.5 (HDF5)", Minari())}


# -------------------------------------------------------------- harness
def measure(chosen: dict, args, episodes, indices, work: Path) -> list[dict]:
    """Round-robin repetitions (system A, B, C, A, B, C...), so that load from
    other processes on the machine spreads over all systems alike. Each
    store writes into an emptied folder after ``os.sync()``; the last copy
    written is the one read. One untimed small write per store warms up
    imports and allocators first."""
    steps = sum(len(ep["action"]) for ep in episodes)
    res = {key: {"system": name, "steps": steps} for key, (name, _) in chosen.items()}

    def fresh(key: str) -> Path:
        shutil.rmtree(work / key, ignore_errors=True)
        (work / key).mkdir()
        os.sync()
        return work / key

    def add(key: str, **values) -> None:
        for k, v in values.items():
            res[key].setdefault(k, []).append(v)

    for key, (_, store) in chosen.items():
        store.write(fresh(key), episodes[:5])
    for _ in range(args.repeats):
        for key, (_, store) in chosen.items():
            folder = fresh(key)
            wall, cpu, _ = _timed(lambda: store.write(folder, episodes))
            add(key, write_s=wall, write_cpu_s=cpu)
    readers = {key: store for key, (_, store) in chosen.items() if store.readable}
    for _ in range(args.repeats):
        for key, store in readers.items():
            wall, cpu, res[key]["checksum"] = _timed(
                lambda: sum(touch(*cols, args.touch) for cols in store.episodes(work / key)))
            add(key, read_s=wall, read_cpu_s=cpu)
    for _ in range(args.repeats):
        for key, store in readers.items():
            times, res[key]["random_checksum"] = timed_accesses(store.opener(work / key), indices, args.touch)
            add(key, random_runs=times)
    return [rates(r) for r in res.values()]


def _timed(fn):
    """(wall seconds, CPU seconds of this process, result); CPU time is less
    sensitive to other processes competing for the cores, but excludes I/O waits."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def run_tfds(args, work: Path) -> dict | None:
    py = REPO / ".venv-compat" / "bin" / "python"
    if not py.exists():
        print("TFDS: skipped (no .venv-compat)")
        return None
    cmd = [str(py), str(HERE / "_tfds_side.py"), "--episodes", str(args.episodes), "--steps", str(args.steps),
           "--seed", str(args.seed), "--repeats", str(args.repeats), "--random-reads", str(args.random_reads),
           "--touch", args.touch, "--encoding", args.tfds_encoding, "--workdir", str(work)]
    if "loader" in args.systems.split(","):
        cmd += ["--loader-window", str(args.window), "--loader-batch", str(args.loader_batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"TFDS: failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return None
    return rates(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure_loader(args, episodes, work: Path) -> list[dict]:
    """The loader row's seedrl and plain Arrow sides (untimed writes of their own copies)."""
    import _loader

    raw, seedrl = RawArrow(), Seedrl(StepSpec.infer({k: v[0] for k, v in episodes[0].items()}))
    for key, store in (("loader-raw", raw), ("loader-seedrl", seedrl)):
        (work / key).mkdir()
        store.write(work / key, episodes)
    lengths = [len(ep["action"]) for ep in episodes]
    rows = [_loader.arrow_epochs(raw.opener(work / "loader-raw"), lengths, args.window, args.loader_batch,
                                 args.seed, args.repeats),
            _loader.seedrl_epochs(work / "loader-seedrl" / "ds", args.window, args.loader_batch, args.loader_workers,
                                  args.seed, args.repeats)]
    for key in ("loader-raw", "loader-seedrl"):
        shutil.rmtree(work / key)
    return rows


def machine_info(work: Path) -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    mounts = [ln.split() for ln in Path("/proc/mounts").read_text().splitlines()]
    fs = max((m for m in mounts if str(work.resolve()).startswith(m[1])), key=lambda m: len(m[1]), default=None)
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    info = {"cpu": model, "cores": len(os.sched_getaffinity(0)), "memory_gb": round(mem / 2**20, 1),
            "workdir": str(work), "filesystem": fs[2] if fs else "?", "python": platform.python_version(),
            "numpy": np.__version__, "pyarrow": pa.__version__}
    for mod in ("minari", "h5py"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def profile(args, episodes, spec, work: Path) -> None:
    """cProfile of seedrl's write loop and full read, top functions by own time."""
    store, folder = Seedrl(spec), work / "prof"
    folder.mkdir()
    for label, fn in (("write", lambda: store.write(folder, episodes)),
                      ("read", lambda: sum(touch(*cols, args.touch) for cols in store.episodes(folder)))):
        prof = cProfile.Profile()
        prof.runcall(fn)
        print(f"\n--- cProfile: seedrl {label} ({len(episodes)} episodes), by tottime ---")
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


def table(results: list[dict]) -> str:
    raw = next(r for r in results if r["system"] == "raw Arrow IPC")
    head = ("system", "write MB/s", "write steps/s", "full read steps/s", "random episode ms (med/p90)",
            "vs raw Arrow (write/read/random)")
    rows = [head]
    for r in results:
        read = f"{r['read_steps_s']:,.0f}" if "read_steps_s" in r else "(same files)"
        rnd = f"{r['median_ms']:.3f} / {r['p90_ms']:.3f}" if "median_ms" in r else "n/a"
        ratio = [f"{r['write_mb_s'] / raw['write_mb_s']:.2f}",
                 f"{r['read_steps_s'] / raw['read_steps_s']:.2f}" if "read_steps_s" in r else "-",
                 f"{raw['median_ms'] / r['median_ms']:.2f}" if "median_ms" in r else "-"]
        rows.append((r["system"], f"{r['write_mb_s']:,.0f}", f"{r['write_steps_s']:,.0f}", read, rnd, " / ".join(ratio)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--random-reads", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--touch", choices=("byte", "all"), default="byte")
    p.add_argument("--workdir", default=tempfile.gettempdir(), help="temp dirs go here (same disk for all systems)")
    p.add_argument("--systems", default="raw,raw+fsync,seedrl,noverify,durable,minari,tfds,images,loader")
    p.add_argument("--image-episodes", type=int, default=100, help="episodes (of --steps steps) for the images rows")
    p.add_argument("--image-size", type=int, default=128, help="camera frames are SIZE x SIZE x 3")
    p.add_argument("--window", type=int, default=16, help="loader row: steps per window")
    p.add_argument("--loader-batch", type=int, default=32, help="loader row: windows per batch")
    p.add_argument("--loader-workers", type=int, default=2, help="loader row: seedrl DataLoader workers")
    p.add_argument("--tfds-encoding", choices=("bytes", "none"), default="bytes",
                   help="frames as one bytes string per step (default) or TFDS's default int64 list")
    p.add_argument("--profile", action="store_true", help="also print cProfile of seedrl write/read")
    p.add_argument("--out", default=str(HERE / "results" / "data_store.json"))
    args = p.parse_args(argv)
    systems = set(args.systems.split(","))

    load_start = os.getloadavg()[0]
    image_results: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="seedrl-bench-", dir=args.workdir))
    try:
        t = time.perf_counter()
        episodes = [make_episode(i, args.steps, args.seed) for i in range(args.episodes)]
        indices = np.random.default_rng(args.seed).integers(0, args.episodes, args.random_reads)
        total = args.episodes * args.steps
        print(f"data: {args.episodes} episodes x {args.steps} steps = {total:,} steps, "
              f"{total * STEP_BYTES / 1e6:,.0f} MB payload (built in {time.perf_counter() - t:.1f} s)")
        spec = StepSpec.infer({k: v[0] for k, v in episodes[0].items()})
        chosen = {k: v for k, v in stores(spec).items() if k in systems}
        print("measuring " + ", ".join(name for name, _ in chosen.values()) + " ...", flush=True)
        results = measure(chosen, args, episodes, indices, work) if chosen else []
        for key in chosen:
            shutil.rmtree(work / key, ignore_errors=True)
        loader = []
        if "loader" in systems:
            print("measuring the loader row ...", flush=True)
            loader = measure_loader(args, episodes, work)
        if args.profile and "seedrl" in systems:
            profile(args, episodes, spec, work)
        del episodes
        if "tfds" in systems:
            print("measuring TFDS (in .venv-compat) ...", flush=True)
            tf_res = run_tfds(args, work)
            if tf_res:
                loader += tf_res.pop("loader", [])
                results.append(tf_res)
        if "images" in systems:
            print("measuring images raw / png / jpeg ...", flush=True)
            image_results = measure_images(args.image_episodes, args.steps, args.image_size, args.repeats, args.seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    sums = {r["system"]: (r.get("checksum"), r.get("random_checksum")) for r in results}
    agree = all(len({s[j] for s in sums.values() if s[j] is not None}) <= 1 for j in (0, 1))
    agree = agree and len({(r["windows"], r["checksum"]) for r in loader}) <= 1
    print(f"checksums {'agree' if agree else 'DIFFER: ' + repr(sums)} across systems")
    info = machine_info(Path(args.workdir))
    info.update(next((r.pop("versions") for r in results if "versions" in r), {}))
    info["loadavg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]  # start, end
    if max(info["loadavg_1min"]) > 0.5 * info["cores"]:
        print(f"note: other processes were busy (1-min load average {info['loadavg_1min']} on "
              f"{info['cores']} cores); figures are noisier than on an idle machine")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, {info['filesystem']} at "
          f"{info['workdir']}; pyarrow {info['pyarrow']}; reads are warm-cache; medians of {args.repeats} runs")
    if any(r["system"] == "raw Arrow IPC" for r in results):
        print(table(results))
    if image_results:
        lossless = {r["checksum"] for r in image_results if "jpeg" not in r["system"]}
        print(images_table(image_results))
        print(f"images: raw and png checksums {'agree' if len(lossless) == 1 else 'DIFFER'}")
        agree = agree and len(lossless) == 1
    if loader:
        import _loader

        print(f"loader: windows of {args.window} steps, batches of {args.loader_batch}, one epoch per timing")
        print(_loader.table(loader))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"config": {k: v for k, v in vars(args).items() if k not in ("out", "profile")}, "machine": info,
           "step_bytes": STEP_BYTES, "checksums_agree": agree, "results": results, "images": image_results,
           "loader": loader}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
