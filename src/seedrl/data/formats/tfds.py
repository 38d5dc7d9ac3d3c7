"""seedrl RLDS datasets <-> TFDS RLDS dataset directories, without TensorFlow.

``export_tfds(dataset, out_dir)`` writes what ``tfds.builder_from_directory``
loads: ``features.json``, ``dataset_info.json`` (``shardLengths``,
``numBytes``, ``disableShuffling: true`` so shards are read in order) and
TFRecord shards ``{name}-{split}.tfrecord-{i:05d}-of-{n:05d}`` of
``tf.train.Example`` s, one per episode, cut by size (``shard_bytes``). The
exact seedrl spec goes to ``seedrl_spec.json`` next to them. It streams: one
episode in memory at a time. Exporting another split into the same directory
adds it to ``dataset_info.json`` (the features must be identical).

``import_tfds(src_dir, out_path)`` reads such a directory, ours or one written
by tfds itself, with our TFRecord / Example codecs. With ``seedrl_spec.json``
it restores tuples, narrower dtypes and fixed dims exactly; without it the
spec comes from ``features.json`` (every FeaturesDict a dict, TFDS dtypes).

Step fields follow the table in :mod:`seedrl.data.formats.tfds_features`.
Episode metadata becomes top-level features: ``str`` -> Text, ``bytes`` ->
string Tensor, ``bool``/``int`` -> bool/int64 Scalars, ``float`` -> float64
(encoding bytes), numpy scalars and arrays -> Tensors of their dtype, dicts ->
FeaturesDicts; the Python/numpy type of each value is recorded in
``seedrl_spec.json``. Refused with :class:`ConversionError` naming the key:
``None``, lists, tuples, empty dicts, ints outside int64, keys containing
``/``, and keys whose type changes between episodes; with
``allow_lossy=True`` those are stored as Text holding our lossless metadata
JSON (seedrl restores them exactly; tfds readers see a string) and listed in
the returned report. Also refused: datasets with no episodes (tfds cannot
load an empty split), selections missing core RLDS fields, text that is not
UTF-8 encodable, and (see the table) some varying uint64 shapes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from seedrl.data import metadata as meta
from seedrl.data.columns import object_column
from seedrl.data.errors import ConversionError, DataError, EpisodeError, MissingKeyError, SpecError
from seedrl.data.formats.tf_example import decode_example, encode_example
from seedrl.data.formats.tfds_features import (
    Leaf,
    cast,
    decode_rows,
    encode_rows,
    features_json,
    field_of,
    leaf_for,
    parse_features,
    row_count,
)
from seedrl.data.formats.tfds_original import reusable, source_config, write_class_names
from seedrl.data.formats.tfrecord import TFRecordWriter, read_records
from seedrl.data.images import EncodedImages, decode, encode_png, header
from seedrl.data.reader import Dataset, open_dataset
from seedrl.data.spec import CORE_FIELDS, StepSpec
from seedrl.data.writer import DatasetWriter

__all__ = ["export_tfds", "import_tfds", "SPEC_FILE"]

SPEC_FILE = "seedrl_spec.json"
TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_I64 = (-(2**63), 2**63 - 1)


class _NotTfds(Exception):
    """A metadata value TFDS cannot hold exactly (the message says why)."""


# ------------------------------------------------------------------ export


def export_tfds(
    dataset: Dataset | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    split: str = "train",
    shard_bytes: int = 256 << 20,
    allow_lossy: bool = False,
) -> str | None:
    """Write ``dataset`` as split ``split`` of a TFDS RLDS directory ``out_dir``.

    Returns ``None`` when tfds readers see every value exactly, else (only
    with ``allow_lossy=True``) a report listing what they see differently.
    ``name`` defaults to the dataset's name made a valid TFDS name.
    """
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    spec = ds.spec
    top = spec.treedef.get("dict", {})
    missing = [f for f in CORE_FIELDS if f not in top]
    if missing:
        raise ConversionError(f"steps lack core RLDS field(s) {missing}; export a selection that keeps them")
    if len(ds) == 0:
        raise ConversionError(f"{ds.root}: no episodes; tfds cannot load an empty split")
    name = _valid_name(name) if name is not None else _tfds_name(ds.info.get("name") or Path(ds.root).name)
    if not re.fullmatch(r"\d+\.\d+\.\d+", version) or not re.fullmatch(r"\w+", split):
        raise DataError(f"version must be x.y.z and split a word, got {version!r}, {split!r}")
    notes: list[str] = []
    kinds, meta_notes = _plan_metadata([e.metadata for e in ds.entries], allow_lossy)
    meta_items: list[tuple[str, Any, Leaf]] = []
    for key, kind in kinds.items():
        _kind_leaves(kind, key, meta_items)
    source = reusable(ds.info.get("config") or {}, spec, [leaf for _, _, leaf in meta_items])
    if source is not None:  # imported from tfds and unchanged: its own features (tfds_original)
        fj, step_leaves, class_names = source
    else:
        step_leaves, class_names = [], {}
        for f in spec.fields:
            leaf, note = leaf_for(f.path, f.dtype, f.shape, allow_lossy, f.encoding)
            step_leaves.append(leaf)
            notes += [note] if note else []
        fj = features_json(step_leaves, [leaf for _, _, leaf in meta_items])
    notes += meta_notes
    side = {"format": "seedrl.tfds", "version": 1, "name": ds.info.get("name"), "step_spec": spec.to_json(),
            "metadata": kinds, "config": ds.info.get("config", {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = _target_info(out, name, version, split, fj, side)

    lengths: list[int] = []
    tmp: list[Path] = []
    writer: TFRecordWriter | None = None
    num_bytes = 0
    try:
        for ep in tqdm(ds, total=len(ds), disable=None, desc=f"export {name}/{split}", unit="episode"):
            feats: dict[str, tuple[str, Any]] = {}
            for leaf in step_leaves:
                col = ep.columns[leaf.path]
                rows = col.encoded if isinstance(col, EncodedImages) else col  # images: the stored bytes
                feats.update(encode_rows(leaf, rows, "steps/" + leaf.path))
            for path, kind, leaf in meta_items:
                feats.update(encode_rows(leaf, [_meta_row(kind, _at(ep.metadata, path))], path))
            record = encode_example(feats)
            if writer is None or (writer.num_bytes and writer.num_bytes + len(record) + 16 > shard_bytes):
                if writer is not None:
                    writer.close()
                tmp.append(out / f".{name}-{split}.tfrecord-{len(tmp):05d}.partial")
                writer = TFRecordWriter(tmp[-1])
                lengths.append(0)
            writer.write(record)
            lengths[-1] += 1
            num_bytes += len(record)
        writer.close()
    except BaseException:
        if writer is not None:
            writer.close()
        for p in tmp:
            p.unlink(missing_ok=True)
        raise
    n, first = len(tmp), not info["splits"]
    for i, p in enumerate(tmp):
        os.replace(p, out / f"{name}-{split}.tfrecord-{i:05d}-of-{n:05d}")
    info["splits"].append({"name": split, "shardLengths": [str(x) for x in lengths], "numBytes": str(num_bytes),
                           "filepathTemplate": TEMPLATE})
    if first:  # a later split has the same features (checked): keep the first export's files
        _write_json(out / "features.json", fj, indent=4)
        _write_json(out / SPEC_FILE, side, indent=1, sort_keys=False)  # keeps the metadata key order
        write_class_names(out, fj, class_names)
    _write_json(out / "dataset_info.json", info, indent=2)
    if not notes:
        return None
    return "TFDS readers see these values differently (import_tfds restores them exactly):\n" + "\n".join(
        f"  - {x}" for x in notes
    )


def _valid_name(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DataError(f"TFDS dataset name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")
    return name


def _tfds_name(raw: str) -> str:
    s = re.sub(r"[^a-z0-9_]+", "_", str(raw).lower()).strip("_")
    return re.sub(r"^[^a-z]+", "", s) or "seedrl_dataset"


def _target_info(out: Path, name: str, version: str, split: str, fj: dict, side: dict) -> dict:
    """dataset_info.json to extend: a new one, or an earlier export's when compatible."""
    path = out / "dataset_info.json"
    if not path.exists():
        if any(not p.name.endswith(".partial") for p in out.iterdir()):  # leftovers of a killed export are fine
            raise FileExistsError(f"{out}: not empty and not a TFDS dataset directory")
        return {"name": name, "version": version, "fileFormat": "tfrecord", "disableShuffling": True,
                "description": "RLDS episodes exported by seedrl (seedrl_spec.json holds the exact spec).",
                "splits": []}
    info = json.loads(path.read_text())
    if (info.get("name"), info.get("version")) != (name, version):
        raise FileExistsError(f"{out} holds TFDS dataset {info.get('name')}:{info.get('version')}, not {name}:{version}")
    if any(s.get("name") == split for s in info.get("splits", [])):
        raise FileExistsError(f"{out}: split {split!r} already exists")
    old_side = json.loads((out / SPEC_FILE).read_text()) if (out / SPEC_FILE).exists() else {}
    same = json.loads((out / "features.json").read_text()) == fj and all(
        old_side.get(k) == side[k] for k in ("step_spec", "metadata")
    )
    if not same:
        raise ConversionError(f"{out}: features differ from the existing splits {[s['name'] for s in info['splits']]}")
    info.setdefault("splits", [])
    return info


