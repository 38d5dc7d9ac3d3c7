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

__all__ = ["EnvironmentSpecError", "InputFileError", "OutputError", "UserError", "check_writable", "is_user_os_error"]


class UserError(ValueError):
    """Input given by the user is at fault; the message names it and its value."""


class InputFileError(UserError):
    """A file or folder given as input is missing, malformed or of the wrong kind."""


class EnvironmentSpecError(UserError):
    """An environment id is unknown, or its observation / action space does not fit the agent."""


class OutputError(UserError):
    """An output folder cannot be written (read-only, no space, not a folder)."""


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
        with open(probe, "wb") as fh:
            fh.write(b"x")
            fh.flush()
    except OSError as err:
        raise OutputError(f"{what}: cannot write in {os.fspath(probe_dir)!r}: {err.strerror or err}") from err
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
