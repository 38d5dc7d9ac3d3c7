"""Columnar steps <-> Arrow record batches, without copies where Arrow allows.

An episode's steps are held column-wise: ``{path: column}`` where a column is
a numpy array ``[num_steps, *shape]`` for fixed-shape numeric fields, and a
numpy object array of per-step values for varying-shape, ``str`` and
``bytes`` fields. Numeric columns read back from a memory-mapped segment are
views of the map (zero copy); bool columns are unpacked from Arrow's bits.
Encoded-image fields read back as :class:`~seedrl.data.images.EncodedImages`
(bytes decoded row by row when read); they are written from such a column,
bytes or uint8 arrays (:func:`~seedrl.data.images.encoded_column`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from seedrl.data.errors import EpisodeError, SpecError
from seedrl.data.images import EncodedImages, encoded_column
from seedrl.data.spec import SHAPE_SUFFIX, FieldSpec, StepSpec


def object_column(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding ``values`` as they are (no numpy broadcasting)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def stack_steps(spec: StepSpec, flat_steps: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Checked flat steps (from :meth:`StepSpec.flatten_step`) -> columns."""
    cols = {}
    for f in spec.fields:
        values = [s[f.path] for s in flat_steps]
        if f.is_encoded:
            cols[f.path] = EncodedImages(values, f.encoding, f.shape)
        elif f.is_text or not f.is_fixed:
            cols[f.path] = object_column(values)
        else:
            cols[f.path] = (
                np.stack(values) if values else np.zeros((0, *f.shape), dtype=f.dtype)
            )
    return cols


def check_columns(spec: StepSpec, columns: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
    """Validate user-given columns against the spec; returns (columns, num_steps)."""
    missing = [p for p in spec.paths if p not in columns]
    extra = [p for p in columns if p not in spec.paths]
    if missing or extra:
        raise SpecError(f"episode columns differ from the dataset spec: missing {missing}, unexpected {extra}")
    out: dict[str, np.ndarray] = {}
    n = None
    for f in spec.fields:
        col = columns[f.path]
        if f.is_encoded:
            col = EncodedImages(encoded_column(f.path, f.encoding, f.shape, col), f.encoding, f.shape)
        elif f.is_text or not f.is_fixed:
            col = col if isinstance(col, np.ndarray) and col.dtype == object else object_column(list(col))
            for v in col:
                f.check(v)
        else:
            col = np.asarray(col)
            if col.dtype != f.numpy_dtype:
                raise SpecError(f"field '{f.path}': dtype changed within the dataset: expected {f.dtype}, got {col.dtype.name}")
            if col.shape[1:] != f.shape:
                raise SpecError(f"field '{f.path}': shape changed within the dataset: expected {f.shape}, got {col.shape[1:]} per step")
        if n is None:
            n = len(col)
        elif len(col) != n:
            raise SpecError(f"field '{f.path}': has {len(col)} steps, other fields have {n}")
        out[f.path] = col
    return out, int(n or 0)


def check_episode_flags(columns: Mapping[str, np.ndarray], num_steps: int) -> None:
    """RLDS rules: is_first only at step 0, is_last only at the final step,
    is_terminal only on the last step."""
    if num_steps == 0:
        raise EpisodeError("an episode needs at least one step (the one with is_last)")
    first = np.asarray(columns["is_first"], dtype=bool)
    last = np.asarray(columns["is_last"], dtype=bool)
    term = np.asarray(columns["is_terminal"], dtype=bool)
    if not first[0]:
        raise EpisodeError("field 'is_first': step 0 of an episode must have is_first=True")
    if first[1:].any():
        raise EpisodeError(f"field 'is_first': True at step {int(np.argmax(first[1:])) + 1}, only step 0 may be first")
    if not last[-1]:
        raise EpisodeError(f"field 'is_last': the final step ({num_steps - 1}) must have is_last=True")
    if last[:-1].any():
        i = int(np.argmax(last[:-1]))
        raise EpisodeError(f"field 'is_last': step {i + 1} comes after the is_last step {i}")
    if term[:-1].any():
        raise EpisodeError(f"field 'is_terminal': True at step {int(np.argmax(term[:-1]))}, which is not the last step")


def _arrow_column(f: FieldSpec, col: np.ndarray, n: int) -> list[pa.Array]:
    if f.is_encoded:
        ok = isinstance(col, EncodedImages) and col.encoding == f.encoding  # checked by check_columns
        values = col.encoded if ok else encoded_column(f.path, f.encoding, f.shape, col)
        return [pa.array(list(values), type=f.arrow_type())]
    if f.is_text:
        return [pa.array(list(col), type=f.arrow_type())]
    if not f.shape:
        return [pa.array(col)]
    prim = pa.from_numpy_dtype(np.dtype(f.dtype))
    if f.is_fixed:
        values = pa.array(np.ascontiguousarray(col).reshape(-1))
        return [pa.Array.from_buffers(f.arrow_type(), n, [None], children=[values])]
    parts = [np.asarray(v) for v in col]
    lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros(0, f.dtype)
    arrays = [pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(f.dtype, copy=False), type=prim))]
    if len(f.shape) > 1:
        shapes = np.array([p.shape for p in parts], dtype=np.int64).reshape(n, len(f.shape))
        arrays.append(
            pa.Array.from_buffers(pa.list_(pa.int64(), len(f.shape)), n, [None], children=[pa.array(shapes.reshape(-1))])
        )
    return arrays


