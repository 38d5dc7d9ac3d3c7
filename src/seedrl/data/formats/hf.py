"""Hugging Face ``datasets`` <-> seedrl RLDS datasets, bit for bit.

``export_hf(dataset, out_dir, layout="episodes")`` writes one row per episode:
episode metadata as top-level columns, ``steps`` a ``List({step fields})``
(nested dicts stay nested). ``layout="steps"`` writes one row per step
(LeRobot-like): ``episode_id``, ``step_index``, the step's top-level fields and
the rest of the episode metadata in an ``episode_metadata`` struct. ``format=
"disk"`` writes ``save_to_disk`` files; ``"parquet"`` writes ``PARQUET_FILE``
with the HF features in the schema metadata (``datasets.load_dataset("parquet",
data_files=...)`` restores them). ``import_hf`` reads either layout (and the
legacy ``Sequence({...})`` dict-of-lists steps) into a seedrl dataset, the
exact step spec coming from the features (:func:`spec_from_features`):

==============================  ============================================
step leaf                       HF feature
==============================  ============================================
numeric / bool scalar           ``Value(dtype)``: float16..64, int8..uint64, bool
dims ``(d1, ..., dk)``          ``List(..List(Value, length=dk).., length=d1)``;
                                a varying dim (``None``) has length -1; on
                                import also ``Array2D..5D`` and ``LargeList``
``str`` / ``bytes``             ``Value("string")`` / ``Value("binary")``
==============================  ============================================

Values move through Arrow buffers, never Python floats, so NaN payloads, -0.0,
float16 and uint64 extremes survive. Refused with :class:`ConversionError`
naming the field: tuple/list step nodes (HF has no tuple feature), complex
dtypes, a varying-shape value whose empty dim hides a later varying dim's size
(``(0, 5)`` under ``(None, None)``), and for Parquet fixed dims of size 0
(pyarrow cannot read them back). Episode metadata: ``None``, ``bool``, ``int``,
``float``, ``str``, ``bytes`` come back as those Python types, numpy scalars
of other dtypes as numpy scalars, numeric arrays as ``np.ndarray``, dicts as
dicts, other lists as lists. A value that would not come back identical
(``np.float64(1)`` returns as ``1.0``, a tuple as a list) is refused, or with
``allow_lossy=True`` converted and listed in the returned report.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from seedrl.data.columns import object_column, slice_columns
from seedrl.data.episode import Episode, _meta_equal
from seedrl.data.errors import ConversionError, DataError
from seedrl.data.formats.minari import ConversionReport, _name, episodes_of
from seedrl.data.spec import BYTES, SEP, TEXT, FieldSpec, StepSpec
from seedrl.data.writer import DatasetWriter

EPISODE_ID, STEP_INDEX, EPISODE_METADATA, STEPS = "episode_id", "step_index", "episode_metadata", "steps"
PARQUET_FILE = "data/train-00000-of-00001.parquet"
_LISTS = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)


def _require_datasets():
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"Hugging Face interop needs: pip install seedrl[hf] (missing module {e.name!r})") from e
    return datasets


def _is_list(t: pa.DataType) -> bool:
    return any(p(t) for p in _LISTS)


def _list_dims(t: pa.DataType) -> tuple[pa.DataType, list[int | None]]:
    dims: list[int | None] = []
    while _is_list(t):
        dims.append(t.list_size if pa.types.is_fixed_size_list(t) else None)
        t = t.value_type
    return t, dims


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)


# ------------------------------------------------------ step fields <-> Arrow
def _field_array(f: FieldSpec, col: np.ndarray) -> pa.Array:
    """One field's column -> Arrow array (a row per step), built from numpy buffers."""
    if f.is_text:
        return pa.array(list(col), type=pa.string() if f.dtype == TEXT else pa.binary())
    if np.dtype(f.dtype).kind == "c":
        raise ConversionError(f"field '{f.path}': HF datasets have no complex dtype ({f.dtype})")
    n, k = len(col), len(f.shape)
    if f.is_fixed:
        flat, shapes = np.ascontiguousarray(col).reshape(-1), np.broadcast_to(np.array(f.shape, np.int64), (n, k))
    else:
        parts = [np.asarray(v) for v in col]
        shapes = np.array([p.shape for p in parts], np.int64).reshape(n, k)
        flat = np.concatenate([p.reshape(-1) for p in parts]) if n else np.zeros(0, f.dtype)
        for i, s in enumerate(shapes):  # nested lists lose the sizes of the dims after an empty one
            z = np.flatnonzero(s == 0)
            if len(z) and any(f.shape[j] is None and s[j] for j in range(z[0] + 1, k)):
                raise ConversionError(f"field '{f.path}': step {i} has shape {tuple(map(int, s))}; HF nested lists "
                                      f"cannot keep the size of a varying dim after an empty one (spec {f.shape})")
    arr = pa.array(flat.astype(f.dtype, copy=False))
    for j in reversed(range(k)):
        counts = np.prod(shapes[:, :j], axis=1, dtype=np.int64)
        if f.shape[j] is None:
            offsets = np.concatenate([[0], np.cumsum(np.repeat(shapes[:, j], counts))])
            if offsets[-1] >= 2**31:
                raise ConversionError(f"field '{f.path}': over 2**31 values in one chunk; lower chunk_episodes")
            arr = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), arr)
        else:
            arr = pa.Array.from_buffers(pa.list_(arr.type, f.shape[j]), int(counts.sum()), [None], children=[arr])
    return arr


