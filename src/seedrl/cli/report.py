"""``seedrl report RUN_DIR [RUN_DIR ...] [--out report.html]``: one self-contained HTML page of runs.

The page (:mod:`seedrl.report.html.page`) holds the run panels of
:mod:`seedrl.report.html.runs` (configs and their diff, learning curves with
seeds aggregated, throughput / policy lag / inference batch, language-run
reward and KL). Other sections register through :data:`SECTION_BUILDERS`:
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


def cmd_report(args: argparse.Namespace) -> int:
    from seedrl.report.html.page import build_page

    if args.max_points < 10:
        raise InputFileError(f"--max-points: {args.max_points} is below 10")
    out = Path(args.out)
    if out.is_dir():
        raise OutputError(f"--out: {str(out)!r} is a folder, not a file")
    sections = build_sections(args)
    if not sections:
        raise InputFileError("RUN_DIR: give at least one run folder")
    title = args.title or "seedrl report: " + ", ".join(Path(d).name for d in args.run_dirs)
    page = build_page(sections, title)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} ({len(page.encode()) / 1e6:.2f} MB, {len(sections)} sections)", file=sys.stderr)
    return 0
