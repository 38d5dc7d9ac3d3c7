"""Reading RLDS datasets: iteration, random access, field selection, filters.

Segments are memory-mapped; an episode is one Arrow message at a known byte
range, so ``dataset[i]`` and ``dataset.episode(id)`` decode just that message
(no scan) and numeric columns are views of the map (zero copy).

Integrity on read: each segment's own schema must equal the one
``dataset.json`` describes (else :class:`SpecError` naming the field, rather
than garbage), and with ``verify=True`` (the default) an episode's checksum
is checked the first time this dataset object reads it: one CRC pass over
its bytes (GB/s), which replay sampling, reading the same episodes again and
again, pays once. ``verify=False`` skips it.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from seedrl.data.columns import batch_to_columns, object_column
from seedrl.data.episode import Episode
from seedrl.data.errors import ChecksumError, DataError, MissingKeyError, SpecError
from seedrl.data.repair import scan_segment, warn_problems
from seedrl.data.segment import (
    SEGMENTS,
    EpisodeEntry,
    checksum,
    has_live_writer,
    list_segments,
    schema_mismatch,
    segment_paths,
)
from seedrl.data.spec import FieldSpec, StepSpec
from seedrl.data.writer import FORMAT, FORMAT_VERSION, read_dataset_json


class Dataset:
    """A read-only view of an RLDS dataset directory.

    ``Dataset(path)`` opens every segment (including ones still being written:
    call :meth:`refresh` to see new episodes). ``select`` and ``filter``
    return narrower views sharing the same memory maps. ``verify``: check each
    episode's checksum on its first read (see the module doc).
    """

    def __init__(self, path: str | os.PathLike, fields: Iterable[str] | None = None, *, verify: bool = True):
        self.root = Path(path)
        self.verify = verify
        self._verified: set[tuple[str, int]] = set()  # shared with views: (segment, offset)
        info = read_dataset_json(self.root)
        if info is None:
            if not (self.root / SEGMENTS).is_dir():
                raise FileNotFoundError(f"{self.root}: no dataset.json here; not an RLDS dataset written by seedrl")
            if list_segments(self.root):
                raise DataError(f"{self.root / 'dataset.json'}: missing, but segments/ holds "
                                f"{len(list_segments(self.root))} segment(s); `seedrl data validate --repair` "
                                "rebuilds it from the segments' own schema")
            # A writer opened it but committed no episode yet: an empty dataset with no spec.
            info = {"format": FORMAT, "version": FORMAT_VERSION, "name": self.root.name, "step_spec": None}
        self.info = info
        self.full_spec = StepSpec.from_json(info["step_spec"]) if info["step_spec"] else None
        if self.full_spec is None:
            self.spec = None
        else:
            self.spec = self.full_spec.select(fields) if fields is not None else self.full_spec
        self._maps: dict[str, pa.Buffer] = {}
        self._schema = self.full_spec.arrow_schema() if self.full_spec else None
        self._entries: list[EpisodeEntry] = []
        self._warned: set[str] = set()
        #: segment -> bytes of a torn tail left by a killed writer (ignored when reading)
        self.torn_tails: dict[str, int] = {}
        #: segment -> what is wrong with it (torn tail, unreadable header, index past its end, damaged index lines)
        self.damage: dict[str, list[str]] = {}
        self.refresh()

    # ------------------------------------------------------------ loading
    def refresh(self) -> "Dataset":
        """Pick up episodes committed since opening (and new segments)."""
        entries: list[EpisodeEntry] = []
        for seg in list_segments(self.root):
            arrow_path = segment_paths(self.root, seg)[0]
            result = scan_segment(self.root, seg, self._schema)
            if result.schema is not None and self._schema is not None:
                why = schema_mismatch(result.schema, self._schema)
                if why:
                    raise SpecError(f"{arrow_path}: its schema does not match {self.root / 'dataset.json'}: {why} "
                                    "(an edited dataset.json, or a damaged segment header); nothing is read")
            problems = result.problems()
            if problems and not has_live_writer(arrow_path):
                if result.torn_bytes:
                    self.torn_tails[seg] = result.torn_bytes
                self.damage[seg] = problems
                if seg not in self._warned:
                    self._warned.add(seg)
                    warn_problems(arrow_path, result)
            else:
                self.torn_tails.pop(seg, None)
                self.damage.pop(seg, None)
            entries.extend(result.entries)
            self._maps.pop(seg, None)  # the file may have grown: remap lazily
        self._set_entries(entries)
        return self

    def _set_entries(self, entries: list[EpisodeEntry]) -> None:
        self._entries = entries
        self._id_to_index = {str(e.episode_id): i for i, e in enumerate(entries)}
        self._cum_steps = np.concatenate([[0], np.cumsum([e.num_steps for e in entries], dtype=np.int64)])

    def _view(self, entries: list[EpisodeEntry], spec: StepSpec | None = None) -> "Dataset":
        view = object.__new__(Dataset)
        view.__dict__.update(self.__dict__)
        view.spec = spec or self.spec
        view._set_entries(entries)
        return view

    def _map(self, segment: str) -> pa.Buffer:
        """The whole segment as one zero-copy buffer over its memory map."""
        buf = self._maps.get(segment)
        if buf is None:
            mm = pa.memory_map(str(segment_paths(self.root, segment)[0]))
            buf = self._maps[segment] = mm.read_buffer()  # a view of the map: slicing it copies nothing
        return buf

    # ------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._entries)

    @property
    def num_steps(self) -> int:
        return int(self._cum_steps[-1])

    @property
    def entries(self) -> Sequence[EpisodeEntry]:
        return self._entries

    @property
    def episode_ids(self) -> list[Any]:
        return [e.episode_id for e in self._entries]

    def read_batch(self, index: int) -> pa.RecordBatch:
        """The raw Arrow record batch of episode ``index`` (zero copy)."""
        e = self._entries[index]
        buf = self._map(e.segment).slice(e.offset, e.length)
        if self.verify and (e.segment, e.offset) not in self._verified:
            check_entry(e, buf)
            self._verified.add((e.segment, e.offset))
        return pa.ipc.read_record_batch(pa.ipc.read_message(buf), self._schema)

    def verify_episode(self, index: int) -> bool:
        """Check episode ``index`` against its checksum: True if it matches, False if it has none
        (written before checksums, or found in the stream by repair); :class:`ChecksumError` if not."""
        e = self._entries[index]
        ok = check_entry(e, self._map(e.segment).slice(e.offset, e.length))
        self._verified.add((e.segment, e.offset))
        return ok

    def __getitem__(self, index: int) -> Episode:
        n = len(self._entries)
        if not -n <= index < n:
            raise IndexError(f"episode {index} out of range for a dataset of {n} episodes")
        index %= n
        columns = batch_to_columns(self.spec, self.read_batch(index))
        return Episode(self.spec, columns, self._entries[index].metadata)

    def index_of(self, episode_id: Any) -> int:
        """The index of the episode with this id (ids compare as strings)."""
        try:
            return self._id_to_index[str(episode_id)]
        except KeyError:
            raise MissingKeyError(f"no episode with id {episode_id!r} in {self.root}") from None

    def episode(self, episode_id: Any) -> Episode:
        """Random access by episode id."""
        return self[self.index_of(episode_id)]

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def steps(self) -> Iterator[Any]:
        """Every step of every episode, in order, as nested dicts."""
        for ep in self:
            yield from ep

    # -------------------------------------------------------------- views
    def select(self, fields: Iterable[str]) -> "Dataset":
        """A view reading only ``fields`` (paths; a prefix selects a subtree)."""
        return self._view(self._entries, self.full_spec.select(fields))

    def filter(self, predicate: Callable[[dict], bool]) -> "Dataset":
        """A view of the episodes whose metadata satisfies ``predicate`` (no step is read)."""
        return self._view([e for e in self._entries if predicate(e.metadata)])

    def take(self, indices: Sequence[int]) -> "Dataset":
        return self._view([self._entries[i] for i in indices])

    # ----------------------------------------------------------- sampling
    def locate_step(self, flat_step: int) -> tuple[int, int]:
        """Global step number -> (episode index, step within episode)."""
        if not 0 <= flat_step < self.num_steps:
            raise IndexError(f"step {flat_step} out of range for {self.num_steps} steps")
        ep = bisect.bisect_right(self._cum_steps, flat_step) - 1
        return ep, int(flat_step - self._cum_steps[ep])

    def sample_steps(self, batch_size: int, rng: np.random.Generator | int | None = None) -> dict[str, np.ndarray]:
        """``batch_size`` steps drawn uniformly over all steps, as ``{path: [B, ...]}``."""
        rng = np.random.default_rng(rng)
        if self.num_steps == 0:
            raise DataError(f"cannot sample from an empty dataset ({self.root})")
        picks = rng.integers(0, self.num_steps, size=batch_size)
        rows = [self.locate_step(int(p)) for p in picks]
        cols: dict[str, list] = {p: [] for p in self.spec.paths}
        for ep_index, t in rows:
            columns = batch_to_columns(self.spec, self.read_batch(ep_index).slice(t, 1))
            for p in cols:
                cols[p].append(columns[p][0])
        return {f.path: _stack(f, cols[f.path]) for f in self.spec.fields}

    def sample_sequences(
        self,
        batch_size: int,
        length: int,
        rng: np.random.Generator | int | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Fixed-length windows for replay: ``({path: [B, L, ...]}, mask [B, L])``.

        A window starts at a step drawn uniformly over all steps and never
        crosses into the next episode: steps past the episode's ``is_last``
        step are zero padding with ``mask`` False.
        """
        if length < 1:
            raise DataError(f"length must be >= 1, got {length}")
        rng = np.random.default_rng(rng)
        if self.num_steps == 0:
            raise DataError(f"cannot sample from an empty dataset ({self.root})")
        picks = rng.integers(0, self.num_steps, size=batch_size)
        out = {f.path: [] for f in self.spec.fields}
        mask = np.zeros((batch_size, length), dtype=bool)
        for b, p in enumerate(picks):
            ep_index, t = self.locate_step(int(p))
            stop = min(t + length, self._entries[ep_index].num_steps)
            columns = batch_to_columns(self.spec, self.read_batch(ep_index).slice(t, stop - t))
            mask[b, : stop - t] = True
            for f in self.spec.fields:
                out[f.path].append(_pad(columns[f.path], length))
        return {f.path: _stack(f, out[f.path]) for f in self.spec.fields}, mask

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, episodes={len(self)}, steps={self.num_steps})"


