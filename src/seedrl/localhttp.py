"""Small stdlib HTTP servers on 127.0.0.1 for seedrl's pages (``seedrl play``; the pattern of ``seedrl report --serve``).

:class:`LocalHandler` gives a :class:`~http.server.BaseHTTPRequestHandler` its
replies (``send_body``, ``send_json``), reads a request body (``read_body``,
``parse_json``: a :class:`~seedrl.errors.UserError` naming the problem) and
logs error replies only; ``write_refusal`` keeps writes to the served page. :func:`bind` opens a
:class:`~http.server.ThreadingHTTPServer` with a one-line error for a port
that cannot be opened; :func:`serve_until_interrupt` serves until Ctrl-C.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from seedrl.errors import InputFileError, UserError

HOST = "127.0.0.1"
MAX_BODY = 1 << 20


class LocalHandler(BaseHTTPRequestHandler):
    """Reply helpers; subclasses write ``do_GET`` / ``do_POST``."""

    def send_body(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self.send_body(status, json.dumps(payload, allow_nan=False).encode("utf-8"), "application/json")

    def read_body(self) -> bytes:
        """The request body (read before any reply: unread bytes would reset the connection under it)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise UserError(f"Content-Length: {self.headers.get('Content-Length')!r} is not a number") from None
        if not 0 <= length <= MAX_BODY:
            raise UserError(f"Content-Length: {length} is outside 0..{MAX_BODY}")
        return self.rfile.read(length) if length else b""

    @staticmethod
    def parse_json(raw: bytes) -> Any:
        """A request body as JSON (any content type: ``navigator.sendBeacon`` posts text/plain); {} if empty."""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as err:
            raise UserError(f"request body: not valid JSON ({err})") from None

    def write_refusal(self) -> str | None:
        """Why a state-changing request may not be served (None: it may): :func:`page_refusal`."""
        return page_refusal(self.server.server_address[1], self.headers)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Quiet: pages poll and step many times a second, so only error replies are logged (to stderr)."""
        if str(getattr(code, "value", code)).startswith(("4", "5")):
            super().log_request(code, size)


def page_refusal(port: int, headers: Mapping[str, str]) -> str | None:
    """Why a state-changing request to the server on ``port`` does not come from the page it serves
    (None: it does).

    The ``Host`` must be this server's own (``127.0.0.1:P`` or ``localhost:P``; a rebound DNS name is
    refused) and a browser's ``Origin``, sent with every cross-site POST, must be the same host (another
    site's page is refused). Clients without ``Origin`` (curl, scripts) are not browsers and may write."""
    host = headers.get("Host", "")
    allowed = (f"127.0.0.1:{port}", f"localhost:{port}")
    if host not in allowed:
        return f"Host: {host!r} is not one of {list(allowed)}; use the page this server serves"
    origin = headers.get("Origin")
    if origin is not None and origin != f"http://{host}":
        return f"Origin: {origin!r} is not the served page (http://{host}); writes from other pages are refused"
    return None


def bind(handler: type[BaseHTTPRequestHandler], port: int, option: str = "--port") -> ThreadingHTTPServer:
    """A threading server of ``handler`` on 127.0.0.1:``port`` (0: any free port; ``server_address[1]`` says
    which); :class:`InputFileError` naming ``option`` when the port cannot be opened."""
    try:
        server = ThreadingHTTPServer((HOST, port), handler)
    except OSError as err:
        raise InputFileError(f"{option}: {port} cannot be opened on {HOST}: {err.strerror or err}") from None
    server.daemon_threads = True
    return server


def serve_until_interrupt(server: ThreadingHTTPServer, what: str, on_stop: Callable[[], None] | None = None) -> int:
    """Print where ``what`` is served, serve until Ctrl-C, then close the socket, call ``on_stop`` and return 0."""
    host, port = server.server_address[:2]
    print(f"serving {what} on http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
        if on_stop is not None:
            on_stop()
    return 0