def _write_json(path: Path, obj: Any, indent: int, sort_keys: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent, sort_keys=sort_keys))
    os.replace(tmp, path)


# ------------------------------------------------------------------ metadata


def _meta_kind(value: Any) -> Any:
    """JSON-able type descriptor of one metadata value, or raise :class:`_NotTfds`."""
    if isinstance(value, np.str_):
        return "np_str"
    if isinstance(value, (np.generic, np.ndarray)):
        if value.dtype.kind not in "biufc":
            raise _NotTfds(f"numpy dtype {value.dtype} has no TFDS feature")
        return {"np": value.dtype.name} if isinstance(value, np.generic) else {"nd": value.dtype.name, "shape": list(value.shape)}
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotTfds(f"{value!r:.60} is not UTF-8 encodable") from None
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, int):
        if not _I64[0] <= value <= _I64[1]:
            raise _NotTfds(f"int {value} is outside int64")
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, Mapping) and value:
        bad = [k for k in value if "/" in k]
        if bad:
            raise _NotTfds(f"key(s) {bad} contain '/' (TFDS joins nested keys with '/')")
        return {"dict": {k: _meta_kind(v) for k, v in value.items()}}
    raise _NotTfds(f"TFDS has no feature for {type(value).__name__} {value!r:.60}")


