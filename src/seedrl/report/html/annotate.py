"""Annotating from the served episode browser: the server's side of ``POST /api/annotate?source=i``.

The page sends one annotation per request, a JSON object (``Content-Type: application/json``)::

    {"episode_id": "g1", "kind": "label" | "rating" | "note" | "tag", "value": ...,
     "step": 17,          # tags only: the step index
     "op": "add",         # "add" (default), "set" (the same, for a rating) or "remove"
     "author": "ann"}     # optional

and it is appended to the dataset's ``annotations.jsonl`` by :class:`seedrl.data.annotations.Annotations`
(which checks the episode id, kind, value and step against the dataset; segments are never opened for
writing). The reply is ``{"record": the appended record, "annotations": the episode's current annotations}``.
A bad request is ``400 {"error": ...}`` naming the field and value, and nothing is written.

Who may write: the server listens on 127.0.0.1 only, and a write must also come *from the served page*,
not from another site open in the same browser (which can send requests to 127.0.0.1 too):
:func:`write_refusal` wants a loopback client, a ``Host`` header of ``127.0.0.1:PORT`` or
``localhost:PORT`` (a rebound DNS name sends its own name), an ``Origin``, when the browser sends one,
equal to ``http://`` + that host, and the JSON content type (a cross-site ``fetch`` with it needs a CORS
pre-flight, which the server does not answer, and an HTML form cannot send it). A page written to disk has
no server: it shows the annotations read-only.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from seedrl.data.annotations import ANNOTATIONS_FILE, Annotations
from seedrl.errors import UserError
from seedrl.localhttp import page_refusal

MAX_BODY = 64 * 1024
FIELDS = ("episode_id", "kind", "value", "step", "op", "author")
OPS = ("add", "set", "remove")
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


class Refused(UserError):
    """A write from somewhere else than the served page (403)."""


def write_refusal(client: str, port: int, headers: Mapping[str, str]) -> str | None:
    """Why a write request may not be served (``None``: it may). ``headers``: the request's headers."""
    if client not in LOOPBACK:
        return f"client: {client!r} is not this machine; annotations are written from 127.0.0.1 only"
    refusal = page_refusal(port, headers)
    if refusal is not None:
        return refusal
    ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return f"Content-Type: {ctype!r} is not 'application/json'"
    return None


def parse_request(body: bytes) -> dict[str, Any]:
    """The keyword arguments of :meth:`Annotations.add` from a request body (a :class:`UserError` naming the
    field and value when it is not one annotation)."""
    try:
        req = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UserError(f"body: {body[:60]!r} is not JSON ({err})") from None
    if not isinstance(req, dict):
        raise UserError(f"body: {json.dumps(req)[:60]} is not a JSON object")
    unknown = sorted(set(req) - set(FIELDS))
    if unknown:
        raise UserError(f"field {unknown[0]!r}: not one of {list(FIELDS)}")
    for name in ("episode_id", "kind"):
        if name not in req:
            raise UserError(f"{name}: missing")
    op = req.get("op", "add")
    if op not in OPS:
        raise UserError(f"op {op!r}: not one of {list(OPS)}")
    remove = op == "remove"
    if "value" not in req and not (remove and req["kind"] == "rating"):
        raise UserError("value: missing")
    author = req.get("author")
    if author is not None and not isinstance(author, str):
        raise UserError(f"author {author!r}: must be a string")
    return {"episode_id": req["episode_id"], "kind": req["kind"], "value": req.get("value"),
            "step": req.get("step"), "remove": remove, "author": author or None}


def annotate(ds, body: bytes) -> dict[str, Any]:
    """Append the annotation of request ``body`` to dataset ``ds``'s annotations; the reply's JSON."""
    kw = parse_request(body)
    notes = Annotations(ds)
    rec = notes.add(kw.pop("episode_id"), kw.pop("kind"), kw.pop("value"), **kw)
    return {"record": rec, "annotations": notes.episode(rec["episode_id"]).to_json()}


def current(ds) -> dict[str, dict]:
    """Episode id -> its current annotations as JSON (annotated episodes only), as the page reads them."""
    return {eid: a.to_json() for eid, a in Annotations(ds).all().items()}


def stamp(ds) -> tuple | None:
    """(inode, size, mtime) of ``ds``'s annotation file (``None`` when absent): the server's cache key."""
    try:
        st = os.stat(os.path.join(ds.root, ANNOTATIONS_FILE))
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
