"""Errors whose cause is the user's input, not the library.

``seedrl``'s command line prints these as one line, ``error: <message>``, with exit
code 2 (``SEEDRL_DEBUG=1`` shows the traceback); any other exception is a bug and
keeps its traceback. Each message names the input at fault (the config key, file,
line or argument) and its value.

- :class:`UserError` (a ``ValueError``): the base; raise it where input is at fault.
- :class:`~seedrl.config.ConfigError`: a config key or value.
- :class:`InputFileError`: a file or folder given as input (its path, and line where one is at fault).
- :class:`EnvironmentSpecError`: an environment id or its spaces.
- :class:`~seedrl.rewards.RewardError`: a reward function or model.
- :class:`OutputError`: the run folder cannot be written (read-only, full disk).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["EnvironmentSpecError", "InputFileError", "MissingModel", "OutputError", "UserError", "check_model_folder",
           "check_writable", "is_user_os_error"]


class UserError(ValueError):
    """Input given by the user is at fault; the message names it and its value."""


class InputFileError(UserError):
    """A file or folder given as input is missing, malformed or of the wrong kind."""


class EnvironmentSpecError(UserError):
    """An environment id is unknown, or its observation / action space does not fit the agent."""


class OutputError(UserError):
    """An output folder cannot be written (read-only, no space, not a folder)."""


class MissingModel(InputFileError, FileNotFoundError):
    """A model path that does not exist (also a ``FileNotFoundError``)."""


#: OS errors that are the machine's state or the user's paths, not a bug
USER_OS_ERRNOS = frozenset(e for e in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                                      errno.EISDIR, errno.ENOENT, errno.EEXIST, getattr(errno, "EDQUOT", None))
                           if e is not None)


def is_user_os_error(err: BaseException) -> bool:
    """Whether ``err`` is an ``OSError`` about a path or the disk (full, read-only, missing, no permission)."""
    path_errors = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
    return isinstance(err, path_errors) or (isinstance(err, OSError) and err.errno in USER_OS_ERRNOS)


def check_writable(folder: str | os.PathLike, what: str = "out_dir") -> None:
    """Raise :class:`OutputError` unless ``folder`` (or its nearest existing parent) can take a new file.

    Writes nothing that stays: a probe file is created and removed in the nearest existing folder.
    """
    path = Path(folder)
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise OutputError(f"{what}: {os.fspath(folder)!r} cannot be created: {os.fspath(probe_dir)!r} is a file")
    probe = probe_dir / f".seedrl-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    except OSError as err:
        raise OutputError(f"{what}: cannot write in {os.fspath(probe_dir)!r}: {err.strerror or err}") from err
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def check_model_folder(path: str, what: str) -> None:
    """A local ``path`` must be a folder written by ``save_pretrained`` (holding ``config.json``);
    anything else (no slash, not on disk) is left to the hub. Raises :class:`InputFileError` naming it."""
    looks_local = path.startswith((".", "/", "~")) or os.sep in path.rstrip(os.sep).split(os.sep, 1)[-1]
    local = os.path.expanduser(path)
    if looks_local and not os.path.exists(local):
        raise MissingModel(f"{what}: no model at path {path!r} (directory does not exist)")
    if os.path.exists(local):
        if not os.path.isdir(local):
            raise InputFileError(f"{what}: {path!r} is a file; give the model's folder (written by save_pretrained)")
        if not os.path.isfile(os.path.join(local, "config.json")):
            found = sorted(os.listdir(local))[:5]
            raise InputFileError(f"{what}: {path!r} is not a model folder: it has no config.json (it holds "
                                 f"{found or 'nothing'}); give a folder written by save_pretrained")
