"""Moving whole datasets into place: append one dataset's segments to another, or
replace a folder, without a moment where a reader sees half of either.

Segments are self-contained (an Arrow stream and its index), so appending a
dataset is renaming its segment files into the other's ``segments/`` folder
(index first: a segment is listed only once its ``.arrow`` appears). Every
check (same spec, same metadata keys and kinds, no shared episode id) runs
before the first rename: a refused append leaves both datasets as they were.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from seedrl.data import metadata as meta
from seedrl.data.errors import DuplicateEpisodeError, SpecError
from seedrl.data.reader import open_dataset
from seedrl.data.segment import SEGMENTS, list_segments, segment_paths


def append_dataset(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Move every episode of dataset ``src`` into dataset ``dst``; returns how many.

    Refuses (naming the field or the ids) a different step spec, episode
    metadata of other keys or kinds, and episode ids already in ``dst``.
    ``src`` must be on the same filesystem and have no live writer.
    """
    a, b = open_dataset(src), open_dataset(dst)
    if b.full_spec is not None and a.full_spec is not None and a.full_spec != b.full_spec:
        raise SpecError(f"spec differs from the dataset being appended to ({dst}): {b.full_spec.diff(a.full_spec)}")
    for e in a.entries:
        meta.check_metadata(e.metadata, b.info.get("metadata_spec"))
    repeated = sorted(set(map(str, a.episode_ids)) & set(map(str, b.episode_ids)))
    if repeated:
        raise DuplicateEpisodeError(f"episode metadata 'episode_id': {repeated[:5]}{'...' if len(repeated) > 5 else ''} "
                                    f"already in {dst} ({len(repeated)} in all); nothing was appended")
    if b.full_spec is None:  # dst has no episode yet: it takes src's dataset.json
        shutil.copyfile(Path(src) / "dataset.json", Path(dst) / "dataset.json")
    (Path(dst) / SEGMENTS).mkdir(exist_ok=True)
    for seg in list_segments(Path(src)):
        for p in reversed(segment_paths(Path(src), seg)):  # the .index, then the .arrow
            if p.exists():
                os.rename(p, Path(dst) / SEGMENTS / p.name)
    return len(a)


def replace_dir(new: Path, dst: Path) -> None:
    """Put folder ``new`` at ``dst``; an existing ``dst`` is removed only once ``new`` is in place."""
    if not dst.exists():
        os.rename(new, dst)
        return
    old = new.with_name(new.name + ".old")
    os.rename(dst, old)
    os.rename(new, dst)
    shutil.rmtree(old) if old.is_dir() else old.unlink()
