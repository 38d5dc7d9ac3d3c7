"""What every generation server shares: one serving thread that owns the models, fed by an inbox.

Clients put ``(kind, model, payload, future)`` commands on ``_inbox`` from any thread; the
subclass's ``_loop`` (run by the serving thread) takes them until it meets :data:`STOP`.
:meth:`stop` refuses new commands, lets the loop return, then fails what is left
(``_fail_all``, which subclasses extend with their own queues).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

#: the inbox item that ends the serving loop
STOP = object()


class InboxServer:
    """Lifecycle (:meth:`start`, :meth:`stop`, context manager) and :meth:`generate` of a server
    whose subclass implements ``_loop`` and ``submit``."""

    thread_name = "seedrl-generation-server"

    def _init_inbox(self) -> None:
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._running = False
        self.died: RuntimeError | None = None  # set when the serving loop itself failed (:meth:`_serve`)

    def _loop(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def submit(self, model: str, prompt_ids: Sequence[int], params=None) -> Future:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self):
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._serve, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def _serve(self) -> None:
        """The serving thread: ``_loop``; if the loop itself dies (not one request: ``_handle`` answers those),
        the server stops taking commands and every pending and later future fails with the cause, so no client
        waits forever on a thread that is gone."""
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported through every future
            self._running = False
            err = RuntimeError(f"{type(self).__name__}'s serving thread died: {exc!r}")
            err.__cause__ = exc
            self.died = err
            self._fail_all(err)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the serving thread; futures still pending fail with ``RuntimeError``."""
        self._running = False  # refuse new commands first, then drain
        if self._thread is not None:
            self._inbox.put(STOP)
            self._thread.join(timeout)
            self._thread = None
        self._fail_all(RuntimeError(f"{type(self).__name__} stopped"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _not_running(self) -> RuntimeError:
        if self.died is not None:
            return self.died
        return RuntimeError(f"{type(self).__name__} is not running; call start() or use it as a context manager")

    def generate(self, model: str, prompts: Sequence[Sequence[int]], params=None, timeout: float | None = None):
        """Blocking convenience: completions of all prompts, prompt-major."""
        futures = [self.submit(model, p, params) for p in prompts]
        out = []
        for i, f in enumerate(futures):
            for c in f.result(timeout):
                c.prompt_index = i
                out.append(c)
        return out

    def _fail_all(self, exc: BaseException) -> None:
        """Fail every command still in the inbox."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not STOP and not item[3].done():
                item[3].set_exception(exc)
