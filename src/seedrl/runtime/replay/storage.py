"""Per-stream step storage: every step stored once, frames of a frame stack stored once.

A *stream* is the run of entries one environment column of one actor produces
(actor ``a``, column ``n``) between actor restarts. Sequences are windows of
``L`` consecutive entries of a stream; consecutive windows overlap by
``overlap`` entries (SEED's scheme), so a stream entry belongs to one or two
sequences and is stored once.

Storage unit: a *chunk*, the entries one insert adds to one stream (all ``L``
entries when the stream starts, the last ``L - overlap`` when the unroll
continues the stream). A chunk keeps the non-observation fields as small
arrays and the observation frames as one packed blob (see
:mod:`seedrl.runtime.replay.codecs`). A sequence holds references to the
chunks it reads; a chunk is freed when the last sequence referencing it is
evicted. With FIFO eviction a chunk outlives its last-but-one reader by at most
one stride of its stream, so chunk granularity wastes a fraction of about
``streams / capacity`` of the memory.

Frame de-stacking. When observations are frame stacks ``[K, *frame]``, the
stream keeps a flat sequence of frames F and every entry's observation is a
window of K consecutive frames ending at ``end(p)``:
``obs[p] = F[end(p) - K + 1 : end(p) + 1]``. An entry whose stack shifts its
predecessor's by one (``obs[p][:-1] == obs[p - 1][1:]``, compared as bytes, so
only exact repeats are shared) adds one frame (``end(p) = end(p - 1) + 1``);
any other entry (an episode start, a stream start, a non-stacked observation)
adds its K frames. Round trips are byte-exact by construction. Without
de-stacking (``frame_stack=False``) each observation is one "frame".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from seedrl.runtime.replay.codecs import Codec

__all__ = ["Chunk", "SeqRef", "StepStore"]


@dataclass
class Chunk:
    """Consecutive entries ``entry_start ..`` of one stream and the frames they added."""

    stream: int
    entry_start: int
    fields: dict[str, np.ndarray]  # non-observation fields, [k, ...]
    frame_end: np.ndarray  # [k] stream frame index of each entry's last frame
    frame_start: int  # stream frame index of the blob's first frame
    num_frames: int
    blob: object
    refs: int = 0

    @property
    def num_entries(self) -> int:
        return len(self.frame_end)


@dataclass
class SeqRef:
    """A stored sequence: entries ``start .. start + L - 1`` of ``stream``, read from ``chunks`` (in order)."""

    stream: int
    start: int
    chunks: list[int]


@dataclass
class Stream:
    key: tuple[int, int]
    chunks: deque = field(default_factory=deque)  # live chunk ids, oldest first
    next_entry: int = 0
    next_frame: int = 0
    live_seqs: int = 0
    last_obs: np.ndarray | None = None  # observation of the last entry (checks a continuation)


def _bytes_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as ``[len(x), nbytes]`` uint8 rows (byte-exact comparisons: -0.0 != 0.0, NaN == NaN)."""
    return np.ascontiguousarray(x).reshape(len(x), -1).view(np.uint8)


