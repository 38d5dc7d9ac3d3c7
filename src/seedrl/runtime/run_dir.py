"""One run per folder: the lock, the start/resume rules, and resuming from a checkpoint that is whole.

Every trainer (games: :func:`seedrl.runtime.loop.train`; language RL:
:func:`seedrl.runtime.lm_loop.train_lm`; SFT: :func:`seedrl.agents.sft.train_sft`;
the BOND bandit) opens its folder ``<out_dir>/<name>`` through :class:`RunDir`:

* **Lock.** The folder is locked for the run's whole life with ``fcntl.flock`` on
  ``<run>/.lock`` (which holds the owner's pid). A second run of the same folder
  fails at once with :class:`~seedrl.runtime.errors.RunInUse`. The kernel drops
  the lock when its process dies, however it dies, so a lock file left by a
  killed run never blocks the next one.
* **Rules**, checked under the lock before anything is written. The folder holds

  - nothing (or does not exist): a fresh run; with ``--resume``
    :class:`~seedrl.runtime.errors.NothingToResume` (and nothing is created);
  - checkpoints: :class:`~seedrl.runtime.errors.RunExists`; with ``--resume``
    the run continues from the newest whole one;
  - a run's files but no checkpoint (stopped before its first one, or a trainer
    that keeps none): ``RunExists``; with ``--resume`` it starts over from step 0
    and its ``metrics.jsonl`` rows are dropped;
  - a finished run (SFT: ``final/``; the others: a checkpoint at the configured
    length): ``RunExists``; with ``--resume``
    :class:`~seedrl.runtime.errors.RunFinished`, nothing changed.

* **Resume.** :meth:`RunDir.resume_state` reads the newest checkpoint whose files
  match their manifest (:mod:`seedrl.runtime.manifest`); damaged ones are skipped
  with a warning. The trainer then loads it into its model and optimizer
  (:func:`load_model_state`, :func:`load_optimizer_state`: a mismatch is one
  :class:`~seedrl.runtime.errors.ResumeMismatch` line naming what differs) and
  checks its length (:meth:`RunDir.check_length`). Only then does
  :meth:`RunDir.begin` write: ``config.yaml``, ``metrics.jsonl`` cut back to the
  rows up to the checkpoint (rows after it are redone), and the damaged
  checkpoints renamed ``<name>.damaged``. A refused start leaves the folder as it was
  (at most an empty ``.lock`` file is added).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from seedrl.config import save_config
from seedrl.runtime.checkpoint import FINAL, read_newest, set_aside
from seedrl.runtime.errors import (
    CheckpointError,
    NonFiniteLoss,
    NothingToResume,
    ResumeMismatch,
    RunExists,
    RunFinished,
    RunInUse,
)
from seedrl.durable import replace_durably

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK = ".lock"


class RunDir:
    """The folder of one run, locked while the run lasts (see the module docstring).

    Args:
        path: ``<out_dir>/<name>``.
        resume: ``--resume`` was given.
        checkpoints: lists the folder's checkpoints, oldest first.
        final_ends_run: ``final/`` marks the run finished (SFT: its learning-rate schedule ends
            there, and its last step has no checkpoint). Otherwise a run is finished when its
            newest checkpoint reached the configured length (:meth:`check_length`), so raising
            ``steps`` / ``total_frames`` and resuming trains on.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool, checkpoints: Callable[[Path], list[Path]],
                 final_ends_run: bool = False):
        self.path = Path(path)
        self.resume = resume
        self._list = checkpoints
        self.final_ends_run = final_ends_run
        self._fd: int | None = None
        self.checkpoint: Path | None = None  # the one resumed from
        self._damaged: list[Path] = []

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> RunDir:
        if self.resume and not self._contents():  # refuse before creating anything
            raise NothingToResume(f"--resume: {self.path} holds no run to resume; start it without --resume")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            self._check_rules()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, NonFiniteLoss) and exc.checkpoint is None:
            exc.checkpoint = self.newest()
        self._release()

    def _acquire(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunInUse(f"{self.path} is in use by another run (pid {holder}); wait for it to end, "
                           "or choose another name=") from None
        except OSError as err:  # a filesystem without locks (some network mounts): go on, but say so
            log.warning("cannot lock %s (%s): make sure no other run uses this folder", self.path, err)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    # ----------------------------------------------------------------- rules
    def _contents(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK)

    def newest(self) -> Path | None:
        found = self._list(self.path)
        return found[-1] if found else None

    def finished(self) -> bool:
        return (self.path / FINAL).is_dir()

    def _check_rules(self) -> None:
        contents, newest = self._contents(), self.newest()
        if not self.resume:
            if not contents:
                return
            if newest is not None:
                what, hint = f"a run with checkpoints (newest: {newest.name})", "continue it"
            elif self.finished():
                what, hint = f"a finished run ({FINAL}/)", "see what it allows"
            else:  # stopped before its first checkpoint, or a trainer that keeps none
                what, hint = f"a run with no checkpoint ({', '.join(contents[:3])})", "start it over"
            raise RunExists(f"{self.path} already holds {what}; pass --resume to {hint}, or choose another name=")
        if self.final_ends_run and self.finished():
            raise RunFinished(f"{self.path} is finished ({FINAL}/ exists); nothing to resume, nothing was changed "
                              f"(to train on, start a new run from {self.path / FINAL})")
        if newest is None:
            log.warning("--resume: %s has no checkpoint (it was stopped before its first one): starting it over "
                        "from step 0; its metrics rows are dropped", self.path)

    # ---------------------------------------------------------------- resume
    def resume_state(self, read: Callable[[Path], T]) -> tuple[Path | None, T | None]:
        """``(checkpoint, read(checkpoint))`` of the newest whole checkpoint, or ``(None, None)``
        for a fresh start (or a start over). Damaged newer ones are set aside by :meth:`begin`."""
        found = self._list(self.path) if self.resume else []
        if not found:
            return None, None
        try:
            path, state, damaged = read_newest(found, read)
        except CheckpointError as err:
            raise CheckpointError(f"cannot resume {self.path}: {err}") from None
        self.checkpoint, self._damaged = path, [p for p, _ in damaged]
        return path, state

    def check_length(self, done: int, target: int, key: str, *, exact: bool = True) -> None:
        """A resumed run at ``done`` (steps, frames) of the configured ``key=target``: finished at
        ``done == target``, a mismatch past it; with ``exact=False`` (frames, which overshoot the
        target by part of a batch) finished at ``done >= target``."""
        if self.checkpoint is None:
            return
        if done == target or (not exact and done > target):
            raise RunFinished(f"{self.path} is finished: {self.checkpoint.name} is at {done} of {key}={target}; "
                              "nothing to resume, nothing was changed (raise "
                              f"{key}= to train on)")
        if done > target:
            raise ResumeMismatch(f"cannot resume {self.path}: {key}={target} is below the {done} "
                                 f"of its checkpoint {self.checkpoint.name}")

    def begin(self, config: Any, step: int | None = None) -> None:
        """Everything is checked: set damaged checkpoints aside, write ``config.yaml``, cut
        ``metrics.jsonl`` back to rows with ``updates <= step`` (all rows, and ``tb/``, when ``step``
        is None; TensorBoard purges its own later events on resume, see :mod:`seedrl.report.metrics`)."""
        for path in self._damaged:
            log.warning("checkpoint %s is damaged: set aside as %s", path, set_aside(path).name)
        self._damaged = []
        save_config(config, self.path / "config.yaml")
        trim_metrics(self.path / "metrics.jsonl", step)
        if step is None and (self.path / "tb").is_dir():  # started over: its old curves would mix with the new
            shutil.rmtree(self.path / "tb")


def trim_metrics(path: Path, step: int | None) -> int:
    """Keep the rows of ``path`` with ``updates <= step`` (none when ``step`` is None): rows
    logged after the checkpoint a run resumes from are redone by it. A torn last line (a
    kill mid-write) is dropped too. Returns the number of rows dropped."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if step is not None and int(row.get("updates", 0) or 0) <= step:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        replace_durably(path, "".join(ln + "\n" for ln in keep).encode("utf-8"))
        log.warning("%s: dropped %d rows logged after the point this run restarts from", path, dropped)
    return dropped


# ----------------------------------------------------------------------------- compatibility
def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``model.load_state_dict(state)``, or one :class:`ResumeMismatch` line naming what differs."""
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    extra = sorted(set(state) - set(mine))
    shapes = [f"{k} is {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in this config"
              for k, v in mine.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = shapes + [f"{k} is not in the checkpoint" for k in missing] + [f"{k} is only in the checkpoint" for k in extra]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ResumeMismatch(f"cannot resume from {source}: the model differs: {problems[0]}{more}")
    model.load_state_dict(state)


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    return type(optimizer).__name__


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, source: Path, saved_name: str | None) -> None:
    """``optimizer.load_state_dict(state)`` after checking it is the same optimizer (``saved_name``,
    recorded beside the state; older checkpoints: the settings each kind has, e.g. Adam's ``betas``).

    The checkpoint gives the optimizer's state (moments, step counts); its settings (``lr``, ``eps``,
    ``weight_decay``, ...) stay this config's, so a run resumed with a changed ``optim.lr`` trains at
    the new rate (a warning names each setting that changed)."""
    mine = optimizer_name(optimizer)
    if saved_name is not None and saved_name != mine:
        raise ResumeMismatch(f"cannot resume from {source}: its optimizer is {saved_name}, this config's is {mine}")
    groups = state.get("param_groups") or [{}]
    ours, theirs = optimizer.param_groups[0], groups[0]
    # keys only one side has, leaving out the boolean/None flags that torch versions add
    differ = sorted(k for k in set(ours) ^ set(theirs) if not isinstance(ours.get(k, theirs.get(k)), (bool, type(None))))
    if differ:
        raise ResumeMismatch(f"cannot resume from {source}: the optimizer differs (settings {differ} are in only one "
                             f"of the checkpoint's and this config's {mine})")
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ResumeMismatch(f"cannot resume from {source}: the optimizer state does not fit: {err}") from None
    changed = set()
    for group, mine_g in zip(optimizer.param_groups, configured):
        if "initial_lr" in mine_g and "initial_lr" in group:
            # a scheduler owns ``lr`` (= initial_lr x its factor at this step): keep the checkpoint's
            # factor, rescaled to this config's base rate
            mine_g["lr"] = group["lr"] * mine_g["initial_lr"] / group["initial_lr"] if group["initial_lr"] else group["lr"]
        changed |= {f"{k}: {group[k]!r} -> {v!r}" for k, v in mine_g.items() if k in group and _differs(group[k], v)}
        group.update(mine_g)
    changed = sorted(changed)
    if changed:
        log.warning("resuming from %s with this config's optimizer settings, not the checkpoint's: %s",
                    source, "; ".join(changed))


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except (RuntimeError, ValueError):  # tensors (capturable optimizers): compare by value
        return not torch.equal(torch.as_tensor(a), torch.as_tensor(b))
