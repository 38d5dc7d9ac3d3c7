"""The ``seedrl`` command: ``seedrl run | eval | data ... | demo | report | play``.

Each subcommand lives in its own module and registers itself through a
``register(subparsers)`` function; ``main`` only dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from seedrl import __version__
from seedrl.runtime.errors import RunError


def build_parser() -> argparse.ArgumentParser:
    from seedrl.cli import data, demo, lm, play, report, train

    parser = argparse.ArgumentParser(
        prog="seedrl",
        description="Scalable RL and distillation: central inference, RLDS trajectories, V-trace, BOND, GKD.",
    )
    parser.add_argument("--version", action="version", version=f"seedrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.register(sub)
    lm.register(sub)
    data.register(sub)
    demo.register(sub)
    report.register(sub)
    play.register(sub)
    return parser


def _is_user_error(err: BaseException) -> bool:
    """Input at fault (print one line) rather than a bug (keep the traceback).

    :class:`~seedrl.errors.UserError` and its kinds (config, input file, environment, reward,
    output, the data store's errors), a run that refused to start or stopped (:class:`RunError`),
    and OS errors about paths and the disk (missing, exists, read-only, full, no permission).
    Anything else, a plain ``ValueError`` included, is a bug and keeps its traceback."""
    from seedrl.errors import UserError, is_user_os_error

    return isinstance(err, (UserError, RunError)) or is_user_os_error(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; errors of the user's input print ``seedrl: error: <message>`` on stderr and return 2
    (``SEEDRL_DEBUG=1`` re-raises them with their traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("SEEDRL_DEBUG", "") not in ("", "0") or not _is_user_error(err):
            raise
        print(f"seedrl: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