def columns_to_batch(
    spec: StepSpec, columns: Mapping[str, np.ndarray], num_steps: int, schema: pa.Schema | None = None
) -> pa.RecordBatch:
    """Columns (already checked) -> one Arrow record batch, one row per step."""
    arrays: list[pa.Array] = []
    for f in spec.fields:
        arrays.extend(_arrow_column(f, columns[f.path], num_steps))
    return pa.RecordBatch.from_arrays(arrays, schema=schema or spec.arrow_schema())


def _numpy_values(values: pa.Array, dtype: str) -> np.ndarray:
    if dtype == "bool":
        return values.to_numpy(zero_copy_only=False)
    return values.to_numpy(zero_copy_only=True) if values.null_count == 0 else values.to_numpy(zero_copy_only=False)


def batch_to_columns(spec: StepSpec, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Arrow record batch -> columns, for the fields of ``spec`` (a selection is fine)."""
    out = {}
    n = batch.num_rows
    for f in spec.fields:
        arr = batch.column(f.path)
        if f.is_encoded:
            out[f.path] = EncodedImages(arr.to_pylist(), f.encoding, f.shape)
        elif f.is_text:
            out[f.path] = object_column(arr.to_pylist())
        elif not f.shape:
            out[f.path] = _numpy_values(arr, f.dtype)
        elif f.is_fixed:
            size = math.prod(f.shape)
            values = arr.values.slice(arr.offset * size, n * size)
            out[f.path] = _numpy_values(values, f.dtype).reshape(n, *f.shape)
        else:
            offsets = arr.offsets.to_numpy()
            flat = _numpy_values(arr.values, f.dtype)
            if len(f.shape) > 1:
                shapes = batch.column(f.path + SHAPE_SUFFIX).values.to_numpy().reshape(n, len(f.shape))
            else:
                shapes = np.diff(offsets).reshape(n, 1)
            out[f.path] = object_column(
                [flat[offsets[i] : offsets[i + 1]].reshape(shapes[i]) for i in range(n)]
            )
    return out


def slice_columns(columns: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in columns.items()}


def concat_columns(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate columns along the step axis (object columns stay object)."""
    if not parts:
        return {}
    return {k: _concat([p[k] for p in parts]) for k in parts[0]}


def _concat(cols: Sequence[Any]) -> Any:
    if cols and all(isinstance(c, EncodedImages) and c.encoding == cols[0].encoding for c in cols):
        return EncodedImages([b for c in cols for b in c.encoded], cols[0].encoding, cols[0].image_shape)
    return np.concatenate(cols)
