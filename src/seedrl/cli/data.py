"""``seedrl data info | head | stats | validate | convert``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from tqdm import tqdm

from seedrl.data import open_dataset
from seedrl.data.formats import EXPORTERS, IMPORTERS, detect_format
from seedrl.data.stats import compute_stats, format_info, format_stats, unchecked, validate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect, validate and convert RLDS datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    info = dsub.add_parser("info", help="spec, counts and metadata of a dataset")
    info.add_argument("path")
    info.set_defaults(func=cmd_info)

    head = dsub.add_parser("head", help="print the first steps of the first episodes")
    head.add_argument("path")
    head.add_argument("-n", "--episodes", type=int, default=1)
    head.add_argument("-s", "--steps", type=int, default=3)
    head.set_defaults(func=cmd_head)

    stats = dsub.add_parser("stats", help="lengths, returns and per-field statistics")
    stats.add_argument("path")
    stats.set_defaults(func=cmd_stats)

    val = dsub.add_parser("validate", help="check every episode; exit 1 on problems")
    val.add_argument("path")
    val.add_argument("--repair", action="store_true", help="set aside torn tails of killed writers")
    val.set_defaults(func=cmd_validate)

    conv = dsub.add_parser(
        "convert",
        help="convert between seedrl, tfds, minari and hf datasets",
        description="Convert SRC to DST. Formats: " + ", ".join(sorted(set(EXPORTERS) | set(IMPORTERS) | {"seedrl"})),
    )
    conv.add_argument("src")
    conv.add_argument("dst")
    conv.add_argument("--from", dest="src_format", default=None, help="source format (default: detected)")
    conv.add_argument("--to", dest="dst_format", default="seedrl", help="destination format (default: seedrl)")
    conv.add_argument("--allow-lossy", action="store_true", help="convert even where the target cannot hold every value")
    conv.set_defaults(func=cmd_convert)


def cmd_info(args: argparse.Namespace) -> int:
    print(format_info(open_dataset(args.path)))
    return 0


def cmd_head(args: argparse.Namespace) -> int:
    ds = open_dataset(args.path)
    with np.printoptions(threshold=12, edgeitems=2, linewidth=110, precision=4):
        for i in range(min(args.episodes, len(ds))):
            ep = ds[i]
            print(f"episode {i}: {len(ep)} steps, metadata {ep.metadata}")
            for t in range(min(args.steps, len(ep))):
                row = {p: _short(c[t]) for p, c in ep.columns.items()}
                print(f"  step {t}: " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def _short(value) -> str:
    if isinstance(value, np.ndarray) and value.size > 8:
        return f"<{value.dtype}{list(value.shape)} mean={value.astype(np.float64).mean():.4g}>"
    return repr(value.tolist() if isinstance(value, np.ndarray) else value)


def cmd_stats(args: argparse.Namespace) -> int:
    ds = open_dataset(args.path)
    stats = compute_stats(ds, tqdm(ds, desc="stats", unit="ep", disable=None, leave=False))
    print(format_stats(ds, stats))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    if args.repair:
        from seedrl.data import DatasetWriter

        DatasetWriter(args.path).close()  # opening a writer repairs dead segments
    ds = open_dataset(args.path)
    problems = validate(ds, tqdm(range(len(ds)), desc="validate", unit="ep", disable=None, leave=False))
    for p in problems:
        print(p, file=sys.stderr)
    missing = unchecked(ds)
    note = f" ({missing} episode(s) have no checksum: written before checksums, or found by repair)" if missing else ""
    verdict = "valid" if not problems else f"{len(problems)} problem(s)"
    print(f"{ds.root}: {len(ds)} episodes, {ds.num_steps} steps: {verdict}{note}")
    return 1 if problems else 0


def cmd_convert(args: argparse.Namespace) -> int:
    src_format = args.src_format or detect_format(args.src)
    dst_format = args.dst_format
    if src_format == dst_format:
        raise ValueError(f"--from and --to are both {src_format!r}: nothing to convert")
    for flag, name, table in (("--from", src_format, IMPORTERS), ("--to", dst_format, EXPORTERS)):
        if name != "seedrl" and name not in table:
            raise ValueError(f"{flag} {name!r}: unknown format; known: {sorted(set(table) | {'seedrl'})}")
    with tempfile.TemporaryDirectory(prefix="seedrl-convert-") as tmp:
        source = args.src
        if src_format != "seedrl":
            source = args.dst if dst_format == "seedrl" else os.path.join(tmp, "dataset")
            IMPORTERS[src_format](args.src, source)
        if dst_format == "seedrl":
            print(f"wrote {open_dataset(source)}")
            return 0
        report = EXPORTERS[dst_format](open_dataset(source), args.dst, allow_lossy=args.allow_lossy)
    if report:
        print(report)
    print(f"wrote {dst_format} dataset to {args.dst}")
    return 0
