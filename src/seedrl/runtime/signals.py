"""SIGINT and SIGTERM as a request to stop, for every trainer (games, language RL, SFT).

``kill PID`` (SIGTERM: a job scheduler, a container stop) and Ctrl-C or
``kill -INT PID`` (SIGINT) both ask a run to stop: the trainer finishes the
update in hand, saves a checkpoint and returns, so ``--resume`` continues it.
SIGINT is handled even where the shell started the run with SIGINT ignored (a
background job ``seedrl run ... &`` of a non-interactive shell): the handler
replaces the ignore while the run lasts.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """A context manager: on entry (in the main thread only; elsewhere Python allows no
    handlers and it does nothing) it installs its handler for SIGINT and SIGTERM, on
    exit it puts the previous handlers back (an ignored SIGINT is ignored again).
    ``received`` is the name of the first signal, or None; ``is_set()`` says whether one
    came. While ``in_loop`` is true a second SIGINT raises :class:`KeyboardInterrupt`
    (the trainer still saves a checkpoint), as Ctrl-C always did.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self.in_loop = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT and self.in_loop:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signal.Signals(signum).name

    def is_set(self) -> bool:
        return self.received is not None