def _field_column(arr: pa.Array, f: FieldSpec) -> np.ndarray:
    """Arrow array (a row per step) -> the seedrl column of ``f``, exactly, from buffers."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    arr = arr.storage if isinstance(arr.type, pa.ExtensionType) else arr  # Array2D..5D
    n, k = len(arr), len(f.shape)
    if f.is_text:
        kinds = ("string", "large_string") if f.dtype == TEXT else ("binary", "large_binary")
        if arr.null_count or str(arr.type) not in kinds:
            raise ConversionError(f"field '{f.path}': expected {f.dtype} values without nulls, got Arrow {arr.type}")
        return object_column(arr.to_pylist())
    shapes, rows = np.zeros((n, k), np.int64), np.arange(n + 1, dtype=np.int64)  # row i owns items rows[i]:rows[i+1]
    for j in range(k + 1):
        if arr.null_count:
            raise ConversionError(f"field '{f.path}': null value(s) at depth {j}; RLDS steps hold no nulls")
        if j == k:
            break
        if not _is_list(arr.type):
            raise ConversionError(f"field '{f.path}': expected a list at depth {j} for shape {f.shape}, got {arr.type}")
        if pa.types.is_fixed_size_list(arr.type):
            lengths = np.full(len(arr), arr.type.list_size, np.int64)
        else:
            lengths = np.diff(arr.offsets.to_numpy()).astype(np.int64)
        start, stop = rows[:-1], rows[1:]
        dims, full = np.full(n, f.shape[j] or 0, np.int64), stop > start
        if full.any():  # every item of a row must have one length: no ragged rows
            lo, hi = np.minimum.reduceat(lengths, start[full]), np.maximum.reduceat(lengths, start[full])
            if (lo != hi).any():
                raise ConversionError(f"field '{f.path}': step {np.flatnonzero(full)[np.argmax(lo != hi)]} is ragged "
                                      f"at depth {j}; RLDS arrays are rectangular")
            dims[full] = lo
        if f.shape[j] is not None and (dims != f.shape[j]).any():
            raise ConversionError(f"field '{f.path}': step {np.argmax(dims != f.shape[j])} has size "
                                  f"{dims[np.argmax(dims != f.shape[j])]} at dim {j}, the spec {f.shape[j]}")
        shapes[:, j], rows = dims, np.concatenate([[0], np.cumsum(lengths)])[rows]
        arr = arr.flatten()
    if isinstance(arr.type, pa.ExtensionType) or arr.type != pa.from_numpy_dtype(np.dtype(f.dtype)):
        raise ConversionError(f"field '{f.path}': values are Arrow {arr.type}, the spec says {f.dtype}")
    flat = arr.to_numpy(zero_copy_only=False) if f.dtype == "bool" else arr.to_numpy()
    if f.is_fixed:
        return flat.reshape(n, *f.shape)
    return object_column([flat[rows[i] : rows[i + 1]].reshape(shapes[i]) for i in range(n)])


def _struct(node: Any, prefix: str, arrays: Mapping[str, pa.Array]) -> pa.Array:
    if node is None:
        return arrays[prefix]
    if "dict" not in node or not node["dict"]:
        raise ConversionError(f"field '{prefix}': HF features have no tuple/list or empty node; use a dict of fields")
    names = list(node["dict"])
    children = [_struct(node["dict"][k], f"{prefix}{SEP}{k}", arrays) for k in names]
    return pa.StructArray.from_arrays(children, names=names)


def _children(arr: pa.Array) -> dict[str, pa.Array]:
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return {arr.type.field(i).name: child for i, child in enumerate(arr.flatten())}


def spec_from_features(features: Mapping[str, Any]) -> StepSpec:
    """The :class:`StepSpec` that HF step features describe (exact dtypes and shapes)."""
    datasets = _require_datasets()
    fields: list[FieldSpec] = []

    def walk(feats: Mapping[str, Any], prefix: str) -> Any:
        node = {}
        for key, feat in feats.items():
            path = f"{prefix}{SEP}{key}" if prefix else key
            if isinstance(feat, dict):
                node[key] = walk(feat, path)
            else:
                node[key] = None
                fields.append(_leaf_spec(datasets, path, feat))
        return {"dict": node}

    treedef = walk(features, "")
    return StepSpec(treedef, tuple(fields))


def _leaf_spec(datasets: Any, path: str, feat: Any) -> FieldSpec:
    dims: list[int | None] = []
    while isinstance(feat, (datasets.List, datasets.LargeList, list)):
        length = getattr(feat, "length", -1)
        dims.append(None if length in (-1, None) else int(length))
        feat = feat[0] if isinstance(feat, list) and len(feat) == 1 else getattr(feat, "feature", None)
    if isinstance(feat, (datasets.Array2D, datasets.Array3D, datasets.Array4D, datasets.Array5D)):
        dims.extend(feat.shape)
    elif not isinstance(feat, datasets.Value):
        raise ConversionError(f"field '{path}': HF feature {feat!r} has no RLDS leaf equivalent")
    dtype = {"string": TEXT, "large_string": TEXT, "binary": BYTES, "large_binary": BYTES}.get(feat.dtype, feat.dtype)
    if dtype not in (TEXT, BYTES, "bool", "float16", "float32", "float64") and not dtype.startswith(("int", "uint")):
        raise ConversionError(f"field '{path}': HF dtype {dtype!r} has no RLDS equivalent")
    if dtype in (TEXT, BYTES) and dims:
        raise ConversionError(f"field '{path}': lists of {dtype} have no RLDS leaf equivalent (str/bytes are scalars)")
    return FieldSpec(path, dtype, tuple(dims))


# ------------------------------------------------------- metadata <-> Arrow
def _meta_type(value: Any, key: str) -> pa.DataType:
    if value is None:
        return pa.null()
    if isinstance(value, (bool, np.bool_)):
        return pa.bool_()
    if isinstance(value, (int, float, str, bytes)) and not isinstance(value, np.generic):
        return {int: pa.int64(), float: pa.float64(), str: pa.string(), bytes: pa.binary()}[type(value)]
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "biuf":
        t = pa.from_numpy_dtype(value.dtype)
        for d in reversed(np.shape(value)):
            t = pa.list_(t, d)
        return t
    if isinstance(value, (list, tuple)):
        return pa.list_(_unify([_meta_type(v, key) for v in value], key))
    if isinstance(value, Mapping):
        return pa.struct([(k, _meta_type(v, f"{key}/{k}")) for k, v in value.items()])
    raise ConversionError(f"episode metadata '{key}': HF has no column type for {type(value).__name__} {value!r:.60}")


def _unify(types: Iterable[pa.DataType], key: str) -> pa.DataType:
    out = pa.null()
    for t in types:
        if out == t or pa.types.is_null(t):
            continue
        if pa.types.is_null(out):
            out = t
        elif _is_list(out) and _is_list(t):
            size = out.list_size if pa.types.is_fixed_size_list(out) and out == t else -1
            out = pa.list_(_unify([out.value_type, t.value_type], key), size)
        elif pa.types.is_struct(out) and pa.types.is_struct(t):
            a, b = {f.name: f.type for f in out}, {f.name: f.type for f in t}
            out = pa.struct([(n, _unify([a.get(n, pa.null()), b.get(n, pa.null())], f"{key}/{n}")) for n in {**a, **b}])
        else:
            raise ConversionError(f"episode metadata '{key}': its type differs between episodes ({out} vs {t})")
    return out


def _py(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_py(v) for v in value]
    return {k: _py(v) for k, v in value.items()} if isinstance(value, Mapping) else value


def _meta_array(values: Sequence[Any], t: pa.DataType, key: str) -> pa.Array:
    leaf, dims = _list_dims(t)
    if values and _numeric(leaf) and all(isinstance(v, (np.ndarray, np.generic)) for v in values):
        f = FieldSpec(key, np.dtype(leaf.to_pandas_dtype()).name, tuple(dims))  # from buffers: NaN payloads kept
        return _field_array(f, np.stack(values) if f.is_fixed else object_column(values))
    try:
        return pa.array([_py(v) for v in values], type=t)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as e:
        raise ConversionError(f"episode metadata '{key}': cannot be stored as {t}: {e}") from e


def _meta_values(arr: pa.Array, key: str) -> list:
    """Arrow metadata column -> Python values (types as in the module doc)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    arr = arr.storage if isinstance(arr.type, pa.ExtensionType) else arr
    t, n = arr.type, len(arr)
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False)) if arr.null_count else np.ones(n, bool)
    if pa.types.is_null(t):
        return [None] * n
    if pa.types.is_struct(t):
        cols = {name: _meta_values(child, f"{key}/{name}") for name, child in _children(arr).items()}
        return [{k: c[i] for k, c in cols.items()} if valid[i] else None for i in range(n)]
    if _is_list(t):
        leaf, dims = _list_dims(t)
        if _numeric(leaf):
            f = FieldSpec(key, np.dtype(leaf.to_pandas_dtype()).name, tuple(dims))
            col = iter(_field_column(arr.filter(pa.array(valid)), f))
            return [np.array(next(col)) if v else None for v in valid]
        lengths = np.full(n, t.list_size) if pa.types.is_fixed_size_list(t) else np.diff(arr.offsets.to_numpy())
        items, ends = _meta_values(arr.flatten(), key), np.cumsum(np.where(valid, lengths, 0))
        return [items[e - lengths[i] : e] if valid[i] else None for i, e in enumerate(ends)]
    if t in (pa.bool_(), pa.int64(), pa.float64(), pa.string(), pa.large_string(), pa.binary(), pa.large_binary()):
        return arr.to_pylist()
    if _numeric(t):
        values = arr.fill_null(0).to_numpy()
        return [values[i] if valid[i] else None for i in range(n)]
    raise ConversionError(f"episode metadata '{key}': HF column type {t} has no RLDS metadata equivalent")


