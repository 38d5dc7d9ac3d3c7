"""Segments: one append-only Arrow IPC stream per writer, with its index.

Layout of a dataset directory::

    dataset.json                      spec, metadata spec, format version
    segments/<time_ns>-<uid>.arrow    Arrow IPC stream: schema, then one record
                                      batch per episode (steps as rows); the
                                      episode metadata rides in the batch's
                                      custom metadata, so the stream alone is
                                      the source of truth
    segments/<time_ns>-<uid>.index    JSON lines, one per episode: byte offset
                                      and length of its message, steps, CRC-32
                                      of the message's bytes (c), metadata, and
                                      last the CRC-32 of the line itself (k): a
                                      cache for random access, plus the checksums
    set_aside/                        what repair took out of a segment and could
                                      not rebuild (see :mod:`seedrl.data.repair`)

A writer holds an exclusive ``flock`` on its ``.arrow`` file while open; the
lock dies with the process, so a segment whose lock can be taken has no live
writer. The writer writes the batch, flushes it, then appends its index line:
after ``kill -9`` the index may lag the stream by one episode, and the stream
may end in a torn message. :func:`seedrl.data.repair.scan_segment` recovers both.

Checksums are ``zlib.crc32`` of the episode's whole Arrow message (metadata
and body), taken from the bytes as they landed in the file. zlib is in the
standard library (no new core dependency) and runs at GB/s. Both CRC-32
and CRC-32C catch every burst of up to 32 bits (so every single-byte change)
and miss random damage with probability 2^-32; CRC-32C's edge (Hamming
distance at some lengths, speed with SSE4.2) is not worth a dependency here.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from seedrl.data import metadata as meta

SEGMENTS = "segments"
SET_ASIDE = "set_aside"
METADATA_KEY = b"seedrl.episode"
SPEC_KEY = b"seedrl.step_spec"
LINE_CRC = ',"k":'  # an index line ends with its own CRC-32  # the StepSpec as JSON, in each segment's schema metadata
EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC end-of-stream marker


@dataclass
class EpisodeEntry:
    """Where one episode lives: its segment, byte range, length, id and metadata."""

    segment: str
    offset: int
    length: int
    num_steps: int
    episode_id: Any
    metadata: dict = field(default_factory=dict)
    crc: int | None = None  # CRC-32 of the message; None: written before checksums, or rebuilt from the stream

    @property
    def end(self) -> int:
        return self.offset + self.length

    def index_line(self) -> str:
        """One JSON line; its last field ``k`` is the CRC-32 of the line up to it (closed by ``}``)."""
        line = {"o": self.offset, "n": self.length, "steps": self.num_steps}
        if self.crc is not None:
            line["c"] = self.crc
        body = json.dumps({**line, "meta": meta.encode(self.metadata)}, separators=(",", ":"))
        return f'{body[:-1]}{LINE_CRC}{checksum(body.encode())}}}'


def checksum(data: Any) -> int:
    """CRC-32 (zlib) of a bytes-like object (a pyarrow Buffer works, without a copy)."""
    return zlib.crc32(memoryview(data))


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


def read_index(index_path: Path, segment: str, damaged: list[bytes] | None = None) -> list[EpisodeEntry]:
    """Index lines of a segment. A torn last line (no newline) is ignored; a line that does not
    parse or fails its own checksum is skipped (appended to ``damaged``): the stream still holds
    its episode. Lines written before line checksums are taken as they are."""
    if not index_path.exists():
        return []
    entries = []
    with open(index_path, "rb") as fh:
        data = fh.read()
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn (or empty)
        if not line:
            continue
        try:
            entries.append(_parse_line(line, segment))
        except (ValueError, KeyError, TypeError, AttributeError):
            if damaged is not None:
                damaged.append(line)
    return entries


def _parse_line(line: bytes, segment: str) -> EpisodeEntry:
    """One index line; lines with an episode checksum ``c`` always carry their own ``k`` (both came
    together), so a line without ``k`` is taken unverified only if it has no ``c`` either."""
    d = json.loads(line, object_pairs_hook=_unique_keys)
    cut = line.rfind(LINE_CRC.encode())
    if ("k" in d or "c" in d) and ("k" not in d or cut < 0 or checksum(line[:cut] + b"}") != d["k"]):
        raise ValueError("index line fails its checksum")
    m = meta.decode(d["meta"])
    if not all(isinstance(d[k], int) and d[k] >= 0 for k in ("o", "n", "steps")):
        raise ValueError("index line: bad offset, length or steps")
    return EpisodeEntry(segment, d["o"], d["n"], d["steps"], m.get("episode_id"), m, d.get("c"))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"index line: repeated key in {keys}")
    return dict(pairs)


def read_schema(buf: pa.Buffer) -> tuple[pa.Schema | None, int]:
    """A segment's own schema and the offset just past its message.

    The message's frame (continuation marker, metadata length) is read by
    hand, so the offset is known even when the schema itself does not
    decode (then the schema is None); the offset is 0 if the frame is bad too.
    """
    head = buf.slice(0, min(8, buf.size)).to_pybytes()
    if len(head) < 8:
        return None, 0
    pre, n = (8, head[4:8]) if head[:4] == b"\xff\xff\xff\xff" else (4, head[:4])
    end = pre + int.from_bytes(n, "little", signed=True)
    if not pre < end <= buf.size:
        return None, 0
    try:
        return pa.ipc.read_schema(pa.ipc.read_message(pa.BufferReader(buf.slice(0, end)))), end
    except (pa.ArrowException, OSError, EOFError, ValueError):
        return None, end


def schema_mismatch(own: pa.Schema, expected: pa.Schema) -> str | None:
    """Where a segment's schema departs from the one ``dataset.json`` describes (None: same)."""
    if own.remove_metadata().equals(expected):
        return None
    for f in expected:
        i = own.get_field_index(f.name)
        if i < 0:
            return f"field '{f.name}' is missing"
        if own.field(i).type != f.type:
            return f"field '{f.name}' is {own.field(i).type} in the segment, {f.type} in dataset.json"
    extra = [n for n in own.names if n not in expected.names]
    return f"field(s) {extra} are not in dataset.json" if extra else "fields in another order"
