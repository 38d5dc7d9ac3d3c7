"""``seedrl report --serve`` in a thread of the test process, for the server's tests."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request

from seedrl.cli import build_parser
from seedrl.report.html.serve import make_server
from tests.threaded_server import in_thread


@contextlib.contextmanager
def served(argv: list[str]):
    """The server of ``seedrl report ARGV --serve`` on a free port; yields its base URL (``http://127.0.0.1:P/``)."""
    args = build_parser().parse_args(["report", *argv, "--serve"])
    with in_thread(make_server(args, port=0)) as port:
        yield f"http://127.0.0.1:{port}/"


def get_json(url: str) -> tuple[int, dict]:
    """(status, JSON body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post_json(url: str, body, headers: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a POST of ``body`` (bytes as they are, anything else as JSON), error statuses included.
    ``headers`` add to (or replace) ``Content-Type: application/json``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
