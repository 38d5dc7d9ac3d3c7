"""Checkpoints: written atomically with a checksum manifest, verified on load.

Two layouts, one mechanism (:mod:`seedrl.runtime.manifest`):

* games: ``<run>/checkpoints/ckpt-<updates>.pt`` (model, optimizer, counters,
  RNG states, config) with the sidecar ``ckpt-<updates>.pt.manifest.json``, and for
  algorithms with a replay (R2D2) ``ckpt-<updates>.pt.replay``, written (atomically)
  before the ``.pt`` and removed with it;
* language models (SFT, PG, BOND): ``<run>/checkpoint-<step>/`` (``save_pretrained``
  model and tokenizer, a state file, BOND's anchor) with ``MANIFEST.json`` inside.

Saving writes everything under a temporary name, flushes it, writes the
manifest, then renames into place, and only then drops the oldest beyond
``keep``: a crash at any moment leaves the previous checkpoints intact and at
worst a ``.tmp`` leftover that no listing shows.

Loading (:func:`read_newest`) tries the newest first: a checkpoint whose files
do not match its manifest (truncated, empty, flipped bytes, a file missing) is
*damaged*; it is skipped with a warning and the next older one is tried. A
checkpoint without a manifest (written before manifests existed) is accepted
when it deserialises, and damaged when it does not.

A resumed run continues the frame and update counters, the optimizer's
moments, the learning-rate schedule and the random generators (Python,
numpy, torch, the inference sampler) from where the checkpoint left them.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from seedrl.runtime.errors import CheckpointError
from seedrl.durable import fsync_dir
from seedrl.runtime.manifest import has_manifest, manifest_path, verify, write_manifest

log = logging.getLogger(__name__)
T = TypeVar("T")

PATTERN = re.compile(r"^ckpt-(\d+)\.pt$")
FOLDER_PATTERN = re.compile(r"^checkpoint-(\d+)$")
DAMAGED = ".damaged"
STATE_FILE = "trainer_state.pt"  # a language-model checkpoint's optimizer, counters, data order, RNG
FINAL = "final"  # a finished language-model run's model and tokenizer


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if generator is not None:
        state["sampler"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if generator is not None and "sampler" in state:
        generator.set_state(state["sampler"])


# ----------------------------------------------------------------------------- listing
def _numbered(folder: Path, pattern: re.Pattern, want_dir: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := pattern.match(p.name)) and p.is_dir() == want_dir]
    return [p for _, p in sorted(found)]


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """A game run's ``checkpoints/ckpt-<n>.pt``, oldest first (not verified)."""
    return _numbered(Path(run_dir) / "checkpoints", PATTERN, want_dir=False)


def list_folder_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """A language-model run's ``checkpoint-<step>/`` folders, oldest first (not verified)."""
    return _numbered(Path(run_dir), FOLDER_PATTERN, want_dir=True)


def checkpoint_step(path: str | os.PathLike) -> int:
    """The number in a checkpoint's name (updates for games, steps for language models)."""
    name = Path(path).name
    m = PATTERN.match(name) or FOLDER_PATTERN.match(name)
    if m is None:
        raise ValueError(f"not a checkpoint name: {name!r}")
    return int(m.group(1))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# ----------------------------------------------------------------------------- writing