def _same(a: Any, b: Any) -> bool:
    """Bit-exact and of the same types all the way down (Episode.equals lets np.float64 pass for float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    return _meta_equal(a, b)


# --------------------------------------------------------------------- export
def _episode_table(spec: StepSpec, episodes: list[Episode], types: Mapping[str, pa.DataType], layout: str,
                   allow_lossy: bool, report: ConversionReport) -> pa.Table:
    def column(f: FieldSpec) -> np.ndarray:
        if episodes:
            return np.concatenate([e.columns[f.path] for e in episodes])
        return np.zeros((0, *f.shape), f.dtype) if f.is_fixed and not f.is_text else object_column([])

    arrays = {f.path: _field_array(f, column(f)) for f in spec.fields}
    top = {k: _struct(t, k, arrays) for k, t in spec.treedef["dict"].items()}
    meta = {}
    for key, t in types.items():  # each metadata column must come back identical, or be reported
        values = [e.metadata.get(key) for e in episodes]
        meta[key] = _meta_array(values, t, key)
        for e, v, back in zip(episodes, values, _meta_values(meta[key], key)):
            if not _same(v, back):
                msg = (f"episode {e.episode_id!r}: metadata '{key}' = {v!r:.60} ({type(v).__name__}) "
                       f"would come back as {back!r:.60} ({type(back).__name__})")
                if not allow_lossy:
                    raise ConversionError(msg + "; pass allow_lossy=True to convert it")
                report.changes.append(msg)
    lengths = np.array([len(e) for e in episodes], np.int64)
    if layout == "episodes":
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        steps = pa.StructArray.from_arrays(list(top.values()), names=list(top))
        return pa.table({**meta, STEPS: pa.ListArray.from_arrays(offsets, steps)})
    clash = [k for k in top if k in (EPISODE_ID, STEP_INDEX, EPISODE_METADATA)]
    if clash or any(e.episode_id is None for e in episodes):
        raise ConversionError(f"field '{clash[0]}': the name is a steps-layout column" if clash else
                              "the steps layout needs an episode_id on every episode")
    rows = pa.array(np.repeat(np.arange(len(episodes)), lengths))
    index = np.concatenate([np.arange(n) for n in lengths]) if episodes else np.zeros(0)
    cols = {EPISODE_ID: meta[EPISODE_ID].take(rows), STEP_INDEX: pa.array(index.astype(np.int64)), **top}
    rest = [k for k in types if k != EPISODE_ID]
    if rest:
        cols[EPISODE_METADATA] = pa.StructArray.from_arrays([meta[k] for k in rest], names=rest).take(rows)
    return pa.table(cols)


def export_hf(dataset_or_path: Any, out_dir: str | os.PathLike, layout: str = "episodes", *, format: str = "disk",
              allow_lossy: bool = False, chunk_episodes: int = 256) -> ConversionReport:
    """Write a seedrl dataset (a Dataset, its path, or Episodes) as a HF dataset in ``out_dir``.

    Returns a :class:`ConversionReport`; ``changes`` lists metadata converted
    under ``allow_lossy`` (steps are always exact, or refused).
    """
    datasets = _require_datasets()
    if layout not in ("episodes", "steps") or format not in ("disk", "parquet"):
        raise DataError(f"layout must be 'episodes'/'steps' and format 'disk'/'parquet', got {layout!r}, {format!r}")
    spec, metas, chunks = episodes_of(dataset_or_path, chunk_episodes)
    keys = [EPISODE_ID] + [k for k in dict.fromkeys(k for m in metas for k in m) if k != EPISODE_ID]
    if STEPS in keys:
        raise ConversionError("episode metadata 'steps': the name is reserved by RLDS for the steps column")
    types = {k: _unify([_meta_type(m.get(k), k) for m in metas], k) for k in keys}
    out = Path(out_dir)
    report = ConversionReport(source=_name(dataset_or_path), target=str(out))
    tables = (_episode_table(spec, eps, types, layout, allow_lossy, report) for eps in chunks)
    first = next(tables, None) or _episode_table(spec, [], types, layout, allow_lossy, report)
    features = datasets.Features.from_arrow_schema(first.schema)
    schema = features.arrow_schema  # carries the HF features in its metadata

    def write(writer: Any) -> None:
        for t in itertools.chain([first], tables):
            writer.write_table(t.cast(schema))
            report.episodes += t.num_rows if layout == "episodes" else int(np.sum(t.column(STEP_INDEX).to_numpy() == 0))

    if format == "parquet":
        import pyarrow.parquet as pq

        for f in spec.fields + tuple(FieldSpec(k, "int8", _list_dims(t)[1]) for k, t in types.items()):
            if 0 in f.shape:
                raise ConversionError(f"field '{f.path}': a fixed dim of size 0 cannot go through Parquet (pyarrow "
                                      "cannot read it back); use format='disk'")
        (out / PARQUET_FILE).parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(out / PARQUET_FILE, schema, use_dictionary=False) as w:
            write(w)
        return report
    from datasets.arrow_writer import ArrowWriter

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        with ArrowWriter(features=features, path=os.path.join(tmp, "data.arrow")) as w:
            write(w)
            w.finalize()
        quiet = not datasets.utils.are_progress_bars_disabled()
        datasets.utils.disable_progress_bars()
        try:
            datasets.Dataset.from_file(os.path.join(tmp, "data.arrow")).save_to_disk(str(out))
        finally:
            if quiet:
                datasets.utils.enable_progress_bars()
    return report


# --------------------------------------------------------------------- import
def import_hf(hf_dataset_or_path: Any, out_path: str | os.PathLike, *, layout: str | None = None,
              split: str | None = None, name: str | None = None) -> ConversionReport:
    """Write a HF dataset (a Dataset/DatasetDict, a ``save_to_disk`` dir, Parquet files) as a seedrl dataset.

    Flags must follow the RLDS rules (errors name the field); episodes without
    an ``episode_id`` column get the writer's ids.
    """
    datasets = _require_datasets()
    src = hf_dataset_or_path
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        files = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet")) if path.is_dir() else []
        if files and not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
            import pyarrow.parquet as pq

            schema = pq.read_schema(files[0])
            features = datasets.Features.from_arrow_schema(schema)
            batches = (pq.read_table(f, schema=schema) for f in files)
        else:
            src = datasets.load_from_disk(str(path))
    if isinstance(src, datasets.DatasetDict):
        if split is None and len(src) != 1:
            raise ConversionError(f"a DatasetDict with splits {list(src)}: pass split=")
        src = src[split or next(iter(src))]
    if isinstance(src, datasets.Dataset):
        features, batches = src.features, src.with_format("arrow").iter(batch_size=256)
    elif not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"expected a datasets.Dataset, DatasetDict or a path, got {type(src).__name__}")
    layout = layout or ("episodes" if STEPS in features else "steps" if STEP_INDEX in features else None)
    if layout == "episodes":
        sf = features[STEPS]  # List({...}), or the legacy Sequence({...}): a dict of per-field lists
        step_features = {k: _item(v) for k, v in sf.items()} if isinstance(sf, dict) else _item(sf)
        if not isinstance(step_features, dict) or None in step_features.values():
            raise ConversionError(f"field 'steps': expected a list of step dicts, got {sf!r}")
    elif layout == "steps" and EPISODE_ID in features:
        step_features = {k: v for k, v in features.items() if k not in (EPISODE_ID, STEP_INDEX, EPISODE_METADATA)}
    else:
        raise ConversionError(f"neither a 'steps' column nor 'episode_id' + 'step_index' columns in {list(features)}")
    spec = spec_from_features(step_features)
    report = ConversionReport(source=_name(hf_dataset_or_path), target=str(out_path))
    with DatasetWriter(out_path, spec, name=name) as writer:
        for columns, metadata in (_read_episodes if layout == "episodes" else _read_steps)(spec, batches):
            if metadata.get(EPISODE_ID, 0) is None:
                del metadata[EPISODE_ID]
            writer.write_episode(Episode.from_columns(spec, columns, metadata))
            report.episodes += 1
    return report


def _item(feat: Any) -> Any:
    return feat[0] if isinstance(feat, list) and len(feat) == 1 else getattr(feat, "feature", None)


def _offsets(arr: pa.Array, what: str) -> np.ndarray:
    if arr.null_count or not _is_list(arr.type):
        raise ConversionError(f"field '{what}': expected a list per episode without nulls, got {arr.type}")
    if pa.types.is_fixed_size_list(arr.type):
        return np.arange(len(arr) + 1, dtype=np.int64) * arr.type.list_size
    return arr.offsets.to_numpy().astype(np.int64) - int(arr.offsets[0].as_py())


def _columns(spec: StepSpec, nodes: Mapping[str, pa.Array]) -> dict[str, np.ndarray]:
    def leaf(path: str) -> pa.Array:
        first, *rest = path.split(SEP)
        arr = nodes[first]
        for p in rest:
            arr = _children(arr)[p]
        return arr

    return {f.path: _field_column(leaf(f.path), f) for f in spec.fields}


def _read_episodes(spec: StepSpec, batches: Iterable[pa.Table]):
    for table in batches:
        steps = table.column(STEPS).combine_chunks()
        if pa.types.is_struct(steps.type):  # legacy Sequence({...}): one list per field, of equal lengths
            nodes, offsets = {}, None
            for k, arr in _children(steps).items():
                off = _offsets(arr, k)
                if offsets is not None and not np.array_equal(off, offsets):
                    raise ConversionError(f"field '{k}': its step count differs from the other step fields'")
                nodes[k], offsets = arr.flatten(), off
        else:
            offsets, nodes = _offsets(steps, STEPS), _children(steps.flatten())
        columns = _columns(spec, nodes)
        metas = {k: _meta_values(table.column(k), k) for k in table.column_names if k != STEPS}
        for i in range(table.num_rows):
            yield slice_columns(columns, offsets[i], offsets[i + 1]), {k: v[i] for k, v in metas.items()}


def _read_steps(spec: StepSpec, batches: Iterable[pa.Table]):
    """Rows grouped by episode_id (in order of first appearance), sorted by step_index."""
    table = pa.concat_tables(list(batches))
    ids = _meta_values(table.column(EPISODE_ID), EPISODE_ID)
    rank: dict[Any, int] = {}
    order = np.array([rank.setdefault(i, len(rank)) for i in ids], np.int64)
    index = table.column(STEP_INDEX).to_numpy() if STEP_INDEX in table.column_names else np.zeros(len(ids), np.int64)
    perm = np.lexsort((index, order))
    table, order, index = table.take(pa.array(perm)), order[perm], index[perm]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(order)) + 1, [len(order)]])
    columns = _columns(spec, {k: table.column(k) for k in table.column_names})
    extra = None
    if EPISODE_METADATA in table.column_names:
        extra = _meta_values(table.column(EPISODE_METADATA), EPISODE_METADATA)
    for a, b in zip(bounds[:-1], bounds[1:]):
        metadata = {EPISODE_ID: ids[perm[a]]}
        if STEP_INDEX in table.column_names and not np.array_equal(index[a:b], np.arange(b - a)):
            raise ConversionError(f"field 'step_index': episode {metadata[EPISODE_ID]!r} has steps "
                                  f"{index[a:b][:8].tolist()}, not 0..{b - a - 1}")
        if extra is not None:
            if any(not _meta_equal(extra[a], extra[i]) for i in range(a + 1, b)):
                raise ConversionError(f"field 'episode_metadata': changes within episode {metadata[EPISODE_ID]!r}")
            metadata.update(extra[a] or {})
        yield slice_columns(columns, a, b), metadata