def _plan_metadata(all_metadata: list[Mapping[str, Any]], allow_lossy: bool) -> tuple[dict, list[str]]:
    """One kind per metadata key, the same in every episode (or "json", when lossy is allowed)."""
    kinds: dict[str, Any] = {}
    notes: list[str] = []
    keys = list(dict.fromkeys(k for m in all_metadata for k in m))
    for key in keys:
        try:
            if "/" in key or key == "steps":
                raise _NotTfds("a top-level feature name cannot contain '/' or be 'steps'")
            found = None
            for i, m in enumerate(all_metadata):
                if key not in m:
                    raise _NotTfds(f"missing from episode {i}")
                kind = _meta_kind(m[key])
                if found is not None and kind != found:
                    raise _NotTfds(f"type changes between episodes ({found} vs {kind} at episode {i})")
                found = kind
            kinds[key] = found
        except _NotTfds as e:
            if not allow_lossy or "/" in key or key == "steps" or any(key not in m for m in all_metadata):
                raise ConversionError(f"episode metadata '{key}': {e}; pass allow_lossy=True to store it as JSON text") from None
            kinds[key] = "json"
            notes.append(f"episode metadata '{key}': stored as JSON text ({e})")
    return kinds, notes


def _kind_leaf(path: str, kind: Any) -> Leaf:
    if kind in ("str", "np_str", "json"):
        return Leaf(path, "text")
    if kind == "bytes":
        return Leaf(path, "string")
    if isinstance(kind, str):
        dtype, shape = {"bool": "bool", "int": "int64", "float": "float64"}[kind], ()
    else:
        dtype, shape = (kind["np"], ()) if "np" in kind else (kind["nd"], tuple(kind["shape"]))
    return leaf_for(path, dtype, shape)[0]


