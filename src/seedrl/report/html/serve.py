"""``seedrl report --serve RUN_DIR [--port P]``: the report page served on 127.0.0.1 while runs train.

A stdlib :class:`~http.server.ThreadingHTTPServer` answers

| path | reply |
|---|---|
| ``/`` | the page (the same sections as the file ``seedrl report`` writes, plus a *Live* panel) |
| ``/api/metrics?since=N`` | ``{"rows": R, "section_ids": [...]}``: R metric rows over all runs now; when R ≠ N also ``"sections": {id: data}``, the curve sections' downsampled data |
| ``/api/episodes?source=i&since=K`` | ``{"total", "kinds", "episodes": [summary of episode K, K+1, ...]}`` of the i-th browsed dataset |
| ``/api/episode/<id>?source=i`` | one episode's detail (frames, actions, rewards; or prompt, completion, log-probs) |
| ``/api/annotations?source=i`` | ``{"annotations": {id: {"labels", "rating", "notes", "tags"}}}``: the dataset's current annotations |
| ``POST /api/annotate?source=i`` | appends one annotation (:mod:`seedrl.report.html.annotate`): ``{"record", "annotations"}`` |

The page polls ``/api/metrics`` (its curves are redrawn when rows arrive; a section it lacks, such
as a run's first recorded episodes, makes it reload) and ``/api/episodes`` (new episodes join the
list, with the dataset's current annotations); an episode's detail is loaded when it is clicked, and the page's
annotation controls POST to ``/api/annotate`` (writes only from the served page: see
:func:`~seedrl.report.html.annotate.write_refusal`). Work is cached: ``metrics.jsonl`` is
followed (only the lines appended since the last look are parsed; a replaced or truncated file is read
again), ``config.yaml`` re-read when it changed, and a dataset's summaries are computed once per
episode (:meth:`Dataset.refresh` finds the new ones), its annotations re-read when ``annotations.jsonl``
changed. Ctrl-C stops the server and returns 0.
"""

from __future__ import annotations

import dataclasses
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from seedrl.errors import UserError
from seedrl.localhttp import LocalHandler

POLL_MS = 2000
HOST = "127.0.0.1"


class NotFound(UserError):
    """An episode id or dataset source the server does not have."""