def replay_path(checkpoint: str | os.PathLike) -> Path:
    """The replay saved beside a game checkpoint: ``ckpt-<n>.pt.replay``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".replay")


def remove_checkpoint(target: Path) -> None:
    """Delete a checkpoint, its manifest and its replay."""
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        manifest_path(target).unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        replay_path(target).unlink(missing_ok=True)


def _prune(found: list[Path], keep: int) -> None:
    for old in found[:-keep]:
        remove_checkpoint(old)


def save_checkpoint(run_dir: str | os.PathLike, payload: dict[str, Any], keep: int = 3,
                    sidecar: Callable[[Path], None] | None = None) -> Path:
    """Write ``checkpoints/ckpt-<updates>.pt`` and its manifest atomically; keep the newest ``keep``.
    ``sidecar(path)`` (a replay's atomic save) runs first, with the checkpoint's final path."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ckpt-{int(payload['counters']['updates']):09d}.pt"
    if sidecar is not None:
        sidecar(path)
    tmp = folder / f".{path.name}.tmp"
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
    write_manifest(tmp, at=path)  # the manifest lands first: a .pt in place always has its own
    os.replace(tmp, path)
    fsync_dir(folder)
    _prune(list_checkpoints(run_dir), keep)
    return path


def save_folder_checkpoint(run_dir: str | os.PathLike, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """``<run>/checkpoint-<step>/``: ``write(folder)`` fills a temporary folder, then the
    manifest is written and the folder renamed into place; keeps the newest ``keep``."""
    run_dir = Path(run_dir)
    path = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    write_manifest(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    fsync_dir(run_dir)
    _prune(list_folder_checkpoints(run_dir), keep)
    return path


def save_policy_checkpoint(run_dir: str | os.PathLike, step: int, policy, state: dict[str, Any], keep: int,
                           extra: Callable[[Path], None] | None = None) -> Path:
    """A language model's ``checkpoint-<step>/``: the policy's model and tokenizer
    (``save_pretrained``), ``state`` as :data:`STATE_FILE`, and what ``extra(folder)`` adds."""

    def write(folder: Path) -> None:
        policy.model.save_pretrained(folder)
        policy.tokenizer.save_pretrained(folder)
        if extra is not None:
            extra(folder)
        torch.save(state, folder / STATE_FILE)

    return save_folder_checkpoint(run_dir, step, write, keep)


def save_final(run_dir: str | os.PathLike, policy) -> Path:
    """``<run>/final/``: the trained model and tokenizer, renamed into place whole (its
    presence marks the run finished, so it must never exist half-written)."""
    run_dir = Path(run_dir)
    final, tmp = run_dir / FINAL, run_dir / f".{FINAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.model.save_pretrained(tmp)
    policy.tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(run_dir)
    return final


def read_policy_state(path: Path) -> dict[str, Any]:
    """The state file of a language-model checkpoint folder."""
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def set_aside(target: Path) -> Path:
    """Rename a damaged checkpoint (and its manifest) to ``<name>.damaged``, out of every listing."""
    dest = target.with_name(target.name + DAMAGED)
    remove_checkpoint(dest)
    sidecar = manifest_path(target) if not target.is_dir() else None
    os.replace(target, dest)
    if sidecar is not None and sidecar.exists():
        os.replace(sidecar, sidecar.with_name(sidecar.name + DAMAGED))
    return dest


# ----------------------------------------------------------------------------- reading
def read_newest(candidates: list[Path], read: Callable[[Path], T]) -> tuple[Path, T, list[tuple[Path, str]]]:
    """The newest of ``candidates`` (oldest first) that is whole, and ``read(it)``.

    Returns ``(path, value, damaged)``: ``damaged`` lists the newer ones skipped, each
    with what is wrong (a warning is logged for each). Raises :class:`CheckpointError`
    when none is usable, or when a verified checkpoint cannot be read (that is no
    damage: a newer seedrl or torch format, say; falling back would hide it)."""
    damaged: list[tuple[Path, str]] = []
    for path in reversed(candidates):
        problem = verify(path)
        verified = problem is None
        if problem == "no manifest":
            problem = None
        if problem is None:
            try:
                return path, read(path), damaged
            except Exception as err:  # noqa: BLE001 - any reader failure of an unverified file is damage
                if verified:
                    raise CheckpointError(f"checkpoint {path} matches its manifest but cannot be read: {err}") from err
                problem = f"cannot be read ({type(err).__name__}: {err})"
        log.warning("checkpoint %s is damaged: %s; trying the one before it", path, problem)
        damaged.append((path, problem))
    detail = "; ".join(f"{p.name}: {why}" for p, why in damaged) or "none found"
    raise CheckpointError(f"no usable checkpoint ({detail})")


def read_game_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A game checkpoint's payload. ``path`` is a ``ckpt-<n>.pt`` file (verified; an error
    if damaged) or a run folder (its newest whole checkpoint, older ones as fallback)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {path}/checkpoints")
        try:
            return read_newest(found, read_game_checkpoint)[1]
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if has_manifest(path):
        problem = verify(path)
        if problem is not None:
            raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
    return read_game_checkpoint(path)
