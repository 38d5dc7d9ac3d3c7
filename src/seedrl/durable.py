"""Durable file updates, shared by the trajectory store and the run folders.

``replace_durably`` writes a temporary file beside the target, flushes it to
disk, renames it over the target and flushes the folder, so a crash or a power
loss leaves the old content or the new one, never a part. ``fsync_dir`` makes
a rename or a creation inside a folder durable.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or creation in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically, on disk before it is visible."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
