"""Recovering the segments of dead writers: scan, then repair that never destroys.

A segment is an Arrow IPC stream plus an index that caches where each
episode's message lies and holds its checksum (:mod:`seedrl.data.segment`).
:func:`scan_segment` reads what a segment holds now:

- index entries that lie inside the file are kept as they are: the index is
  the only home of their checksums, and a damaged schema header or tail says
  nothing against them (their checksums do, in ``validate``);
- index entries that reach past the end of the file are ``lost`` (the file
  was truncated): their bytes are gone;
- after the last kept entry, the stream is walked message by message; each
  complete record batch is an episode the index missed (a writer killed
  between the batch and its index line), decoded with the segment's own
  schema or, when its header does not decode, with ``dataset.json``'s;
- whatever follows is the tail: clean if empty or exactly the end-of-stream
  marker, torn otherwise.

:func:`repair_segment` (only on a segment no live writer holds) then

1. copies every byte and index line it is about to drop into
   ``set_aside/<segment>.<offset>.torn`` / ``.index`` (fsynced first);
2. rewrites the index as kept + found entries (atomically): never fewer than
   the kept ones, so no checksum is ever lost;
3. truncates the segment at the end of its last episode only when it
   understands the segment (its own schema decodes, so the tail is the torn
   rest of a message); a segment it does not understand is never truncated;
4. moves a segment holding no episode at all (a writer killed before its
   first message was complete) whole into ``set_aside/``.

A lost ``dataset.json`` is rebuilt from a segment's own schema, whose
metadata carries the step spec (:func:`rebuilt_dataset_info`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from seedrl.data import metadata as meta
from seedrl.data.errors import DamagedSegmentWarning, DataError, TornTailWarning
from seedrl.data.segment import (
    EOS,
    METADATA_KEY,
    SET_ASIDE,
    SPEC_KEY,
    EpisodeEntry,
    list_segments,
    lock_exclusive,
    read_index,
    read_schema,
    segment_paths,
)
from seedrl.durable import replace_durably

_ARROW_ERRORS = (pa.ArrowException, OSError, EOFError, ValueError, KeyError)


@dataclass
class ScanResult:
    entries: list[EpisodeEntry]  # readable episodes: kept index entries, then ones found in the stream
    end: int  # byte offset just past the last readable episode (or the schema message)
    size: int  # file size at scan time
    lost: list[EpisodeEntry] = field(default_factory=list)  # index entries past the end of the file
    schema: pa.Schema | None = None  # the segment's own schema; None if its header does not decode
    found: int = 0  # episodes found in the stream that the index did not list
    clean: bool = True  # nothing after ``end`` but (at most) the end-of-stream marker
    damaged_lines: list[bytes] = field(default_factory=list)  # index lines that failed to parse or their checksum

    @property
    def torn_bytes(self) -> int:
        return 0 if self.clean else self.size - self.end

    @property
    def warning_class(self) -> type[UserWarning]:
        """A torn tail alone is the ordinary trace of a killed writer; anything more is damage."""
        only_torn = self.schema is not None and not self.lost and not self.damaged_lines
        return TornTailWarning if only_torn else DamagedSegmentWarning

    def problems(self) -> list[str]:
        """What is wrong with this segment beyond a lagging index, one line each."""
        out = []
        if self.schema is None and self.size:
            out.append(f"schema header unreadable ({len(self.entries)} indexed episode(s) read with dataset.json's "
                       "schema, their checksums vouch for them); repair leaves such a segment as it is")
        if self.lost:
            ids = [str(e.episode_id) for e in self.lost]
            out.append(f"{len(self.lost)} index entr(ies) point past the end of the file ({self.size} bytes; "
                       f"truncated): episode(s) {ids[:5]}{'...' if len(ids) > 5 else ''} are lost; repair sets their index "
                       f"lines aside in {SET_ASIDE}/")
        if self.damaged_lines:
            out.append(f"{len(self.damaged_lines)} index line(s) damaged (an episode still in the stream is read "
                       f"from it, without a checksum); repair sets the old index aside in {SET_ASIDE}/")
        if self.torn_bytes:
            out.append(f"torn tail of {self.torn_bytes} bytes after offset {self.end} (a writer was killed "
                       f"mid-episode); repair sets it aside in {SET_ASIDE}/")
        return out


def scan_segment(root: Path, segment: str, fallback: pa.Schema | None = None) -> ScanResult:
    """What segment ``segment`` of dataset ``root`` holds, by its index and its stream (see the module doc)."""
    arrow_path, index_path = segment_paths(root, segment)
    damaged: list[bytes] = []
    known = read_index(index_path, segment, damaged)  # before the size: the index never runs ahead of the file
    size = arrow_path.stat().st_size
    kept = sorted((e for e in known if e.end <= size), key=lambda e: e.offset)
    lost = [e for e in known if e.end > size]
    if size == 0:
        return ScanResult([], 0, 0, lost, damaged_lines=damaged)
    with pa.memory_map(str(arrow_path)) as mm:
        buf = mm.read_buffer()
        schema, header_end = read_schema(buf)
        decode_with = schema or fallback
        entries: list[EpisodeEntry] = []
        found = 0
        pos = header_end or (kept[0].offset if kept else 0)
        for e in kept:  # episodes in gaps between indexed ones: their index lines were damaged
            if e.offset > pos and decode_with is not None:
                more, _ = _walk(buf, pos, decode_with, segment, stop=e.offset)
                entries += more
                found += len(more)
            entries.append(e)
            pos = max(pos, e.end)
        end = pos
        if not _clean_end(buf, end) and decode_with is not None and end:
            more, end = _walk(buf, end, decode_with, segment)
            entries += more
            found += len(more)
        clean = _clean_end(buf, end)
    return ScanResult(entries, end, size, lost, schema, found, clean, damaged)


def _clean_end(buf: pa.Buffer, end: int) -> bool:
    """Nothing after ``end`` but, at most, the end-of-stream marker."""
    return end == buf.size or (buf.size - end == len(EOS) and buf.slice(end).to_pybytes() == EOS)


def _walk(buf: pa.Buffer, start: int, schema: pa.Schema, segment: str,
          stop: int | None = None) -> tuple[list[EpisodeEntry], int]:
    """Complete record-batch messages from ``start`` (up to ``stop``), each as an episode entry (no
    checksum: nothing recorded one). Stops at the first message that is not a whole, decodable batch."""
    entries = []
    limit = buf.size if stop is None else stop
    reader = pa.BufferReader(buf.slice(start, limit - start))
    head = schema.serialize().to_pybytes()
    pos = start
    while pos < limit:
        try:
            msg = pa.ipc.read_message(reader)
            if msg.type != "record batch":
                break
            stream = pa.ipc.open_stream(pa.py_buffer(head + msg.serialize().to_pybytes()))
            batch, custom = stream.read_next_batch_with_custom_metadata()
            m = meta.loads(custom[METADATA_KEY]) if custom and METADATA_KEY in custom else {}
        except _ARROW_ERRORS:
            break
        end = start + reader.tell()
        entries.append(EpisodeEntry(segment, pos, end - pos, batch.num_rows, m.get("episode_id"), m))
        pos = end
    return entries, pos


def warn_problems(arrow_path: Path, result: ScanResult) -> None:
    """One warning per damaged segment: torn tails are a TornTailWarning, worse damage a DamagedSegmentWarning."""
    problems = result.problems()
    if not problems:
        return
    warnings.warn(
        f"segment {arrow_path.name}: " + "; ".join(problems) + ". Readers skip what they cannot read; "
        "`seedrl data validate --repair` (or opening a writer) repairs.",
        result.warning_class,
        stacklevel=3,
    )


def repair_segment(root: Path, segment: str, fallback: pa.Schema | None = None) -> ScanResult | None:
    """Repair a segment with no live writer (see the module doc). Returns None if a writer is live.

    ``fallback``: the schema of ``dataset.json``, to read a segment whose own header does not decode.
    """
    arrow_path, index_path = segment_paths(root, segment)
    fd = os.open(arrow_path, os.O_RDWR)
    try:
        if not lock_exclusive(fd):
            return None
        result = scan_segment(root, segment, fallback)
        if result.damaged_lines:
            _set_aside(root, f"{segment}.index.damaged", index_path.read_bytes())
        if result.lost:
            first = result.lost[0].offset
            _set_aside(root, f"{segment}.{first}.index", "".join(e.index_line() + "\n" for e in result.lost).encode())
        if not result.entries and result.size and result.schema is None:
            _set_aside_whole(root, arrow_path, index_path)
            return result
        if result.torn_bytes:
            with open(arrow_path, "rb") as fh:
                fh.seek(result.end)
                _set_aside(root, f"{segment}.{result.end}.torn", fh.read())
        if result.lost or result.found or result.damaged_lines or _index_needs_rewrite(index_path):
            replace_durably(index_path, "".join(e.index_line() + "\n" for e in result.entries).encode())
        if result.torn_bytes and result.schema is not None:
            os.truncate(arrow_path, result.end)  # its bytes are in set_aside/ already
        if result.torn_bytes or result.lost or result.damaged_lines:
            warnings.warn(
                f"segment {arrow_path.name}: set aside {result.torn_bytes} bytes, {len(result.lost)} index "
                f"line(s) of lost episodes" + (" and the damaged index" if result.damaged_lines else "")
                + f" in {root / SET_ASIDE}" + ("" if result.schema is not None else
                                                      "; the segment is left as it is (its schema header is unreadable)"),
                result.warning_class,
                stacklevel=2,
            )
        return result
    finally:
        os.close(fd)


def _set_aside(root: Path, name: str, data: bytes) -> Path:
    """Write ``data`` durably under ``set_aside/``; an identical earlier copy is kept as is."""
    folder = root / SET_ASIDE
    folder.mkdir(exist_ok=True)
    path, k = folder / name, 0
    while path.exists():
        if path.read_bytes() == data:
            return path
        k += 1
        path = folder / f"{name}.{k}"
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return path


def _set_aside_whole(root: Path, arrow_path: Path, index_path: Path) -> None:
    folder = root / SET_ASIDE
    folder.mkdir(exist_ok=True)
    for p in (index_path, arrow_path):  # the .arrow last: until it moves, the segment is still listed
        if p.exists():
            os.replace(p, folder / p.name)
    warnings.warn(f"segment {arrow_path.name} holds no readable episode; moved whole to {folder}",
                  DamagedSegmentWarning, stacklevel=3)


def _index_needs_rewrite(index_path: Path) -> bool:
    if not index_path.exists():
        return True
    with open(index_path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def rebuilt_dataset_info(root: Path) -> dict:
    """``step_spec`` and ``metadata_spec`` of a dataset whose ``dataset.json`` is lost, from the
    first segment whose schema decodes and carries the spec (segments written since it does)."""
    for seg in list_segments(root):
        arrow_path, index_path = segment_paths(root, seg)
        if not arrow_path.stat().st_size:
            continue
        with pa.memory_map(str(arrow_path)) as mm:
            schema, _ = read_schema(mm.read_buffer())
        if schema is None or SPEC_KEY not in (schema.metadata or {}):
            continue
        entries = scan_segment(root, seg, schema).entries
        first = {k: v for k, v in (entries[0].metadata if entries else {}).items() if k != "episode_id"}
        return {"step_spec": json.loads(schema.metadata[SPEC_KEY]), "metadata_spec": meta.metadata_spec(first)}
    raise DataError(f"{root / 'dataset.json'}: missing, and no segment's header carries the step spec "
                    "(segments older than this seedrl do not); restore dataset.json from a copy")
