"""The ``seedrl`` command: ``seedrl run | eval | data ... | demo``.

Each subcommand lives in its own module and registers itself through a
``register(subparsers)`` function; ``main`` only dispatches.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from seedrl import __version__
from seedrl.runtime.errors import RunError


def build_parser() -> argparse.ArgumentParser:
    from seedrl.cli import data, demo, lm, train

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError, RunError) as err:
        # Configuration and data errors name the field and value, run errors what to do: show them plainly.
        print(f"seedrl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