class StepStore:
    """Chunks of stream entries; :meth:`append` stores one unroll column, :meth:`gather` reads sequences back."""

    def __init__(self, sequence_length: int, overlap: int, *, frame_stack: bool | str = "auto", compression: str = "none"):
        self.length = sequence_length
        self.overlap = overlap
        self.frame_stack_option = frame_stack
        self.codec = Codec(compression)
        self.chunks: dict[int, Chunk] = {}
        self.streams: dict[int, Stream] = {}
        self.current: dict[tuple[int, int], int] = {}  # stream key -> id of its current stream
        self.next_chunk = 0
        self.next_stream = 0
        self.obs_shape: tuple | None = None
        self.obs_dtype: np.dtype | None = None
        self.field_specs: dict[str, tuple[tuple, np.dtype]] | None = None
        self.stack = 0  # K when de-stacking frames, 0 when an observation is one frame

    # -------------------------------------------------------------------------------------------- layout
    def set_layout(self, arrays: dict[str, np.ndarray]) -> None:
        """Fix the stored fields, shapes and dtypes (first insert); assigns nothing when it raises."""
        obs_shape = arrays["obs"].shape[2:]
        opt = self.frame_stack_option
        if opt not in ("auto", True, False):
            raise ValueError(f"frame_stack must be 'auto', True or False, got {opt!r}")
        stackable = len(obs_shape) >= 2 and obs_shape[0] > 1
        if opt is True and not stackable:
            raise ValueError(f"frame_stack=True needs observations [K > 1, ...], got obs shape {obs_shape}")
        self.stack = obs_shape[0] if (stackable if opt == "auto" else opt) else 0
        self.obs_shape, self.obs_dtype = obs_shape, arrays["obs"].dtype
        self.field_specs = {k: (v.shape[2:], v.dtype) for k, v in arrays.items() if k != "obs"}

    def check_layout(self, arrays: dict[str, np.ndarray]) -> None:
        """A ValueError naming the field when ``arrays`` differ from the first insert's fields, shapes or dtypes."""
        if "obs" not in arrays:
            raise ValueError("unroll.arrays must have an 'obs' field")
        for k, v in arrays.items():
            if v.ndim < 2 or v.shape[0] != self.length:
                raise ValueError(f"unroll.arrays[{k!r}] must be [sequence_length={self.length}, N, ...], got shape {v.shape}")
        if self.obs_shape is None:
            return
        expected = {"obs": (self.obs_shape, self.obs_dtype), **self.field_specs}
        if set(arrays) != set(expected):
            raise ValueError(f"unroll.arrays fields {sorted(arrays)} differ from the stored fields {sorted(expected)}")
        for k, (shape, dtype) in expected.items():
            if arrays[k].shape[2:] != shape or arrays[k].dtype != dtype:
                raise ValueError(
                    f"unroll.arrays[{k!r}] is {arrays[k].dtype} {arrays[k].shape[2:]} per entry, stored entries are {dtype} {shape}"
                )

    # -------------------------------------------------------------------------------------------- insert
    def continuation(self, key: tuple[int, int], arrays: dict[str, np.ndarray], n: int, continues: bool) -> Stream | None:
        """The stream that column ``n`` continues, or None when it starts a new one.

        A continuing unroll shares its first ``overlap`` entries with the stream's
        last ones when the stream still stores them (one of its sequences is
        live). Its non-observation fields and its last shared observation must
        equal the stored ones: a mismatch is a ValueError (a caller bug), raised
        before anything is stored.
        """
        sid = self.current.get(key)
        if not continues or sid is None or self.streams[sid].live_seqs == 0:
            return None
        st = self.streams[sid]
        ov = self.overlap
        tail = self._read_fields(st, st.next_entry - ov, ov)
        for k, stored in tail.items():
            if not np.array_equal(_bytes_rows(stored), _bytes_rows(arrays[k][:ov, n])):
                raise ValueError(
                    f"unroll of actor {key[0]} continues (continues=True) but env {n}'s first {ov} entries of field "
                    f"{k!r} differ from that stream's last {ov} stored entries"
                )
        if not np.array_equal(_bytes_rows(st.last_obs[None]), _bytes_rows(arrays["obs"][ov - 1, n][None])):
            raise ValueError(
                f"unroll of actor {key[0]} continues (continues=True) but env {n}'s entry {ov - 1} obs differs from that stream's last stored obs"
            )
        return st

    def append(self, key: tuple[int, int], arrays: dict[str, np.ndarray], n: int, st: Stream | None) -> SeqRef:
        """Store column ``n`` of ``arrays`` (``[L, N, ...]``) as the next sequence of stream ``st`` (None: a new stream)."""
        if st is None:
            old = self.current.get(key)
            if old is not None and self.streams[old].live_seqs == 0:
                del self.streams[old]  # nothing reads it any more; release() dropped its chunks
            st = Stream(key)
            self.streams[self.next_stream] = st
            self.current[key] = self.next_stream
            sid, self.next_stream = self.next_stream, self.next_stream + 1
            first_new = 0
        else:
            sid, first_new = self.current[key], self.overlap
        obs = arrays["obs"][:, n]
        start = st.next_entry - first_new
        k = self.length - first_new
        if self.stack:
            rows = _bytes_rows(obs).reshape(self.length, self.stack, -1)
            shifted = np.zeros(k, dtype=bool)
            lo = max(first_new, 1)
            shifted[lo - first_new :] = np.all(rows[lo:, :-1] == rows[lo - 1 : -1, 1:], axis=(1, 2))
            counts = np.where(shifted, 1, self.stack)
            entry_idx = np.repeat(np.arange(first_new, self.length), counts)
            ends = np.cumsum(counts)
            frame_idx = np.arange(ends[-1]) - np.repeat(ends - counts, counts) + np.repeat(self.stack - counts, counts)
            frames = obs[entry_idx, frame_idx]
            frame_end = st.next_frame + ends - 1
        else:
            frames = obs[first_new:]
            frame_end = st.next_frame + np.arange(k)
        chunk = Chunk(
            sid,
            st.next_entry,
            {f: np.array(v[first_new:, n]) for f, v in arrays.items() if f != "obs"},
            frame_end.astype(np.int64),
            st.next_frame,
            len(frames),
            self.codec.pack(np.array(frames)),
        )
        cid, self.next_chunk = self.next_chunk, self.next_chunk + 1
        self.chunks[cid] = chunk
        st.chunks.append(cid)
        st.next_entry += k
        st.next_frame += len(frames)
        st.last_obs = np.array(obs[-1])
        # The chunks the sequence reads: back from the newest until the one holding its first frame.
        first_frame = self._frame_end(st, start) - max(self.stack, 1) + 1
        refs = []
        for c in reversed(st.chunks):
            refs.append(c)
            if self.chunks[c].frame_start <= first_frame:
                break
        refs.reverse()
        for c in refs:
            self.chunks[c].refs += 1
        st.live_seqs += 1
        return SeqRef(sid, start, refs)

    def release(self, ref: SeqRef) -> None:
        """Drop one sequence; free the chunks (and the stream) nothing references any more."""
        st = self.streams[ref.stream]
        for c in ref.chunks:
            chunk = self.chunks[c]
            chunk.refs -= 1
            if chunk.refs == 0:
                del self.chunks[c]
                if st.chunks[0] == c:
                    st.chunks.popleft()
                else:
                    st.chunks.remove(c)
        st.live_seqs -= 1
        if st.live_seqs == 0 and self.current.get(st.key) != ref.stream:
            del self.streams[ref.stream]

    # -------------------------------------------------------------------------------------------- read
    def _locate(self, st: Stream, entry: int) -> Chunk:
        for c in reversed(st.chunks):
            chunk = self.chunks[c]
            if chunk.entry_start <= entry:
                return chunk
        raise KeyError(entry)

    def _frame_end(self, st: Stream, entry: int) -> int:
        chunk = self._locate(st, entry)
        return int(chunk.frame_end[entry - chunk.entry_start])

    def _read_fields(self, st: Stream, start: int, count: int) -> dict[str, np.ndarray]:
        out = {f: np.empty((count, *shape), dtype) for f, (shape, dtype) in self.field_specs.items()}
        for c in st.chunks:
            self._copy_fields(self.chunks[c], start, count, out, None)
        return out

    def _copy_fields(self, chunk: Chunk, start: int, count: int, out: dict, column: int | None) -> np.ndarray:
        """Copy the chunk's part of entries ``start .. start + count - 1`` into ``out``; returns their frame ends."""
        lo = max(start, chunk.entry_start)
        hi = min(start + count, chunk.entry_start + chunk.num_entries)
        if hi <= lo:
            return chunk.frame_end[:0]
        src, dst = slice(lo - chunk.entry_start, hi - chunk.entry_start), slice(lo - start, hi - start)
        for f, v in chunk.fields.items():
            if column is None:
                out[f][dst] = v[src]
            else:
                out[f][dst, column] = v[src]
        return chunk.frame_end[src]

    def resolve(self, refs: list[SeqRef]) -> list[tuple[int, list[Chunk]]]:
        """``(start, chunks)`` of each sequence: what :meth:`gather` reads. Chunks never change once
        stored, so the result stays valid after the sequences are evicted (the objects stay alive)."""
        return [(ref.start, [self.chunks[c] for c in ref.chunks]) for ref in refs]

    def gather(self, seqs: list[tuple[int, list[Chunk]]]) -> dict[str, np.ndarray]:
        """The sequences ``seqs`` (from :meth:`resolve`) as arrays ``[L, len(seqs), ...]``."""
        b, L = len(seqs), self.length
        out = {"obs": np.empty((L, b, *self.obs_shape), self.obs_dtype)}
        out.update({f: np.empty((L, b, *shape), dtype) for f, (shape, dtype) in self.field_specs.items()})
        frame_shape = self.obs_shape[1:] if self.stack else self.obs_shape
        window = np.arange(self.stack) - self.stack + 1 if self.stack else 0
        for j, (start, chunks) in enumerate(seqs):
            ends = np.concatenate([self._copy_fields(c, start, L, out, j) for c in chunks])
            parts = [self.codec.unpack(c.blob, (c.num_frames, *frame_shape), self.obs_dtype) for c in chunks]
            frames = parts[0] if len(parts) == 1 else np.concatenate(parts)
            idx = ends - chunks[0].frame_start
            out["obs"][:, j] = frames[idx[:, None] + window] if self.stack else frames[idx]
        return out

    # -------------------------------------------------------------------------------------------- accounting
    def memory(self) -> dict[str, int]:
        """Bytes held: ``frames`` (packed blobs), ``fields`` (other entry fields and frame indices),
        ``tails`` (each stream's last observation), and counts ``entries`` and ``frames_stored``."""
        frames = sum(Codec.nbytes(c.blob) for c in self.chunks.values())
        fields = sum(sum(v.nbytes for v in c.fields.values()) + c.frame_end.nbytes for c in self.chunks.values())
        tails = sum(s.last_obs.nbytes for s in self.streams.values() if s.last_obs is not None)
        return {
            "frames": frames,
            "fields": fields,
            "tails": tails,
            "entries": sum(c.num_entries for c in self.chunks.values()),
            "frames_stored": sum(c.num_frames for c in self.chunks.values()),
            "chunks": len(self.chunks),
        }