def _kind_leaves(kind: Any, path: str, out: list) -> None:
    if isinstance(kind, dict) and "dict" in kind:
        for k, sub in kind["dict"].items():
            _kind_leaves(sub, f"{path}/{k}", out)
    else:
        out.append((path, kind, _kind_leaf(path, kind)))


def _at(tree: Mapping, path: str) -> Any:
    for part in path.split("/"):
        tree = tree[part]
    return tree


def _meta_row(kind: Any, value: Any) -> Any:
    if kind == "json":
        return json.dumps(meta.encode(value), separators=(",", ":"), allow_nan=False)
    if kind in ("str", "np_str", "bytes"):
        return value
    if isinstance(kind, str):
        return np.asarray(value, dtype={"bool": np.bool_, "int": np.int64, "float": np.float64}[kind])
    return np.asarray(value)


def _meta_value(kind: Any, v: Any) -> Any:
    """Decoded metadata row -> the value, typed as recorded (``kind`` None: as tfds types it)."""
    if isinstance(v, (str, bytes)):
        return meta.decode(json.loads(v)) if kind == "json" else np.str_(v) if kind == "np_str" else v
    v = np.asarray(v)
    if kind is None:
        return v[()] if v.ndim == 0 else np.array(v)
    if kind in ("bool", "int", "float"):
        return {"bool": bool, "int": int, "float": float}[kind](v[()])
    if "np" in kind:
        return cast(v, kind["np"])[()]
    return np.array(cast(v, kind["nd"]))


def _nested_kind(kinds: Mapping | None, path: str) -> Any:
    node: Any = {"dict": kinds} if kinds is not None else None
    for part in path.split("/"):
        if node is None:
            return None
        node = node.get("dict", {}).get(part)
    return node


# ------------------------------------------------------------------ import


def import_tfds(src_dir: str | os.PathLike, out_path: str | os.PathLike, *, split: str = "train") -> Dataset:
    """Read split ``split`` of the TFDS RLDS directory ``src_dir`` into a seedrl dataset at ``out_path``.

    ``src_dir`` is the folder holding ``features.json`` (``<data_dir>/<name>/<version>``).
    An existing dataset at ``out_path`` is appended to. Returns the opened dataset.
    """
    src = Path(src_dir)
    if not (src / "features.json").exists() or not (src / "dataset_info.json").exists():
        raise FileNotFoundError(f"{src}: no features.json / dataset_info.json; pass the <name>/<version> folder")
    info = json.loads((src / "dataset_info.json").read_text())
    fj = json.loads((src / "features.json").read_text())
    step_leaves, step_tree, ep_leaves, _ = parse_features(fj)
    side = json.loads((src / SPEC_FILE).read_text()) if (src / SPEC_FILE).exists() else None
    by_path = {leaf.path: leaf for leaf in step_leaves}
    if side is not None:
        spec = StepSpec.from_json(side["step_spec"])
        kinds = side.get("metadata")
        if set(spec.paths) != set(by_path):
            raise ConversionError(f"{src}: features.json and {SPEC_FILE} name different fields: "
                                  f"{sorted(set(spec.paths) ^ set(by_path))}")
    else:
        spec, kinds = _spec_of(step_leaves, step_tree, src), None
    shards = _shards(src, info, split)
    config = side.get("config") if side else source_config(info, split, fj, src)
    name = (side or {}).get("name") or info.get("name")
    with DatasetWriter(out_path, spec, name=name, config=config) as writer, tqdm(
        total=sum(n for _, n in shards), disable=None, desc=f"import {info.get('name')}/{split}", unit="episode"
    ) as bar:
        for shard, expected in shards:
            count = 0
            for record in read_records(shard):
                feats = decode_example(record)
                try:
                    columns = _step_columns(spec, by_path, step_leaves, feats)
                    metadata: dict[str, Any] = {}
                    for leaf in ep_leaves:
                        row = decode_rows(leaf, feats, leaf.path, 1)[0]
                        _put(metadata, leaf.path, _meta_value(_nested_kind(kinds, leaf.path), row))
                    writer.write_episode(columns, _ordered(metadata, kinds) if kinds is not None else metadata)
                except (EpisodeError, SpecError, DataError) as e:
                    raise ConversionError(f"{shard.name}, episode {count}: {e}") from e
                count += 1
                bar.update()
            if count != expected:
                raise DataError(f"{shard}: {count} episodes, dataset_info.json says {expected}")
    return open_dataset(out_path)


