"""``seedrl data info | head | stats | validate | convert | filter | select | merge | annotate``.

Bad input (a missing folder, a file that is not a dataset, an unknown
episode id or format, an unwritable destination) is a one-line error naming
it, exit code 2. ``convert``, ``filter``, ``select`` and ``merge`` write a
new dataset and only read their sources; they never replace or extend an
existing destination unless told to (``--overwrite`` / ``--append``), and
build the result beside it first, so a failed command leaves the
destination as it was. ``annotate`` appends to the dataset's
``annotations.jsonl`` only (:mod:`seedrl.data.annotations`); the results of
``filter`` / ``select`` / ``merge`` keep the annotations of the episodes they
copy (with their ids), and ``convert --to tfds|hf`` exports them as the
episode metadata ``annotations``.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from seedrl.data import DataError, open_dataset
from seedrl.data.annotations import Annotations, copy_annotations, label_filter, with_annotation_metadata
from seedrl.data.formats import EXPORTERS, IMPORTERS, detect_format
from seedrl.data.merge import append_dataset, replace_dir
from seedrl.data.segment import SEGMENTS
from seedrl.data.stats import compute_stats, format_info, format_stats, unchecked, validate
from seedrl.data.subset import check_mergeable, keep_fields, select_episodes, where_filter, write_dataset


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect, validate and convert RLDS datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    info = dsub.add_parser("info", help="spec, counts and metadata of a dataset")
    info.add_argument("path")
    info.set_defaults(func=cmd_info)

    head = dsub.add_parser("head", help="print the first steps of the first episodes")
    head.add_argument("path")
    head.add_argument("-n", "--episodes", type=_positive, default=1, help="how many episodes (default 1)")
    head.add_argument("-s", "--steps", type=_positive, default=3, help="steps per episode (default 3)")
    head.add_argument("--id", dest="episode_id", default=None, help="show the episode with this id instead")
    head.set_defaults(func=cmd_head)

    stats = dsub.add_parser("stats", help="lengths, returns and per-field statistics")
    stats.add_argument("path")
    stats.set_defaults(func=cmd_stats)

    val = dsub.add_parser("validate", help="check every episode; exit 1 on problems")
    val.add_argument("path")
    val.add_argument("--repair", action="store_true",
                     help="index what killed writers left unindexed; set aside (set_aside/) what cannot be read")
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
    mode = conv.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing DST (default: refuse)")
    mode.add_argument("--append", action="store_true",
                      help="add to an existing seedrl DST (same spec; episode ids already in DST are refused)")
    conv.set_defaults(func=cmd_convert)

    filt = dsub.add_parser("filter", help="a new dataset of the episodes meeting conditions",
                           description="Keep the episodes of SRC meeting every --where and --metadata; write them to DST.")
    filt.add_argument("src")
    filt.add_argument("dst")
    filt.add_argument("--where", action="append", default=[], metavar="COND",
                      help="KEY OP VALUE, OP one of > >= < <= == !=; KEY: return (sum of rewards), length "
                           "(steps) or an episode metadata key; e.g. 'return>100' (repeatable: all must hold)")
    filt.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                      help="episode metadata KEY equal to VALUE (repeatable)")
    filt.add_argument("--label", action="append", default=[], metavar="L",
                      help="keep episodes annotated with label L (repeatable: all must be there)")
    filt.add_argument("--without-label", action="append", default=[], metavar="L",
                      help="drop episodes annotated with label L (repeatable)")
    filt.set_defaults(func=cmd_filter)

    sel = dsub.add_parser("select", help="a new dataset of some episodes and/or some step fields",
                          description="Copy episodes (by index or id) and step fields (by path) of SRC to DST.")
    sel.add_argument("src")
    sel.add_argument("dst")
    sel.add_argument("--episodes", default=None, metavar="RANGES", help="indices and START:STOP[:STEP], e.g. 0:10,15,-3:")
    sel.add_argument("--ids", default=None, help="episode ids, comma-separated")
    sel.add_argument("--fields", default=None,
                     help="step field paths to keep, comma-separated (a prefix keeps its subtree); core RLDS "
                          "fields not named are kept whole")
    sel.set_defaults(func=cmd_select)

    mrg = dsub.add_parser("merge", help="one new dataset of several with equal specs",
                          description="Write every episode of SRC... (in order) to DST, the last path.")
    mrg.add_argument("paths", nargs="+", metavar="SRC... DST")
    mrg.add_argument("--new-ids", action="store_true", help="give every episode a fresh id (default: keep ids; "
                                                           "an id in two sources is refused)")
    mrg.set_defaults(func=cmd_merge)
    for action in (filt, sel, mrg):
        action.add_argument("--overwrite", action="store_true", help="replace an existing DST (default: refuse)")

    ann = dsub.add_parser("annotate", help="add labels, a rating, notes or step tags to an episode (or --show them)",
                          description="Append annotations of episode --id to PATH/annotations.jsonl; the "
                                      "dataset's segments are never touched.")
    ann.add_argument("path")
    ann.add_argument("--id", dest="episode_id", default=None, help="the episode's id")
    ann.add_argument("--label", action="append", default=[], metavar="L", help="a label (repeatable)")
    ann.add_argument("--rating", type=float, default=None, help="a rating (a number; the last one set counts)")
    ann.add_argument("--note", action="append", default=[], metavar="TEXT", help="free text (repeatable)")
    ann.add_argument("--tag", action="append", default=[], metavar="STEP:TAG",
                     help="a tag on step STEP (0-based), e.g. '17:mistake here' (repeatable)")
    ann.add_argument("--remove", action="store_true", help="remove the given labels, notes, tags (and the rating)")
    ann.add_argument("--author", default=None, help="who annotates (default: $USER)")
    ann.add_argument("--show", action="store_true", help="print the current annotations (of --id, or all) as JSON")
    ann.set_defaults(func=cmd_annotate)
    for action in (info, head, stats, val, conv, filt, sel, mrg, ann):
        action.set_defaults(func=_one_line(action.get_default("func")))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _one_line(cmd):
    """File-system and Arrow errors become one-line errors naming the file (the CLI prints those)."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        try:
            return cmd(args)
        except (OSError, pa.ArrowException, IndexError) as err:
            if isinstance(err, FileNotFoundError | FileExistsError):
                raise
            raise DataError(f"{type(err).__name__}: {err}") from err

    return run


