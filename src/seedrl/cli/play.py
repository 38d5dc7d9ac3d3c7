"""``seedrl play ENV_OR_CONFIG --record DATASET``: a person plays in the browser; the episodes become RLDS.

The page is served on 127.0.0.1 (:mod:`seedrl.play.server`); the session
(:mod:`seedrl.play.session`) records every step into ``DATASET`` and commits
each finished episode durably at once. Ctrl-C (or SIGTERM) writes the episode
in progress as truncated and stops; a killed server loses only that episode.
"""

from __future__ import annotations

import argparse
import getpass
import signal

from seedrl.errors import InputFileError

DEFAULT_FPS = 15.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="play an environment in the browser and record the episodes as RLDS")
    p.add_argument("env", metavar="ENV_OR_CONFIG",
                   help="a Gymnasium id (CartPole-v1, ALE/Pong-v5), an Atari game (Pong) or a run config YAML (its env:)")
    p.add_argument("--record", required=True, metavar="DATASET", help="the RLDS dataset folder (created or appended to)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--fps", type=float, default=None,
                      help=f"steps per second while playing; no key held plays the default action (default {DEFAULT_FPS:g})")
    pace.add_argument("--turns", action="store_true", help="turn by turn: one step per key press")
    p.add_argument("--keys", default=None, metavar="JSON_OR_FILE",
                   help='key map: {"keys": {"ArrowLeft": 0, "ArrowUp+Space": 3}, "default": 0} or a JSON file '
                        "(default: one per action space, docs/play.md)")
    p.add_argument("--player", default=None, metavar="ID", help="player id recorded with each episode (default: the user name)")
    p.add_argument("--seed", type=int, default=None, help="episode k is reset with seed + k (default: the config's env.seed)")
    p.add_argument("--port", type=int, default=8766, help="port on 127.0.0.1 (default 8766; 0: any free port)")
    p.set_defaults(func=cmd_play)


def check_args(args: argparse.Namespace) -> None:
    if args.fps is not None and not 0 < args.fps <= 240:
        raise InputFileError(f"--fps: {args.fps:g} is not in (0, 240] (use --turns to play turn by turn)")
    if not 0 <= args.port <= 65535:
        raise InputFileError(f"--port: {args.port} is not a port number (0..65535)")
    if args.player is not None and not args.player.strip():
        raise InputFileError("--player: empty; give an id (or leave it out for the user name)")


def open_session(args: argparse.Namespace):
    """The :class:`PlaySession` that ``args`` describe, on a server already bound to ``--port`` (so a port in
    use is refused before the dataset is created); returns ``(server, session)``. Errors name the option."""
    from seedrl.play.envs import env_config, make_play_env
    from seedrl.play.keys import load_key_map
    from seedrl.play.server import attach, make_server
    from seedrl.play.session import PlaySession

    check_args(args)
    cfg = env_config(args.env)
    play_env = make_play_env(cfg)
    server = None
    try:
        key_map = load_key_map(args.keys, play_env.env.action_space, play_env.meanings)
        fps = 0.0 if args.turns else (DEFAULT_FPS if args.fps is None else args.fps)
        server = make_server(None, args.port, args.env)
        session = PlaySession(play_env, args.record, key_map, player=args.player or _user(), fps=fps, seed=args.seed)
    except BaseException:
        if server is not None:
            server.server_close()
        play_env.env.close()
        raise
    attach(server, session)
    return server, session


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "anonymous"


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_play(args: argparse.Namespace) -> int:
    from seedrl.localhttp import serve_until_interrupt

    server, session = open_session(args)
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops cleanly too: the episode in progress is written
    return serve_until_interrupt(server, f"{args.env} (recording into {args.record}, player {session.player})",
                                 on_stop=session.close)
