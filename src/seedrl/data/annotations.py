"""Annotations: people's labels, ratings, notes and per-step tags, kept beside a dataset.

A dataset's annotations live in one file, ``<dataset>/annotations.jsonl``, that
no other part of the store reads or writes: annotating never opens, rewrites or
extends a segment (the tests hash every segment before and after). The file is
append-only, one JSON record per line::

    {"episode_id": "a1", "kind": "label",  "value": "good", "op": "add",    "author": "ann", "time": 1.7e9}
    {"episode_id": "a1", "kind": "rating", "value": 4.0,    "op": "set",    ...}
    {"episode_id": "a1", "kind": "note",   "value": "nice recovery at the end", "op": "add", ...}
    {"episode_id": "a1", "kind": "tag",    "value": "mistake here", "step": 17, "op": "add", ...}
    {"episode_id": "a1", "kind": "label",  "value": "good", "op": "remove", ...}

Replaying the records in order gives the current :class:`EpisodeAnnotations`
of each episode: labels and step tags are sets (``add`` / ``remove``), the
rating is the last one set (``remove`` clears it), notes are kept in order
(``remove`` drops equal notes). Nothing is ever rewritten, so every earlier
state, with its author and time, stays in the file.

Records are keyed by episode id (as ``str``: the store's ids compare as
strings) and step index; both are checked against the dataset when written.
Each record is one ``write`` of a whole line on a file opened for appending,
under an exclusive ``flock`` (annotators in several processes append one at
a time), flushed (``durable=True``: fsynced); a line torn by a crash (no newline at the
end of the file) is ignored when reading and cut off by the next writer.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from seedrl.data.errors import DataError
from seedrl.data.reader import Dataset

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: appends are not locked
    fcntl = None

__all__ = ["ANNOTATIONS_FILE", "KINDS", "Annotations", "EpisodeAnnotations", "copy_annotations", "label_filter",
           "with_annotation_metadata"]

ANNOTATIONS_FILE = "annotations.jsonl"
KINDS = ("label", "rating", "note", "tag")
#: episode metadata key under which exports carry the annotations (a JSON text)
METADATA_KEY = "annotations"


@dataclass
class EpisodeAnnotations:
    """The current annotations of one episode (the records replayed in order)."""

    labels: list[str] = field(default_factory=list)
    rating: float | None = None
    notes: list[str] = field(default_factory=list)
    tags: dict[int, list[str]] = field(default_factory=dict)  # step index -> tags, in the order added

    def is_empty(self) -> bool:
        return not (self.labels or self.notes or self.tags) and self.rating is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (step keys as strings, as JSON needs)."""
        return {"labels": list(self.labels), "rating": self.rating, "notes": list(self.notes),
                "tags": {str(k): list(v) for k, v in sorted(self.tags.items())}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EpisodeAnnotations:
        return cls(list(d.get("labels", [])), d.get("rating"), list(d.get("notes", [])),
                   {int(k): list(v) for k, v in d.get("tags", {}).items()})

    def apply(self, rec: Mapping[str, Any]) -> None:
        kind, value, remove = rec["kind"], rec["value"], rec.get("op") == "remove"
        if kind == "rating":
            self.rating = None if remove else float(value)
        elif kind == "note":
            self.notes = [n for n in self.notes if n != value] if remove else [*self.notes, value]
        elif kind == "label":
            _toggle(self.labels, value, remove)
        elif kind == "tag":
            step = int(rec["step"])
            tags = self.tags.setdefault(step, [])
            _toggle(tags, value, remove)
            if not tags:
                del self.tags[step]


def _toggle(items: list[str], value: str, remove: bool) -> None:
    if remove:
        if value in items:
            items.remove(value)
    elif value not in items:
        items.append(value)


class Annotations:
    """Read and add the annotations of the dataset at ``path`` (see the module docstring).

    ``Annotations(path)`` needs the dataset to exist (ids and lengths are checked
    against it when adding); reading works with no annotation file (nothing annotated).
    """

    def __init__(self, dataset: str | os.PathLike | Dataset, *, durable: bool = False):
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset, verify=False)
        self.path = Path(self.dataset.root) / ANNOTATIONS_FILE
        self.durable = durable

    # ---------------------------------------------------------------- reading
    def records(self) -> list[dict[str, Any]]:
        """Every whole record, in the order written (a torn last line is left out)."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        out = []
        for n, line in enumerate(whole.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as err:
                raise DataError(f"{self.path}: line {n} is not JSON ({err}); the file is append-only, "
                                "so an edit by hand broke it") from None
        return out

    def all(self) -> dict[str, EpisodeAnnotations]:
        """Episode id (str) -> its current annotations (episodes with none left out)."""
        out: dict[str, EpisodeAnnotations] = {}
        for rec in self.records():
            out.setdefault(str(rec["episode_id"]), EpisodeAnnotations()).apply(rec)
        return {k: v for k, v in out.items() if not v.is_empty()}

    def episode(self, episode_id: Any) -> EpisodeAnnotations:
        """The current annotations of one episode (empty if none)."""
        return self.all().get(str(episode_id), EpisodeAnnotations())

    def with_label(self, label: str) -> list[str]:
        """Ids of the episodes that currently carry ``label``."""
        return [eid for eid, a in self.all().items() if label in a.labels]

    # ----------------------------------------------------------------- adding
    def add(self, episode_id: Any, kind: str, value: Any, *, step: int | None = None, remove: bool = False,
            author: str | None = None) -> dict[str, Any]:
        """Append one record (checked first: a bad one raises a :class:`DataError` naming the field and value,
        and nothing is written). Returns the record."""
        rec = self._record(episode_id, kind, value, step, remove, author)
        self._append([rec])
        return rec

    def add_many(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append several records (each a dict of :meth:`add`'s arguments) in one write; all are checked first."""
        recs = [self._record(r["episode_id"], r["kind"], r["value"], r.get("step"), r.get("op") == "remove"
                             or bool(r.get("remove")), r.get("author")) for r in records]
        self._append(recs)
        return len(recs)

    def label(self, episode_id: Any, label: str, **kw: Any) -> dict[str, Any]:
        return self.add(episode_id, "label", label, **kw)

    def rate(self, episode_id: Any, rating: float, **kw: Any) -> dict[str, Any]:
        return self.add(episode_id, "rating", rating, **kw)

    def note(self, episode_id: Any, text: str, **kw: Any) -> dict[str, Any]:
        return self.add(episode_id, "note", text, **kw)

    def tag(self, episode_id: Any, step: int, tag: str, **kw: Any) -> dict[str, Any]:
        return self.add(episode_id, "tag", tag, step=step, **kw)

    def _record(self, episode_id: Any, kind: str, value: Any, step: int | None, remove: bool,
                author: str | None) -> dict[str, Any]:
        try:
            index = self.dataset.index_of(episode_id)
        except (KeyError, DataError):
            raise DataError(f"episode_id {episode_id!r}: no such episode in {self.dataset.root}") from None
        if kind not in KINDS:
            raise DataError(f"kind {kind!r}: not one of {list(KINDS)}")
        if kind == "rating":
            if remove and value is None:
                value = 0.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DataError(f"rating {value!r}: must be a finite number")
            value = float(value)
        elif not isinstance(value, str) or not value.strip():
            raise DataError(f"{kind} {value!r}: must be a non-empty string")
        rec: dict[str, Any] = {"episode_id": str(self.dataset.entries[index].episode_id), "kind": kind,
                               "value": value, "op": "remove" if remove else ("set" if kind == "rating" else "add")}
        n = self.dataset.entries[index].num_steps
        if kind == "tag":
            if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < n:
                raise DataError(f"step {step!r}: episode {episode_id!r} has steps 0..{n - 1}")
            rec["step"] = step
        elif step is not None:
            raise DataError(f"step {step!r}: only a tag is per step ({kind} is per episode)")
        if author is not None:
            rec["author"] = str(author)
        rec["time"] = round(time.time(), 3)
        return rec

    def _append(self, recs: Sequence[Mapping[str, Any]]) -> None:
        if not recs:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if fcntl is not None:  # annotators in other processes: one appends at a time
                fcntl.flock(fd, fcntl.LOCK_EX)
            _cut_torn_tail(fd)
            os.write(fd, data)
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)