def check_entry(entry: EpisodeEntry, buf: pa.Buffer) -> bool:
    """Raise :class:`ChecksumError` if ``buf`` (the entry's bytes) fails its checksum; False if it has none."""
    if entry.crc is None:
        return False
    got = checksum(buf)
    if got != entry.crc:
        raise ChecksumError(
            f"segment {entry.segment}, episode {entry.episode_id!r} (bytes {entry.offset}..{entry.end}): checksum "
            f"{got:#010x} != {entry.crc:#010x} recorded when written; its bytes were altered"
        )
    return True


def _stack(f: FieldSpec, values: list) -> np.ndarray:
    """Stack per-sample values: fixed-shape numeric fields densely, others as objects."""
    if f.is_fixed and not f.is_text:
        return np.stack(values) if values else np.zeros((0, *f.shape), f.dtype)
    return object_column(values)


def _pad(column: np.ndarray, length: int) -> np.ndarray:
    n = len(column)
    if n == length:
        return np.array(column)
    if column.dtype == object:
        out = np.empty(length, dtype=object)
        out[:n] = column
        return out
    out = np.zeros((length, *column.shape[1:]), dtype=column.dtype)
    out[:n] = column
    return out


def open_dataset(path: str | os.PathLike, fields: Iterable[str] | None = None, *, verify: bool = True) -> Dataset:
    """Open an RLDS dataset directory for reading (``verify``: see :class:`Dataset`)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"dataset path does not exist: {path}")
    if not Path(path).is_dir():
        raise NotADirectoryError(f"not a dataset directory: {path}")
    return Dataset(path, fields, verify=verify)