def _stamp(run_dir: Path) -> tuple:
    """(size, mtime) of the files of a run folder read whole (not ``metrics.jsonl``, which is followed)."""
    out = []
    for name in ("config.yaml", "bon_frontier.json"):
        try:
            st = (run_dir / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


@dataclasses.dataclass
class _Followed:
    """A run folder as the server last read it: ``metrics.jsonl`` is read up to byte ``offset``."""

    stamp: tuple
    inode: int | None
    offset: int
    raw: dict
    run: object


class ReportState:
    """What the server knows: runs (re-read when their files change) and datasets (summaries cached)."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self._runs: dict[str, _Followed] = {}
        self._sets: dict[str, tuple[object, list]] = {}
        self._built: tuple[int, list] = (-1, [])
        self._notes: dict[str, tuple] = {}  # dataset root -> (annotation file stamp, current annotations)

    # ---------------------------------------------------------------- runs
    def _load(self, path) -> object:
        """The run at ``path``: its config re-read when it changed, only the rows appended to ``metrics.jsonl``
        since the last call parsed (the whole file again when it was replaced or truncated)."""
        from seedrl.report.html.rundata import concat_columns, load_run, read_appended, with_elapsed

        p = Path(path)
        metrics = p / "metrics.jsonl"
        try:
            st = metrics.stat()
            inode, size = st.st_ino, st.st_size
        except OSError:
            inode, size = None, 0
        f = self._runs.get(str(p))
        if f is None or f.stamp != _stamp(p) or f.inode != inode or size < f.offset:
            f = self._runs[str(p)] = _Followed(_stamp(p), inode, 0, {}, load_run(p, metrics=False))
        if inode is not None and size > f.offset:
            new, f.offset = read_appended(metrics, f.offset)
            f.raw = concat_columns(f.raw, new)
            f.run.columns = with_elapsed(f.raw)
        return dataclasses.replace(f.run)  # load_runs may rename it; the cache keeps its own

    def run_sections(self) -> tuple[int, list]:
        """(metric rows over all runs, the run panels), rebuilt only when the rows changed."""
        from seedrl.report.html.rundata import load_bon
        from seedrl.report.html.runs import load_runs, run_sections

        if not self.args.run_dirs:
            return 0, []
        runs = load_runs(self.args.run_dirs, load=self._load)
        rows = sum(r.rows for r in runs)
        if rows != self._built[0]:
            bon = [load_bon(p) for p in self.args.bon]
            self._built = (rows, run_sections(runs, max_points=self.args.max_points, bon=bon))
        return self._built

    # ------------------------------------------------------------ episodes
    def sources(self) -> list[Path]:
        from seedrl.report.html.episodes import episode_sources

        return episode_sources(self.args.run_dirs, self.args.data)

    def dataset(self, source: int) -> tuple[object, list]:
        """The ``source``-th dataset, refreshed, and the summaries of its first ``--max-episodes`` episodes."""
        from seedrl.report.html.episode_data import summaries
        from seedrl.report.html.episodes import open_episodes

        paths = self.sources()
        if not 0 <= source < len(paths):
            raise NotFound(f"source: {source} is not one of the {len(paths)} browsed datasets")
        key = str(paths[source])
        if key not in self._sets or self._sets[key][0].spec is None:  # opened before its first episode: reopen
            self._sets[key] = (open_episodes(paths[source]), [])
        ds, rows = self._sets[key]
        ds.refresh()
        rows += summaries(ds, self.args.max_episodes, start=len(rows))
        return ds, rows

    def annotations(self, ds) -> dict:
        """The current annotations of dataset ``ds`` (re-read only when its ``annotations.jsonl`` changed)."""
        from seedrl.report.html.annotate import current, stamp

        key, now = str(ds.root), stamp(ds)
        if key not in self._notes or self._notes[key][0] != now or now is None:
            self._notes[key] = (now, current(ds) if now is not None else {})
        return self._notes[key][1]

    # ----------------------------------------------------------- replies
    def page(self) -> str:
        from seedrl.cli.report import extra_sections, page_title
        from seedrl.report.html.episodes import episodes_section
        from seedrl.report.html.page import Section, build_page

        with self.lock:
            rows, sections = self.run_sections()
            episodes = []
            for i in range(len(self.sources())):
                ds, summary = self.dataset(i)
                episodes.append(episodes_section(ds, i, inline=0, limit=self.args.max_episodes, live=True,
                                                 rows=summary, annotations=self.annotations(ds)))
        live = Section("live", "Live", f'<p>Served from <code>{HOST}</code>: curves redraw as rows arrive and new '
                       f'episodes join the list (checked every {POLL_MS / 1000:g} s). '
                       f'<span id="live-status" data-rows="{rows}">{rows} metric rows</span></p>',
                       script=f"seedrl.live({rows}, {POLL_MS});")
        return build_page([live, *sections, *episodes, *extra_sections(self.args)], page_title(self.args))

    def metrics(self, since: int) -> dict:
        from seedrl.report.html.episodes import section_id

        with self.lock:
            rows, sections = self.run_sections()
            ids = [s.id for s in sections] + [section_id(i) for i in range(len(self.sources()))]
        reply = {"rows": rows, "section_ids": ids}
        if rows != since:
            reply["sections"] = {s.id: s.data for s in sections if s.script.startswith("seedrl.curves")}
        return reply

    def episodes(self, source: int, since: int) -> dict:
        with self.lock:
            ds, rows = self.dataset(source)
            return {"total": len(ds), "kinds": sorted({r["kind"] for r in rows}), "episodes": rows[max(0, since):],
                    "annotations": self.annotations(ds)}

    def source_annotations(self, source: int) -> dict:
        with self.lock:
            ds, _ = self.dataset(source)
            return {"annotations": self.annotations(ds)}

    def annotate(self, source: int, body: bytes) -> dict:
        from seedrl.report.html.annotate import annotate

        with self.lock:
            ds, _ = self.dataset(source)
            return annotate(ds, body)

    def episode(self, source: int, episode_id: str) -> dict:
        from seedrl.data.errors import MissingKeyError
        from seedrl.report.html.episode_data import episode_detail

        with self.lock:
            ds, _ = self.dataset(source)
            try:
                index = ds.index_of(episode_id)
            except MissingKeyError:
                raise NotFound(f"episode: no episode with id {episode_id!r} in {ds.root}") from None
            return episode_detail(ds[index], index)


def _int(query: dict, name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise UserError(f"{name}: {values[0]!r} is not a whole number") from None


class Handler(LocalHandler):
    """GET: the page, the JSON endpoints, 204 for the favicon, 404 JSON otherwise; POST: ``/api/annotate``.
    Replies and the quiet log (error replies only) are :class:`seedrl.localhttp.LocalHandler`'s."""

    state: ReportState

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(self._post)

    def _answer(self, route) -> None:
        """``route()`` replies; a :class:`NotFound` becomes a 404 and any other :class:`UserError` a 400."""
        try:
            route()
        except NotFound as err:
            self._json(404, {"error": str(err)})
        except UserError as err:
            self._json(400, {"error": str(err)})

    def _get(self) -> None:
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        if url.path in ("/", "/index.html"):
            return self.send_body(200, self.state.page().encode("utf-8"), "text/html; charset=utf-8")
        if url.path == "/favicon.ico":
            return self.send_body(204, b"", "image/x-icon")
        if url.path == "/api/metrics":
            return self._json(200, self.state.metrics(_int(q, "since", -1)))
        if url.path == "/api/episodes":
            return self._json(200, self.state.episodes(_int(q, "source", 0), _int(q, "since", 0)))
        if url.path.startswith("/api/episode/"):
            episode_id = unquote(url.path[len("/api/episode/"):])
            return self._json(200, self.state.episode(_int(q, "source", 0), episode_id))
        if url.path == "/api/annotations":
            return self._json(200, self.state.source_annotations(_int(q, "source", 0)))
        return self._json(404, {"error": f"path: {url.path!r} is not served here"})

    def _post(self) -> None:
        from seedrl.report.html.annotate import MAX_BODY, write_refusal

        url = urlsplit(self.path)
        if self.headers.get("Content-Length") is None:
            return self._json(411, {"error": "Content-Length: missing"})
        size = _int({"Content-Length": [self.headers["Content-Length"]]}, "Content-Length", -1)
        # the body is read before any reply: unread bytes would reset the connection under the reply
        body = self.rfile.read(min(max(size, 0), 16 * MAX_BODY))
        if not 0 <= size <= MAX_BODY:
            return self._json(413, {"error": f"Content-Length: {size} is not within 0..{MAX_BODY} bytes"})
        if url.path != "/api/annotate":
            return self._json(404, {"error": f"path: {url.path!r} takes no POST (only /api/annotate does)"})
        refusal = write_refusal(self.client_address[0], self.server.server_address[1], self.headers)
        if refusal:
            return self._json(403, {"error": refusal})
        return self._json(200, self.state.annotate(_int(parse_qs(url.query), "source", 0), body))

    def _json(self, status: int, payload: dict) -> None:
        from seedrl.report.html.page import embed_json  # NaN/inf -> null; the escapes keep it valid JSON

        body = embed_json(payload).encode("utf-8")
        self.send_body(status, body, "application/json")



def make_server(args, port: int | None = None) -> ThreadingHTTPServer:
    """A server for ``args`` on 127.0.0.1 (``port`` 0: any free one; ``server.server_address[1]`` says which).

    The page is built once first, so a bad run folder or dataset is a one-line error before any port opens."""
    from seedrl.localhttp import bind

    state = ReportState(args)
    state.page()
    return bind(type("ReportHandler", (Handler,), {"state": state}), args.port if port is None else port)


def serve(args) -> int:
    """Serve until Ctrl-C (then close the socket and return 0)."""
    from seedrl.localhttp import serve_until_interrupt

    return serve_until_interrupt(make_server(args), f"the report of {', '.join(map(str, args.run_dirs + args.data))}")
