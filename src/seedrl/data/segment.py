"""Segments: one append-only Arrow IPC stream per writer, with its index.

Layout of a dataset directory::

    dataset.json                      spec, metadata spec, format version
    segments/<time_ns>-<uid>.arrow    Arrow IPC stream: schema, then one record
                                      batch per episode (steps as rows); the
                                      episode metadata rides in the batch's
                                      custom metadata, so the stream alone is
                                      the source of truth
    segments/<time_ns>-<uid>.index    JSON lines, one per episode: byte offset
                                      and length of its message, steps, id,
                                      metadata (a cache for random access)
    segments/<time_ns>-<uid>.torn     bytes of an episode that a killed writer
                                      left half written, set aside on repair

A writer holds an exclusive ``flock`` on its ``.arrow`` file while open; the
lock dies with the process, so a segment whose lock can be taken has no live
writer. The writer writes the batch, flushes it, then appends its index line:
after ``kill -9`` the index may lag the stream by one episode, and the stream
may end in a torn message. :func:`scan_segment` recovers both.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from seedrl.data import metadata as meta
from seedrl.data.errors import TornTailWarning

SEGMENTS = "segments"
METADATA_KEY = b"seedrl.episode"
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC end-of-stream marker


def _tail(path: Path, offset: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()


@dataclass
class EpisodeEntry:
    """Where one episode lives: its segment, byte range, length, id and metadata."""

    segment: str
    offset: int
    length: int
    num_steps: int
    episode_id: Any
    metadata: dict = field(default_factory=dict)

    def index_line(self) -> str:
        return json.dumps(
            {"o": self.offset, "n": self.length, "steps": self.num_steps, "meta": meta.encode(self.metadata)},
            separators=(",", ":"),
        )


def new_segment_name() -> str:
    """Sortable by creation time, unique across threads, processes and hosts."""
    return f"{time.time_ns():020d}-{secrets.token_hex(6)}"


def segment_paths(root: Path, name: str) -> tuple[Path, Path]:
    d = root / SEGMENTS
    return d / f"{name}.arrow", d / f"{name}.index"


def list_segments(root: Path) -> list[str]:
    d = root / SEGMENTS
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.arrow"))


def lock_exclusive(fd: int) -> bool:
    """Take the writer lock without blocking; False if a live writer holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def has_live_writer(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_index(index_path: Path, segment: str) -> list[EpisodeEntry]:
    """Index lines of a segment; a torn last line (no newline) is ignored."""
    if not index_path.exists():
        return []
    entries = []
    with open(index_path, "rb") as fh:
        data = fh.read()
    for line in data.split(b"\n")[:-1] if not data.endswith(b"\n") else data.split(b"\n"):
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            break
        m = meta.decode(d["meta"])
        entries.append(EpisodeEntry(segment, d["o"], d["n"], d["steps"], m.get("episode_id"), m))
    return entries


@dataclass
class ScanResult:
    entries: list[EpisodeEntry]
    end: int  # byte offset just past the last complete episode
    size: int  # file size at scan time

    @property
    def torn_bytes(self) -> int:
        return self.size - self.end


def scan_segment(arrow_path: Path, segment: str, known: list[EpisodeEntry]) -> ScanResult:
    """Complete the index of a segment from its stream.

    Episodes after the last indexed one are read from the stream itself
    (metadata from the batch's custom metadata); whatever follows the last
    complete message is a torn tail.
    """
    size = arrow_path.stat().st_size
    end = known[-1].offset + known[-1].length if known else 0
    if known and (end == size or (size - end == len(EOS) and _tail(arrow_path, end) == EOS)):
        return ScanResult(known, size, size)
    entries = list(known)
    with pa.memory_map(str(arrow_path)) as mm:
        try:
            reader = pa.ipc.open_stream(mm)
        except (pa.ArrowInvalid, OSError):
            return ScanResult([], 0, size)  # not even a complete schema
        if not known:
            end = mm.tell()
        skip = len(known)
        while True:
            start = mm.tell()
            try:
                batch, custom = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                end = mm.tell() if mm.tell() == size else end
                break
            except (pa.ArrowInvalid, OSError):
                break
            stop = mm.tell()
            if skip:
                skip -= 1
                end = stop
                continue
            m = meta.loads(custom[METADATA_KEY]) if custom and METADATA_KEY in custom else {}
            entries.append(EpisodeEntry(segment, start, stop - start, batch.num_rows, m.get("episode_id"), m))
            end = stop
    return ScanResult(entries, end, size)


def warn_torn(arrow_path: Path, result: ScanResult) -> None:
    warnings.warn(
        f"segment {arrow_path.name} ends in a torn episode: {result.torn_bytes} bytes after offset "
        f"{result.end} were never completed (a writer was killed mid-write); they are ignored. "
        "Reopening the dataset with a writer sets them aside in a .torn file.",
        TornTailWarning,
        stacklevel=3,
    )


def repair_segment(root: Path, segment: str) -> ScanResult | None:
    """Repair a segment with no live writer: index every complete episode and
    move a torn tail into ``<segment>.torn``. Returns None if a writer is live."""
    arrow_path, index_path = segment_paths(root, segment)
    fd = os.open(arrow_path, os.O_RDWR)
    try:
        if not lock_exclusive(fd):
            return None
        known = read_index(index_path, segment)
        result = scan_segment(arrow_path, segment, known)
        if len(result.entries) != len(known) or _index_needs_rewrite(index_path):
            tmp = index_path.with_suffix(".index.tmp")
            tmp.write_text("".join(e.index_line() + "\n" for e in result.entries))
            os.replace(tmp, index_path)
        if result.torn_bytes > 0 and result.end > 0:
            with open(arrow_path, "rb") as fh:
                fh.seek(result.end)
                tail = fh.read()
            torn = arrow_path.with_suffix(".torn")
            with open(torn, "ab") as out:
                out.write(tail)
                out.flush()
                os.fsync(out.fileno())
            os.truncate(arrow_path, result.end)
            warnings.warn(
                f"segment {arrow_path.name}: set aside {len(tail)} torn bytes in {torn.name}",
                TornTailWarning,
                stacklevel=2,
            )
        return result
    finally:
        os.close(fd)


def _index_needs_rewrite(index_path: Path) -> bool:
    if not index_path.exists():
        return True
    with open(index_path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"
