"""Checksum manifests: how a checkpoint proves it is whole.

One mechanism for both kinds of checkpoint. A checkpoint is a *target*: a
file (a game's ``ckpt-<n>.pt``) or a folder (a language model's
``checkpoint-<step>/``: ``save_pretrained`` files and a state file). Its
manifest lists every file of the target with its size in bytes and its
SHA-256::

    {"format": 1, "files": {"model.safetensors": {"size": 1234, "sha256": "ab12..."}, ...}}

A folder's manifest is ``<folder>/MANIFEST.json`` (paths relative to the
folder); a file's is the sidecar ``<file>.manifest.json`` beside it (one entry,
its own name). The writer computes the manifest from the bytes on disk after
they were flushed (``fsync``), so it describes what a later reader will find,
and writes it atomically (:func:`seedrl.durable.replace_durably`).

:func:`verify` re-reads the target and returns what is wrong (a missing file,
a size that differs: truncated or empty, a digest that differs: flipped bytes)
or ``None`` when every listed file matches. A target without a manifest is
*unverified* (written before manifests existed); callers decide what to do
with it (:func:`has_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from seedrl.durable import replace_durably

MANIFEST = "MANIFEST.json"
SIDECAR_SUFFIX = ".manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


def manifest_path(target: str | os.PathLike) -> Path:
    """Where ``target``'s manifest lives: inside a folder, beside a file."""
    target = Path(target)
    return target / MANIFEST if target.is_dir() else target.with_name(target.name + SIDECAR_SUFFIX)


def has_manifest(target: str | os.PathLike) -> bool:
    return manifest_path(target).is_file()


def file_digest(path: Path, *, sync: bool = False) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a file's bytes; ``sync`` first flushes it to disk."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        if sync:
            os.fsync(fh.fileno())
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def _members(target: Path) -> dict[str, Path]:
    """Files a manifest of ``target`` covers, by the name it lists them under."""
    if not target.is_dir():
        return {target.name: target}
    return {p.relative_to(target).as_posix(): p for p in sorted(target.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def write_manifest(target: str | os.PathLike, *, at: str | os.PathLike | None = None) -> Path:
    """Flush every file of ``target`` to disk, then write its manifest (last, atomically).

    ``at`` names the target whose manifest path to use when it differs from ``target``
    (a file checkpoint written under a temporary name lists its final name)."""
    target = Path(target)
    final = Path(at) if at is not None else target
    files = {name: file_digest(p, sync=True) for name, p in _members(target).items()}
    if not target.is_dir():
        files = {final.name: files[target.name]}
    path = manifest_path(target) if target.is_dir() else manifest_path(final)
    replace_durably(path, json.dumps({"format": FORMAT, "files": files}, indent=1, sort_keys=True).encode())
    return path


def verify(target: str | os.PathLike) -> str | None:
    """What is wrong with ``target`` against its manifest, or ``None`` if it matches.

    A missing manifest is reported too (``"no manifest"``); see :func:`has_manifest`."""
    target = Path(target)
    if not target.exists():
        return "missing"
    mpath = manifest_path(target)
    try:
        listed = json.loads(mpath.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return "no manifest"
    except (ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest {mpath.name} ({err})"
    root = target if target.is_dir() else target.parent
    for name, want in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        got = file_digest(path)
        if got["size"] != want["size"]:
            return f"{name} has {got['size']} bytes, its manifest says {want['size']} (truncated or overwritten)"
        if got["sha256"] != want["sha256"]:
            return f"{name} does not match its SHA-256 (its bytes changed since it was written)"
    return None