def _cut_torn_tail(fd: int) -> None:
    """Drop a last line without its newline (a write cut by a crash) before appending after it."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    tail = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    keep = size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= len(tail) else size)
    os.ftruncate(fd, keep)


# ---------------------------------------------------------------- using annotations
def label_filter(ds: Dataset, labels: Sequence[str] = (), exclude: Sequence[str] = ()) -> Dataset:
    """The episodes of ``ds`` carrying every label of ``labels`` and none of ``exclude`` (a view; nothing read)."""
    if not labels and not exclude:
        return ds
    current = Annotations(ds).all()
    keep = []
    for i, entry in enumerate(ds.entries):
        have = set(current.get(str(entry.episode_id), EpisodeAnnotations()).labels)
        if set(labels) <= have and not have & set(exclude):
            keep.append(i)
    return ds.take(keep)


def with_annotation_metadata(ds: Dataset) -> Dataset:
    """A view of ``ds`` whose episodes' metadata also hold ``annotations``: the episode's current
    :class:`EpisodeAnnotations` as JSON text (``"{}"`` when it has none), for exports.

    Text in every episode, so TFDS stores it as a ``Text`` feature and HF as a string column.
    Returns ``ds`` itself when nothing is annotated. A metadata key ``annotations`` already in
    the dataset is refused (it would be overwritten)."""
    from dataclasses import replace

    current = Annotations(ds).all()
    if not current:
        return ds
    if any(METADATA_KEY in e.metadata for e in ds.entries):
        raise DataError(f"episode metadata {METADATA_KEY!r} exists already in {ds.root}; it would be overwritten "
                        "by the annotations: rename it first")
    entries = []
    for e in ds.entries:
        a = current.get(str(e.episode_id))
        text = json.dumps(a.to_json(), ensure_ascii=False, sort_keys=True) if a else "{}"
        entries.append(replace(e, metadata={**e.metadata, METADATA_KEY: text}))
    return ds._view(entries)


def copy_annotations(src: Dataset, dst: str | os.PathLike, episode_ids: Iterable[Any] | None = None) -> int:
    """Append ``src``'s annotation records of ``episode_ids`` (default: all) to the dataset at ``dst``
    (which holds episodes with the same ids, e.g. the result of ``seedrl data filter``). Returns the count."""
    wanted = None if episode_ids is None else {str(i) for i in episode_ids}
    recs = [r for r in Annotations(src).records() if wanted is None or str(r["episode_id"]) in wanted]
    Annotations(dst)._append(recs)
    return len(recs)
