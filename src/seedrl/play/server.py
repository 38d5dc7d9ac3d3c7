"""The HTTP layer of ``seedrl play``: one page and three JSON endpoints over a :class:`PlaySession`.

| request | reply |
|---|---|
| ``GET /`` | the page (``assets/play.html``, the key map and mode filled in) |
| ``GET /api/state`` | the session's view (``status``, ``t``, ``return``, ``episodes``, ``last``) and ``frame`` (a PNG data URI) |
| ``POST /api/step`` ``{"keys": [...]}`` | plays the held keys' action once; the view and the new frame |
| ``POST /api/end`` ``{"reason": "escape" \\| "closed"}`` | ends the episode in progress as truncated; the view and frame |

POSTs are refused (403) unless they come from the served page (:meth:`LocalHandler.write_refusal`:
this server's own ``Host``; a browser's ``Origin`` the same), so another site open in the
browser cannot play, or end episodes, in the player's name.

The page posts ``/api/end`` with reason ``closed`` through ``navigator.sendBeacon``
when the tab is closed or left. One session per server: several tabs would
play the same environment.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from seedrl.data.images import encode_png
from seedrl.errors import UserError
from seedrl.localhttp import LocalHandler, bind
from seedrl.play.keys import RESERVED
from seedrl.play.session import PlaySession

ASSETS = Path(__file__).parent / "assets"
PAGE_ENDS = ("escape", "closed")


def page_html(session: PlaySession, title: str) -> str:
    """The play page with its settings (key map, mode, frame rate) embedded as JSON."""
    settings = {"keys": session.key_map.keys, "key_map": session.key_map.to_json(), "mode": session.mode,
                "fps": session.fps, "player": session.player, "env": title, "reserved": list(RESERVED)}
    blob = json.dumps(settings).replace("</", "<\\/")
    page = (ASSETS / "play.html").read_text(encoding="utf-8")
    return page.replace("{{TITLE}}", _escape(title)).replace("{{SETTINGS}}", blob)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def with_frame(session: PlaySession, view: dict) -> dict:
    """``view`` with the current frame as a PNG data URI (fast compression: it crosses the loopback once)."""
    png = encode_png(session.frame(), compress_level=1)
    return {**view, "frame": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


class PlayHandler(LocalHandler):
    session: PlaySession
    title: str

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self.send_body(200, page_html(self.session, self.title).encode("utf-8"), "text/html; charset=utf-8")
        if path == "/favicon.ico":
            return self.send_body(204, b"", "image/x-icon")
        if path == "/api/state":
            return self._reply(self.session.view)
        return self.send_json(404, {"error": f"path: {path!r} is not served here"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        try:
            raw = self.read_body()
        except UserError as err:
            return self.send_json(400, {"error": str(err)})
        refusal = self.write_refusal()
        if refusal:
            return self.send_json(403, {"error": refusal})
        if path == "/api/step":
            return self._reply(lambda: self.session.step(_keys(self.parse_json(raw))))
        if path == "/api/end":
            return self._reply(lambda: self.session.end(_reason(self.parse_json(raw))))
        return self.send_json(404, {"error": f"path: {path!r} is not served here"})

    def _reply(self, act) -> None:
        try:
            view = act()
        except UserError as err:
            return self.send_json(400, {"error": str(err)})
        except RuntimeError as err:  # the session closed under a late request (server stopping)
            return self.send_json(409, {"error": str(err)})
        return self.send_json(200, with_frame(self.session, view))


def _body(body) -> dict:
    if not isinstance(body, dict):
        raise UserError(f"request body: expected a JSON object, got {type(body).__name__}")
    return body


def _keys(body) -> list[str]:
    keys = _body(body).get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UserError(f"keys: {keys!r:.80} is not a list of key names")
    return keys


def _reason(body) -> str:
    reason = _body(body).get("reason", "escape")
    if reason not in PAGE_ENDS:
        raise UserError(f"reason: {reason!r} is not one of {PAGE_ENDS}")
    return reason


def make_server(session: PlaySession | None, port: int, title: str):
    """A server of ``session`` on 127.0.0.1:``port`` (0: any free port). With ``session=None`` the port is
    taken first (a port in use is refused before the dataset is touched) and :func:`attach` gives the session."""
    handler = type("SessionHandler", (PlayHandler,), {"session": session, "title": title})
    return bind(handler, port)


def attach(server, session: PlaySession) -> None:
    """Give a server made with ``session=None`` its session (before it serves)."""
    server.RequestHandlerClass.session = session