def _spec_of(leaves: list[Leaf], tree: Any, src: Path) -> StepSpec:
    try:
        return StepSpec(tree, tuple(field_of(leaf) for leaf in leaves))
    except SpecError as e:
        raise ConversionError(f"{src}: steps are not RLDS steps seedrl can hold: {e}") from None


def _shards(src: Path, info: Mapping, split: str) -> list[tuple[Path, int]]:
    splits = {s.get("name"): s for s in info.get("splits", [])}
    if split not in splits:
        raise MissingKeyError(f"{src}: no split {split!r}; splits are {sorted(splits)}")
    fmt = info.get("fileFormat") or "tfrecord"
    if fmt != "tfrecord":
        raise ConversionError(f"{src}: file format {fmt!r}; only tfrecord shards can be read")
    s = splits[split]
    lengths = [int(x) for x in s.get("shardLengths", [])]
    n, template = len(lengths), s.get("filepathTemplate") or TEMPLATE
    out = []
    for i, length in enumerate(lengths):
        fname = template
        for k, v in {"{DATASET}": info.get("name", ""), "{SPLIT}": split, "{FILEFORMAT}": fmt,
                     "{SHARD_X_OF_Y}": f"{i:05d}-of-{n:05d}", "{SHARD_INDEX}": f"{i:05d}", "{NUM_SHARDS}": f"{n:05d}"}.items():
            fname = fname.replace(k, v)
        out.append((src / fname, length))
    return out


def _step_columns(spec: StepSpec, by_path: Mapping[str, Leaf], leaves: list[Leaf], feats: Mapping) -> dict:
    n = next((c for c in (row_count(leaf, feats, "steps/" + leaf.path) for leaf in leaves) if c is not None), None)
    if n is None:
        raise DataError("cannot tell the number of steps from any step feature")
    columns = {}
    for f in spec.fields:
        leaf = by_path[f.path]
        rows = decode_rows(leaf, feats, "steps/" + f.path, n)
        if f.is_encoded:
            columns[f.path] = rows if leaf.encoding else [_as_png(r, f.encoding) for r in rows]
        elif f.is_text:
            columns[f.path] = object_column(rows)
        elif f.is_fixed:
            arr = rows if isinstance(rows, np.ndarray) else (np.stack(rows) if rows else np.zeros((0, *f.shape)))
            if arr.shape[1:] != f.shape:
                raise DataError(f"field '{f.path}': stored shape {arr.shape[1:]}, spec says {f.shape}")
            columns[f.path] = cast(arr, f.dtype)
        else:
            columns[f.path] = object_column([cast(r, f.dtype) for r in rows])
    return columns


def _as_png(row: bytes | list, encoding: str) -> bytes | list:
    """A row of a tfds Image left without a format (file bytes kept as they are): other formats as PNG
    of the same pixels, so that one store field holds one format."""
    if isinstance(row, list):
        return [_as_png(b, encoding) for b in row]
    try:
        return row if header(row)[0] == encoding else encode_png(decode(row))
    except DataError:
        return row  # the field's own check names it


def _ordered(md: Mapping, kinds: Mapping) -> dict:
    """Metadata keys back in the exported order (features.json sorts them)."""
    return {k: _ordered(md[k], kind["dict"]) if isinstance(kind, dict) and "dict" in kind else md[k] for k, kind in kinds.items()}


def _put(tree: dict, path: str, value: Any) -> None:
    *parents, last = path.split("/")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[last] = value
