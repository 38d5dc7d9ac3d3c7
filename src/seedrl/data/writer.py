"""Writing RLDS episodes: many writers, one dataset, no global lock.

Each :class:`DatasetWriter` appends to a segment of its own (see
:mod:`seedrl.data.segment`), so threads and processes write in parallel. The
dataset's spec is fixed by the first writer that commits an episode
(``dataset.json`` is created atomically); every later writer must match it.

    with DatasetWriter("runs/cartpole") as w:
        w.write_episode(columns, metadata={"agent_id": "random"})   # fast path
        with w.episode(metadata={...}) as ep:                      # step by step
            ep.append({"observation": o, "action": a, ...})
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa

from seedrl.data import metadata as meta
from seedrl.data.columns import columns_to_batch, stack_steps
from seedrl.data.episode import Episode
from seedrl.data.errors import DuplicateEpisodeError, EpisodeError, SpecError
from seedrl.data.repair import rebuilt_dataset_info, repair_segment, scan_segment
from seedrl.data.segment import (
    METADATA_KEY,
    SEGMENTS,
    SPEC_KEY,
    EpisodeEntry,
    checksum,
    list_segments,
    lock_exclusive,
    new_segment_name,
    segment_paths,
)
from seedrl.data.spec import StepSpec
from seedrl.durable import fsync_dir

FORMAT = "seedrl.rlds"
FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"


def read_dataset_json(root: Path) -> dict | None:
    """``dataset.json`` of ``root`` (None if absent); :class:`SpecError` naming the file if it is not one."""
    path = Path(root) / DATASET_JSON
    if not path.exists():
        return None
    fix = "; move it aside and `seedrl data validate --repair` rebuilds it from the segments"
    try:
        info = json.loads(path.read_bytes())
    except ValueError as err:
        raise SpecError(f"{path}: not valid JSON ({err}){fix}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise SpecError(f"{path}: not a seedrl RLDS dataset (format={info.get('format') if isinstance(info, dict) else info!r:.40})")
    if not isinstance(info.get("version"), int) or info["version"] > FORMAT_VERSION:
        raise SpecError(f"{path}: format version {info.get('version')!r} is not one this seedrl reads (<= {FORMAT_VERSION})")
    try:
        if info["step_spec"] is not None:
            StepSpec.from_json(info["step_spec"]).arrow_schema()
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SpecError(f"{path}: 'step_spec' is missing or not a valid spec ({type(err).__name__}: {err}){fix}") from None
    return info


def _publish_dataset_json(root: Path, info: dict) -> dict:
    """Create dataset.json atomically; if another writer won the race, return theirs."""
    tmp = root / f".{DATASET_JSON}.{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(info, indent=1))
        fh.flush()
        os.fsync(fh.fileno())  # never an empty dataset.json after a power loss
    try:
        os.link(tmp, root / DATASET_JSON)
        fsync_dir(root)
        return info
    except FileExistsError:
        return read_dataset_json(root)  # type: ignore[return-value]
    finally:
        tmp.unlink()


class DatasetWriter:
    """Appends episodes to an RLDS dataset directory (created if missing).

    Args:
        path: dataset directory. An existing dataset is appended to.
        spec: the step spec; inferred from the first episode if omitted.
        name: dataset name recorded in ``dataset.json`` (default: folder name).
        durable: fsync the segment and its index at each episode end, so that
            episodes survive a machine crash, not only a killed process.
        repair: repair dead writers' segments on open (:mod:`seedrl.data.repair`:
            torn tails and lost index lines go to ``set_aside/``, nothing is destroyed).

    Episode ids are unique within a dataset: an id already in it (as seen when
    the writer opened, plus what it wrote since) is refused. Two writers open
    at once cannot see each other's new ids; ``validate`` reports such repeats.

    Thread-safe: episodes built in several threads may be committed through
    one writer. ``close()`` is idempotent.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        spec: StepSpec | None = None,
        *,
        name: str | None = None,
        durable: bool = False,
        repair: bool = True,
        config: Mapping[str, Any] | None = None,
    ):
        self.root = Path(path)
        self.durable = durable
        self._lock = threading.Lock()
        self._closed = False
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._file: pa.NativeFile | None = None  # unbuffered: each batch goes straight to the OS
        self._lock_fd: int | None = None
        self._index = None
        self._count = 0
        self.name = name or self.root.name
        self._config = dict(config or {})
        (self.root / SEGMENTS).mkdir(parents=True, exist_ok=True)
        info = read_dataset_json(self.root)
        if info is None and repair and list_segments(self.root):
            info = self._rebuild_dataset_json()
        if info is not None:
            existing = StepSpec.from_json(info["step_spec"])
            if spec is not None and spec != existing:
                raise SpecError(f"spec differs from the dataset being appended to ({self.root}): {existing.diff(spec)}")
            spec = existing
        self.spec = spec
        self.metadata_spec: dict | None = info.get("metadata_spec") if info else None
        self._ids = self._existing_ids(repair)
        self.segment = new_segment_name()
        self._uid = self.segment.rsplit("-", 1)[1]

    # ----------------------------------------------------------- public API
    def episode(self, metadata: Mapping[str, Any] | None = None) -> "EpisodeWriter":
        """A step-by-step builder; it commits itself at the step with ``is_last``."""
        self._check_open()
        return EpisodeWriter(self, metadata)

    def write_episode(self, steps: Any, metadata: Mapping[str, Any] | None = None) -> Any:
        """Commit one whole episode; returns its id.

        ``steps`` is an :class:`Episode`, a list of step dicts, or columns:
        nested like a step with a leading step axis (``{'observation':
        array[N, ...], 'reward': array[N], ...}``).
        """
        self._check_open()
        if isinstance(steps, Episode):
            metadata = {**steps.metadata, **(metadata or {})}
            if self.spec is None:
                self.spec = steps.spec
            episode = Episode.from_columns(self.spec, steps.columns, metadata)
        elif isinstance(steps, Sequence):
            episode = Episode.from_steps(steps, metadata, self.spec)
        else:
            if self.spec is None:
                raise SpecError("the first episode written as columns needs spec= (or write a list of steps)")
            episode = Episode.from_columns(self.spec, steps, metadata)
        return self._commit(episode)

    def close(self) -> None:
        """Finish the segment (end-of-stream marker; fsync if ``durable``). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._stream is not None:
                self._stream.close()
                self._index.flush()
                if self.durable:
                    os.fsync(self._lock_fd)
                    os.fsync(self._index.fileno())
                self._index.close()
                self._file.close()
                os.close(self._lock_fd)  # releases the flock

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def episodes_written(self) -> int:
        return self._count

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; explicit close() is the contract
        try:
            self.close()
        except Exception:
            pass

    # -------------------------------------------------------------- helpers
    def _rebuild_dataset_json(self) -> dict:
        rebuilt = rebuilt_dataset_info(self.root)
        warnings.warn(f"{self.root / DATASET_JSON}: missing; rebuilt from the segments' own schema "
                      "(the name is the folder's, the run config is lost)", stacklevel=3)
        return _publish_dataset_json(self.root, {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name,
                                                 **rebuilt, "config": {"rebuilt_by_repair": True}})

    def _existing_ids(self, repair: bool) -> set[str]:
        """Ids of the episodes already in the dataset; repairs dead segments on the way if ``repair``."""
        fallback = self.spec.arrow_schema() if self.spec is not None else None
        ids: set[str] = set()
        for seg in list_segments(self.root):
            result = repair_segment(self.root, seg, fallback) if repair else None
            if result is None:  # a live writer's segment, or no repair asked: read only
                if not segment_paths(self.root, seg)[0].exists():
                    continue
                result = scan_segment(self.root, seg, fallback)
            ids.update(str(e.episode_id) for e in result.entries)
        return ids

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"writer for {self.root} is closed")

    def _commit(self, episode: Episode) -> Any:
        metadata = dict(episode.metadata)
        meta.check_metadata(metadata, self.metadata_spec)
        with self._lock:
            self._check_open()
            if self._stream is None:
                self._open_segment(episode.spec, metadata)
            if episode.spec is not self.spec and episode.spec != self.spec:
                raise SpecError(f"spec differs from the dataset ({self.root}): {self.spec.diff(episode.spec)}")
            if "episode_id" not in metadata:
                metadata = {"episode_id": f"{self._uid}-{self._count}", **metadata}
            key = str(metadata["episode_id"])
            if key in self._ids:
                raise DuplicateEpisodeError(f"episode metadata 'episode_id': {metadata['episode_id']!r} is already in "
                                            f"{self.root}; ids are unique within a dataset")
            batch = columns_to_batch(self.spec, episode.columns, len(episode), self._stream_schema)
            # pyarrow writes the schema message lazily, with the first batch.
            start = self._file.tell() or len(self._stream_schema.serialize())
            self._stream.write_batch(batch, custom_metadata={METADATA_KEY: meta.dumps(metadata)})
            stop = self._file.tell()
            crc = checksum(os.pread(self._lock_fd, stop - start, start))  # the bytes as they landed
            entry = EpisodeEntry(self.segment, start, stop - start, len(episode), metadata["episode_id"], metadata, crc)
            self._index.write(entry.index_line() + "\n")
            self._index.flush()
            if self.durable:  # the index is a cache rebuilt from the stream: only the segment needs syncing
                os.fdatasync(self._lock_fd)
            self._count += 1
            self._ids.add(key)
            return metadata["episode_id"]

    def _open_segment(self, spec: StepSpec, metadata: Mapping[str, Any]) -> None:
        if self.spec is None:
            self.spec = spec
        info = read_dataset_json(self.root) or _publish_dataset_json(
            self.root,
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "name": self.name,
                "step_spec": self.spec.to_json(),
                "metadata_spec": meta.metadata_spec({k: v for k, v in metadata.items() if k != "episode_id"}),
                "config": self._config,
            },
        )
        theirs = StepSpec.from_json(info["step_spec"])
        if theirs != self.spec:
            raise SpecError(f"spec differs from the dataset being appended to ({self.root}): {theirs.diff(self.spec)}")
        self.metadata_spec = info["metadata_spec"]
        meta.check_metadata(metadata, self.metadata_spec)
        arrow_path, index_path = segment_paths(self.root, self.segment)
        # Lock the file before it appears under its .arrow name: another writer's repair
        # pass must never see an unlocked live segment (it would take it for a dead one).
        hidden = arrow_path.with_name(f".{arrow_path.name}.new")
        self._lock_fd = os.open(hidden, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        if not lock_exclusive(self._lock_fd):  # pragma: no cover - fresh unique file
            raise RuntimeError(f"could not lock new segment {arrow_path}")
        self._index = open(index_path, "x", encoding="utf-8")
        os.rename(hidden, arrow_path)
        # The spec rides in the segment's own schema: the stream alone can rebuild dataset.json.
        self._stream_schema = self.spec.arrow_schema().with_metadata({SPEC_KEY: json.dumps(self.spec.to_json())})
        self._file = pa.OSFile(str(arrow_path), "wb")  # same (empty) file; the flock stays on _lock_fd
        self._stream = pa.ipc.new_stream(self._file, self._stream_schema)
        if self.durable:
            fsync_dir(self.root / SEGMENTS)


class EpisodeWriter:
    """Builds one episode step by step (RLDS SAR alignment: step i holds o_i, a_i, r_i, d_i).

    The episode is committed when a step with ``is_last=True`` is appended;
    ``append`` after that raises. Leaving the ``with`` block without an
    ``is_last`` step raises (on an exception the episode is dropped).
    """

    def __init__(self, writer: DatasetWriter, metadata: Mapping[str, Any] | None):
        self._writer = writer
        self.metadata = dict(metadata or {})
        self._steps: list[dict] = []
        self.episode_id: Any = None

    def append(self, step: Mapping[str, Any]) -> Any:
        """Add one step; returns the episode id when this step ends the episode."""
        if self.episode_id is not None:
            raise EpisodeError(f"field 'is_last': a step was appended after is_last (episode {self.episode_id})")
        spec = self._writer.spec
        if spec is None:  # the spec is inferred from this whole first episode
            for flag in ("is_first", "is_last", "is_terminal"):
                if flag not in step:
                    raise SpecError(f"step is missing core RLDS field '{flag}'")
            flags = {k: bool(step[k]) for k in ("is_first", "is_last", "is_terminal")}
        else:
            step = spec.flatten_step(step)
            flags = step
        n = len(self._steps)
        if not n and not flags["is_first"]:
            raise EpisodeError("field 'is_first': the first step of an episode must have is_first=True")
        if n and flags["is_first"]:
            raise EpisodeError(f"field 'is_first': step {n} has is_first=True mid-episode")
        if flags["is_terminal"] and not flags["is_last"]:
            raise EpisodeError(f"field 'is_terminal': step {n} is terminal but not is_last")
        self._steps.append(step)
        if flags["is_last"]:
            return self._finish()
        return None

    def set_metadata(self, **items: Any) -> None:
        self.metadata.update(items)

    def _finish(self) -> Any:
        if self._writer.spec is None:
            episode = Episode.from_steps(self._steps, self.metadata)
        else:
            spec = self._writer.spec
            episode = Episode(spec, stack_steps(spec, self._steps), self.metadata)
        self.episode_id = self._writer._commit(episode)
        self._steps = []
        return self.episode_id

    def abort(self) -> None:
        """Drop the steps buffered so far."""
        self._steps = []

    def __len__(self) -> int:
        return len(self._steps)

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif self.episode_id is None:
            n = len(self._steps)
            self.abort()
            raise EpisodeError(f"field 'is_last': the episode ended after {n} steps without an is_last step; dropped")