def cmd_info(args: argparse.Namespace) -> int:
    print(format_info(open_dataset(args.path)))
    return 0


def cmd_head(args: argparse.Namespace) -> int:
    ds = open_dataset(args.path)
    picks = [ds.index_of(args.episode_id)] if args.episode_id is not None else range(min(args.episodes, len(ds)))
    with np.printoptions(threshold=12, edgeitems=2, linewidth=110, precision=4):
        for i in picks:
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

        root = Path(args.path)
        if not (root / "dataset.json").is_file() and not (root / SEGMENTS).is_dir():
            open_dataset(args.path)  # a missing or foreign folder is an error, never made a dataset
        DatasetWriter(args.path).close()  # opening a writer repairs dead segments (and a lost dataset.json)
    ds = open_dataset(args.path)
    problems = validate(ds, tqdm(range(len(ds)), desc="validate", unit="ep", disable=None, leave=False))
    for p in problems:
        print(p, file=sys.stderr)
    missing = unchecked(ds)
    note = f" ({missing} episode(s) have no checksum: written before checksums, or found by repair)" if missing else ""
    verdict = "valid" if not problems else f"{len(problems)} problem(s)"
    print(f"{ds.root}: {len(ds)} episodes, {ds.num_steps} steps: {verdict}{note}")
    return 1 if problems else 0


def _destination(dst: Path, sources: Sequence[str], overwrite: bool, append: bool = False,
                 appendable: bool = False) -> bool:
    """Check ``dst`` can take a new dataset; returns whether it already holds something."""
    for src in map(lambda p: Path(p).resolve(), sources):
        if dst.resolve() == src or dst.resolve() in src.parents:
            raise DataError(f"destination {dst} is (or holds) the source {src}: pick another destination")
    if any(p.exists() and not p.is_dir() for p in dst.parents):
        raise DataError(f"destination {dst}: a parent of it is a file, not a folder")
    taken = dst.exists() and (not dst.is_dir() or any(dst.iterdir()))
    if taken and not (overwrite or append):
        hint = "--overwrite to replace it" + (" or --append to add to it" if appendable else "")
        raise FileExistsError(f"destination {dst} already exists; pass {hint}")
    return taken


