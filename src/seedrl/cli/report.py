"""``seedrl report RUN_DIR [RUN_DIR ...] [--out report.html]``: one self-contained HTML page of runs.

The page (:mod:`seedrl.report.html.page`) holds the run panels of
:mod:`seedrl.report.html.runs` (configs and their diff, learning curves with
seeds aggregated, throughput / policy lag / inference batch, language-run
reward and KL), the episode browsers of :mod:`seedrl.report.html.episodes` (each run's
``episodes/`` and every ``--data PATH``) and, with ``--serve``, is served live by
:mod:`seedrl.report.html.serve`. Other sections register through :data:`SECTION_BUILDERS`:
each is ``f(args) -> list[Section]`` and adds its own options in
:func:`register` via :data:`OPTION_ADDERS`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from seedrl.errors import InputFileError, OutputError

# f(parser) adding a section's own options; f(args) -> list[Section] building it (in page order)
OPTION_ADDERS: list[Callable[[argparse.ArgumentParser], None]] = []
SECTION_BUILDERS: list[Callable[[argparse.Namespace], list]] = []


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of runs (configs, curves, throughput, LM fronts)")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run folders (each holds config.yaml and metrics.jsonl)")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument("--title", default=None, help="page title (default: the run names)")
    p.add_argument("--bon", action="append", default=[], metavar="PATH",
                   help="a Best-of-N front to draw beside language runs (bon_frontier.json or bond_fronts.json); repeatable")
    p.add_argument("--max-points", type=int, default=2000,
                   help="points kept per curve (min/max buckets keep every peak; default 2000)")
    for add in OPTION_ADDERS:
        add(p)
    p.set_defaults(func=cmd_report)


def episode_options(p: argparse.ArgumentParser) -> None:
    """The episode browser's and the server's options."""
    p.add_argument("--data", action="append", default=[], metavar="PATH",
                   help="an RLDS dataset to browse (repeatable); a RUN_DIR's episodes/ is browsed too")
    p.add_argument("--episodes", type=int, default=8, metavar="K",
                   help="episodes whose detail (frames, log-probs) is inline in the page (default 8)")
    p.add_argument("--max-episodes", type=int, default=10_000, metavar="N",
                   help="episodes listed per dataset (summaries; default 10000)")
    p.add_argument("--serve", action="store_true",
                   help="serve the page on 127.0.0.1 and refresh it as metrics and episodes arrive (Ctrl-C stops)")
    p.add_argument("--port", type=int, default=8765, help="the --serve port (default 8765; 0: any free port)")


def episode_sections(args: argparse.Namespace) -> list:
    """An episode browser per run folder's ``episodes/`` dataset and per ``--data`` (page-file mode)."""
    from seedrl.report.html.episodes import episode_sources, episodes_section, open_episodes

    return [episodes_section(open_episodes(path), i, inline=args.episodes, limit=args.max_episodes)
            for i, path in enumerate(episode_sources(args.run_dirs, args.data))]


OPTION_ADDERS.append(episode_options)
SECTION_BUILDERS.append(episode_sections)


def extra_sections(args: argparse.Namespace) -> list:
    """The sections of every registered builder but the episode browser (the server builds its own, live)."""
    return [s for build in SECTION_BUILDERS if build is not episode_sections for s in build(args)]


def page_title(args: argparse.Namespace) -> str:
    return args.title or "seedrl report: " + ", ".join(Path(d).name for d in [*args.run_dirs, *args.data])


def build_sections(args: argparse.Namespace) -> list:
    """The run panels of ``args.run_dirs`` then every registered builder's sections."""
    from seedrl.report.html.rundata import load_bon
    from seedrl.report.html.runs import load_runs, run_sections

    sections = []
    if args.run_dirs:
        bon = [load_bon(p) for p in args.bon]
        sections += run_sections(load_runs(args.run_dirs), max_points=args.max_points, bon=bon)
    for build in SECTION_BUILDERS:
        sections += build(args)
    return sections


def check_args(args: argparse.Namespace) -> None:
    if args.max_points < 10:
        raise InputFileError(f"--max-points: {args.max_points} is below 10")
    for name in ("episodes", "max_episodes"):
        if getattr(args, name) < 0:
            raise InputFileError(f"--{name.replace('_', '-')}: {getattr(args, name)} is negative")
    if not 0 <= args.port <= 65535:
        raise InputFileError(f"--port: {args.port} is not a port number (0..65535)")
    if not args.run_dirs and not args.data:
        raise InputFileError("RUN_DIR: give at least one run folder (or --data PATH)")


def cmd_report(args: argparse.Namespace) -> int:
    from seedrl.report.html.page import build_page

    check_args(args)
    if args.serve:
        from seedrl.report.html.serve import serve

        return serve(args)
    out = Path(args.out)
    if out.is_dir():
        raise OutputError(f"--out: {str(out)!r} is a folder, not a file")
    sections = build_sections(args)
    if not sections:
        raise InputFileError("RUN_DIR: give at least one run folder (or --data PATH)")
    page = build_page(sections, page_title(args))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} ({len(page.encode()) / 1e6:.2f} MB, {len(sections)} sections)", file=sys.stderr)
    return 0
