"""The episode browser: a section over an RLDS dataset (a run's ``episodes/`` or any ``--data PATH``).

The section's data (drawn by ``seedrl.episodes(id)`` of ``assets/episodes.js``)::

    {"source": i, "path": str, "total": n, "episodes": [summary, ...], "details": {id: detail}, "live": bool,
     "annotations": {id: {"labels": [...], "rating": r, "notes": [...], "tags": {step: [...]}}}}

``episodes`` holds the summaries of the first ``limit`` episodes (default 10⁴; see
:func:`~seedrl.report.html.episode_data.summaries`): the page sorts them by index, return or
length, filters them by a return range and searches their text. ``details`` holds the full
detail (:func:`~seedrl.report.html.episode_data.episode_detail`: frames, actions, rewards,
observations; or prompt / completion / reward / log-prob heat map) of the first ``inline``
episodes (default 8), so a page written to disk stays a few MB whatever the dataset.
Served pages (``seedrl report --serve``, ``live``: true) load any episode's detail on demand
from ``/api/episode/<id>?source=i`` and poll ``/api/episodes?source=i`` for new episodes.

``annotations`` are the dataset's current annotations (``annotations.jsonl``, :mod:`seedrl.data.annotations`):
the list shows them and filters by label, the detail shows them (step tags at the scrubber's step). A page on
disk shows them read-only; a served page adds controls that save through ``POST /api/annotate``
(:mod:`seedrl.report.html.annotate`; ``assets/annotate.js``).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from seedrl.report.html.episode_data import episode_detail, summaries
from seedrl.report.html.page import Section

DETAIL_INLINE = 8
MAX_EPISODES = 10_000


def is_dataset(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / "dataset.json").is_file() or (p / "segments").is_dir()


def open_episodes(path: str | os.PathLike):
    """The dataset at ``path`` (a one-line :class:`InputFileError` naming ``--data`` when it is not one)."""
    from seedrl.data import open_dataset
    from seedrl.errors import InputFileError

    if not is_dataset(path):
        raise InputFileError(f"--data: {str(path)!r} is not an RLDS dataset (no dataset.json or segments/ there)")
    try:
        return open_dataset(path)
    except (OSError, ValueError) as err:
        raise InputFileError(f"--data: {str(path)!r} cannot be read: {str(err).splitlines()[0]}") from None


def episode_sources(run_dirs: list, data: list) -> list[Path]:
    """The datasets the page browses: each run folder's ``episodes/`` (when it is a dataset) then each ``--data``."""
    out = [Path(d) / "episodes" for d in run_dirs if is_dataset(Path(d) / "episodes")]
    return out + [Path(p) for p in data]


def section_id(source: int) -> str:
    return f"episodes-{source}"


def episodes_section(ds, source: int, *, inline: int = DETAIL_INLINE, limit: int = MAX_EPISODES,
                     live: bool = False, rows: list[dict] | None = None, annotations: dict | None = None) -> Section:
    """The browser over dataset ``ds`` (the ``source``-th of the page); ``rows``: summaries already computed;
    ``annotations``: the dataset's current annotations (:func:`~seedrl.report.html.annotate.current`; read
    when not given)."""
    from seedrl.report.html.annotate import current

    sid = section_id(source)
    rows = summaries(ds, limit) if rows is None else rows
    annotations = current(ds) if annotations is None else annotations
    details = {}
    for i in range(min(inline, len(rows))):
        d = episode_detail(ds[i], i)
        details[d["id"]] = d
    path = str(ds.root)
    kinds = sorted({r["kind"] for r in rows})
    note = (f"{len(ds)} episodes" + (f" (the first {limit} listed)" if len(ds) > limit else "")
            + f"; {'details load on demand' if live else f'details of the first {min(inline, len(rows))} inline'}")
    body = (f'<p class="note">{html.escape(path)}: {html.escape(note)}</p>'
            f'<div class="episodes" id="{sid}-browser"></div>')
    data = {"source": source, "path": path, "total": len(ds), "limit": limit, "episodes": rows, "details": details,
            "live": live, "kinds": kinds, "annotations": annotations}
    return Section(sid, f"Episodes: {Path(path).parent.name + '/' if Path(path).name == 'episodes' else ''}"
                   f"{Path(path).name}", body, data, script=f'seedrl.episodes("{sid}");')