@contextmanager
def _staged(dst: Path) -> Iterator[Path]:
    """A folder beside ``dst`` (same filesystem) to build the result in; removed afterwards."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.convert-"))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def cmd_convert(args: argparse.Namespace) -> int:
    if not Path(args.src).exists():
        raise FileNotFoundError(f"source does not exist: {args.src}")
    src_format = args.src_format or detect_format(args.src)
    dst_format = args.dst_format
    if src_format == dst_format:
        raise DataError(f"--from and --to are both {src_format!r}: nothing to convert")
    for flag, name, table in (("--from", src_format, IMPORTERS), ("--to", dst_format, EXPORTERS)):
        if name != "seedrl" and name not in table:
            raise DataError(f"{flag} {name!r}: unknown format; known: {sorted(set(table) | {'seedrl'})}")
    dst = Path(args.dst)
    if args.append and dst_format != "seedrl":
        raise DataError(f"--append: only a seedrl destination can be appended to, not --to {dst_format}")
    taken = _destination(dst, [args.src], args.overwrite, args.append, appendable=dst_format == "seedrl")
    with _staged(dst) as stage:
        built = stage / dst.name
        source = args.src
        if src_format != "seedrl":
            source = built if dst_format == "seedrl" else stage / "imported"
            IMPORTERS[src_format](args.src, source)
        if dst_format == "seedrl":
            if args.append and taken:
                n = append_dataset(built, dst)
                print(f"appended {n} episodes: {open_dataset(dst)}")
                return 0
            replace_dir(built, dst)
            print(f"wrote {open_dataset(dst)}")
            return 0
        exported = open_dataset(source)
        if dst_format in ANNOTATED_EXPORTS:
            exported = with_annotation_metadata(exported)
        report = EXPORTERS[dst_format](exported, built, allow_lossy=args.allow_lossy)
        replace_dir(built, dst)
    if report:
        print(str(report).replace(str(built), str(dst)))
    print(f"wrote {dst_format} dataset to {args.dst}")
    return 0


def _write_new(views: Sequence, dst: str, overwrite: bool, new_ids: bool = False) -> int:
    """Write the episodes of ``views`` as a new dataset at ``dst`` (staged, then swapped in)."""
    out = Path(dst)
    _destination(out, [str(v.root) for v in views], overwrite)
    with _staged(out) as stage:
        n = write_dataset(views, stage / out.name, new_ids=new_ids)
        if not new_ids:  # the copied episodes keep their ids, so their annotations still apply
            for v in views:
                copy_annotations(v, stage / out.name, v.episode_ids)
        replace_dir(stage / out.name, out)
    print(f"wrote {open_dataset(out)} ({n} episodes)")
    return 0


def _nonempty(ds, what: str):
    if len(ds) == 0:
        raise DataError(f"{what}: no episode left; nothing written")
    return ds


def cmd_filter(args: argparse.Namespace) -> int:
    ds = open_dataset(args.src)
    if not args.where and not args.metadata and not args.label and not args.without_label:
        raise DataError("filter: give at least one --where, --metadata, --label or --without-label condition")
    kept = label_filter(where_filter(ds, args.where, args.metadata), args.label, args.without_label)
    kept = _nonempty(kept, f"filter of {args.src}")
    return _write_new([kept], args.dst, args.overwrite)


def cmd_select(args: argparse.Namespace) -> int:
    ds = open_dataset(args.src)
    if args.episodes is None and args.ids is None and args.fields is None:
        raise DataError("select: give --episodes, --ids and/or --fields")
    if args.episodes is not None or args.ids is not None:
        ids = [i for i in (args.ids or "").split(",") if i]
        ds = select_episodes(ds, args.episodes, ids)
    if args.fields is not None:
        ds = keep_fields(ds, [f.strip() for f in args.fields.split(",")])
    return _write_new([_nonempty(ds, f"select from {args.src}")], args.dst, args.overwrite)


def cmd_merge(args: argparse.Namespace) -> int:
    if len(args.paths) < 3:
        raise DataError(f"merge: needs at least two sources and a destination, got {len(args.paths)} path(s)")
    *sources, dst = args.paths
    views = [open_dataset(p) for p in sources]
    for v in views:
        _nonempty(v, f"merge source {v.root}")
    check_mergeable(views, new_ids=args.new_ids)
    return _write_new(views, dst, args.overwrite, new_ids=args.new_ids)


#: export formats that carry the annotations as episode metadata
ANNOTATED_EXPORTS = ("tfds", "hf")


def _tag(text: str) -> tuple[int, str]:
    step, sep, tag = text.partition(":")
    try:
        return int(step), tag
    except ValueError:
        raise DataError(f"--tag {text!r}: expected STEP:TAG, e.g. '17:mistake here'") from None


def cmd_annotate(args: argparse.Namespace) -> int:
    import json
    import os

    notes = Annotations(open_dataset(args.path, verify=False))
    if args.show:
        current = notes.all() if args.episode_id is None else {args.episode_id: notes.episode(args.episode_id)}
        print(json.dumps({k: v.to_json() for k, v in current.items()}, indent=1, ensure_ascii=False))
        return 0
    if args.episode_id is None:
        raise DataError("annotate: give --id EPISODE_ID (or --show)")
    author = args.author or os.environ.get("USER")
    base = {"episode_id": args.episode_id, "remove": args.remove, "author": author}
    recs = [{**base, "kind": "label", "value": v} for v in args.label]
    recs += [{**base, "kind": "note", "value": v} for v in args.note]
    recs += [{**base, "kind": "tag", "step": s, "value": t} for s, t in map(_tag, args.tag)]
    if args.rating is not None:
        recs.append({**base, "kind": "rating", "value": args.rating})
    if not recs:
        raise DataError("annotate: give --label, --rating, --note or --tag (or --show)")
    n = notes.add_many(recs)
    print(f"{'removed' if args.remove else 'added'} {n} annotation(s) of episode {args.episode_id!r} in {notes.path}")
    return 0
