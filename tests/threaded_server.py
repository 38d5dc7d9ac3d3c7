"""A local HTTP server run in a thread of the test process (the report and play servers' tests)."""

from __future__ import annotations

import contextlib
import threading


@contextlib.contextmanager
def in_thread(server, poll_interval: float = 0.1):
    """Serve ``server`` from a daemon thread; yields its port. Leaving shuts it down and closes it."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
