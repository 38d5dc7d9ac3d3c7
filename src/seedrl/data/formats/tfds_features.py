"""TFDS feature descriptions (``features.json``) <-> seedrl leaves, and their values.

A TFDS RLDS dataset is one ``tf.train.Example`` per episode. Its
``features.json`` is a ``FeaturesDict`` whose ``steps`` entry is a
``Dataset`` of a ``FeaturesDict`` of step fields; every other top-level entry
is an episode-level (metadata) field. A leaf is stored under its ``/``-joined
path (``steps/observation/pos``), the values of all steps concatenated.

How each seedrl leaf is stored (chosen so that the values tfds reads are the
exact values, and ``import_tfds`` gets the exact bits back):

==============================  =============================================
seedrl leaf                     TFDS feature (serialized as)
==============================  =============================================
``str``                         ``Text`` (UTF-8 bytes_list, one per step)
``bytes``                       ``Tensor(shape=(), dtype=string)`` (bytes_list)
bool, int8..int64,              ``Scalar`` / ``Tensor``, encoding ``none``:
uint8..uint64, float32;         int64_list (bool as 0/1, uint64 as its two's
fixed shape, > 0 values         complement bits: TF's int64->uint64 cast
                                restores them) or float_list (float32 bits,
                                NaN payloads included)
float16, float64, complex;      ``Tensor``, encoding ``bytes``: one
zero-size fixed shapes          little-endian ``tobytes()`` per step (float16
                                and float64 would be rounded through float32
                                by encoding ``none``; TF crashes parsing a
                                zero-size ``none`` tensor)
varying shape                   ``Tensor`` with ``-1`` dims, encoding ``bytes``;
                                more than one unknown dim (or one unknown dim
                                next to a zero-size dim): all dims ``-1`` and
                                tfds's ``<key>/shape`` + ``<key>/value`` pair
varying uint32/uint64,          ``Sequence(Tensor(rest))``: ragged
shape ``(None, *rest)``         ``<key>/ragged_flat_values`` +
                                ``<key>/ragged_row_lengths_0`` (TF's
                                ``decode_raw`` has no uint32/uint64)
other varying uint32            ``Tensor`` int64 (wider, exact values), bytes
other varying uint64            refused (``allow_lossy``: int64 bits, bytes)
encoded image (png / jpeg)      ``Image`` with that ``encodingFormat``: the
                                stored bytes, one per step (bytes_list)
encoded video ``(T, H, W, C)``  ``Video``: every frame's bytes
                                (``<key>/ragged_flat_values``) and the frame
                                count per step (``ragged_row_lengths_0``)
==============================  =============================================

Imported the other way (:func:`field_of`): ``ClassLabel`` -> int64,
``BBoxFeature`` -> float32 ``(4,)``, ``Image`` / ``Video`` /
``Sequence(Image)`` -> encoded fields, a ``Sequence`` or ``Dataset`` of a
``FeaturesDict`` inside a step -> one varying field per leaf; anything else
is refused naming its ``steps/...`` path. The source features are kept for
export by :mod:`seedrl.data.formats.tfds_original`.

TFDS has no tuple feature (4.9.4: ``Tensor, Scalar, Text, FeaturesDict,
Dataset, Sequence, ...``), so a tuple or list becomes a ``FeaturesDict`` keyed
``"0"``, ``"1"``...; field paths are unchanged (``action/0``). The exact seedrl
spec (tuples, narrower dtypes, fixed dims of dynamic tensors) is kept in
``seedrl_spec.json`` next to ``features.json``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from seedrl.data.errors import ConversionError, DataError
from seedrl.data.spec import FieldSpec

P = "tensorflow_datasets.core.features."
CLASSES = {
    "FeaturesDict": P + "features_dict.FeaturesDict",
    "Dataset": P + "dataset_feature.Dataset",
    "Sequence": P + "sequence_feature.Sequence",
    "Tensor": P + "tensor_feature.Tensor",
    "Scalar": P + "scalar.Scalar",
    "Text": P + "text_feature.Text",
    "Image": P + "image_feature.Image",
    "Video": P + "video_feature.Video",
}
#: dtypes stored exactly as int64_list / float_list (encoding ``none``).
NONE_EXACT = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32"}
#: dtypes TF's ``decode_raw`` can read (encoding ``bytes`` / ``zlib``).
RAW_OK = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "float16", "float32", "float64", "complex64", "complex128"}


@dataclass(frozen=True)
class Leaf:
    """One TFDS leaf feature.

    ``kind``: ``text`` (Text), ``string`` (string Tensor), ``tensor`` (numeric
    Tensor/Scalar, ClassLabel, BBoxFeature), ``ragged`` (Sequence of a numeric
    Tensor: ``shape`` is the per-step shape, ``(length or None, *inner)``),
    ``image`` (Image: one encoded image per row) or ``video`` (Video, or a
    Sequence of Image: ``(frames or None, H, W, C)``). ``dtype`` is the TFDS
    dtype name, ``shape`` the TFDS shape (``None`` = unknown); for images
    ``encoding`` is the ``encodingFormat`` (``""``: tfds's default, png for
    arrays, file bytes kept as they are).
    """

    path: str
    kind: str
    dtype: str = "string"
    shape: tuple = ()
    encoding: str = "none"

    @property
    def dynamic(self) -> bool:
        """tfds stores the shape of each value next to it (``/shape``, ``/value``)."""
        return self.kind == "tensor" and self.shape.count(None) > 1

    def to_json(self) -> dict:
        """The ``features.json`` entry (as ``MessageToDict(to_proto())`` writes it)."""
        if self.kind == "text":
            return {"pythonClassName": CLASSES["Text"], "text": {}}
        if self.kind in ("image", "video"):
            body = {"dtype": self.dtype, "shape": {"dimensions": [str(-1 if d is None else d) for d in self.shape]}}
            body |= {"encodingFormat": self.encoding} if self.encoding else {}
            return {"pythonClassName": CLASSES[self.kind.title()], self.kind: body}
        if self.kind == "ragged":
            inner = Leaf(self.path, "tensor", self.dtype, self.shape[1:], self.encoding)
            length = -1 if self.shape[0] is None else self.shape[0]
            return {"pythonClassName": CLASSES["Sequence"], "sequence": {"feature": inner.to_json(), "length": str(length)}}
        dims = {"dimensions": [str(-1 if d is None else d) for d in self.shape]} if self.shape else {}
        cls = "Scalar" if not self.shape and self.encoding == "none" and self.kind == "tensor" else "Tensor"
        return {"pythonClassName": CLASSES[cls], "tensor": {"dtype": self.dtype, "encoding": self.encoding, "shape": dims}}


def leaf_for(path: str, dtype: str, shape: Sequence[int | None], allow_lossy: bool = False,
             encoding: str | None = None) -> tuple[Leaf, str | None]:
    """The TFDS leaf for a seedrl field (module table); returns ``(leaf, lossy note or None)``."""
    shape = tuple(shape)
    if encoding is not None:
        return Leaf(path, "image" if len(shape) == 3 else "video", dtype, shape, encoding), None
    if dtype == "str":
        return Leaf(path, "text"), None
    if dtype == "bytes":
        return Leaf(path, "string"), None
    fixed_dims = [d for d in shape if d is not None]
    size = math.prod(fixed_dims)
    if None not in shape and size > 0 and dtype in NONE_EXACT:
        return Leaf(path, "tensor", dtype, shape, "none"), None
    if None in shape and dtype in ("uint32", "uint64") and shape[0] is None and None not in shape[1:] and size > 0:
        return Leaf(path, "ragged", dtype, shape), None
    note = None
    raw = dtype if dtype in RAW_OK else "int64"
    if dtype == "uint64" and size > 0:  # varying (fixed ones took the int64_list path above)
        note = f"field '{path}': varying uint64 {shape} stored as int64 bits (tfds reads values >= 2**63 as negative)"
        if not allow_lossy:
            raise ConversionError(
                f"{note}; TFDS has no exact encoding for a uint64 tensor of this shape "
                "(only (None, ...) shapes become a Sequence): pass allow_lossy=True to accept"
            )
    if None in shape and (shape.count(None) > 1 or size == 0):
        shape = (None,) * len(shape)  # tfds cannot infer two unknowns: store per-value shapes
    return Leaf(path, "tensor", raw, shape, "bytes"), note


def field_of(leaf: Leaf) -> FieldSpec:
    """The seedrl field an imported TFDS leaf becomes (images: encoded, png when tfds left the format open)."""
    if leaf.kind in ("text", "string"):
        return FieldSpec(leaf.path, "str" if leaf.kind == "text" else "bytes")
    if leaf.kind in ("image", "video"):
        return FieldSpec(leaf.path, leaf.dtype, leaf.shape, leaf.encoding or "png")
    return FieldSpec(leaf.path, leaf.dtype, leaf.shape)


# ------------------------------------------------------------------ features.json


def _nest(leaves: Sequence[Leaf]) -> dict:
    tree: dict = {}
    for leaf in leaves:
        node, parts = tree, leaf.path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = leaf
    return tree


def _dict_json(tree: Mapping) -> dict:
    feats = {k: v.to_json() if isinstance(v, Leaf) else _dict_json(v) for k, v in sorted(tree.items())}
    return {"pythonClassName": CLASSES["FeaturesDict"], "featuresDict": {"features": feats}}


def features_json(step_leaves: Sequence[Leaf], episode_leaves: Sequence[Leaf]) -> dict:
    """The whole ``features.json``: episode leaves at the top, step leaves under ``steps``."""
    top = _dict_json(_nest(episode_leaves))
    steps = {"pythonClassName": CLASSES["Dataset"], "sequence": {"feature": _dict_json(_nest(step_leaves)), "length": "-1"}}
    top["featuresDict"]["features"]["steps"] = steps
    return top


def _class(node: Mapping) -> str:
    return str(node.get("pythonClassName", "")).rsplit(".", 1)[-1]


def _dims(body: Mapping) -> tuple:
    return tuple(None if int(d) < 0 else int(d) for d in body.get("shape", {}).get("dimensions", []))


def _leaf_of(node: Mapping, path: str, shown: str) -> Leaf:
    """The leaf of one non-dict feature (``shown``: its full path, for errors)."""
    cls = _class(node)
    if cls == "Text":
        return Leaf(path, "text")
    if cls == "ClassLabel":
        return Leaf(path, "tensor", "int64", (), "none")
    if cls == "BBoxFeature":
        box = node.get("boundingBox", {})
        return Leaf(path, "tensor", np.dtype(box.get("dtype", "float32")).name, _dims(box) or (4,), "none")
    if cls in ("Image", "Video"):
        body = node.get(cls.lower(), {})
        shape, dtype, fmt = _dims(body), str(body.get("dtype", "uint8")), str(body.get("encodingFormat", "") or "")
        rank = 3 if cls == "Image" else 4
        if dtype != "uint8" or len(shape) != rank or shape[-1] not in (1, 2, 3, 4) or fmt not in ("", "png", "jpeg"):
            raise ConversionError(f"feature '{shown}': {cls} of dtype {dtype}, shape {shape}, format {fmt!r}: the store "
                                  "holds uint8 png/jpeg images with 1..4 channels")
        return Leaf(path, cls.lower(), dtype, shape, fmt)
    if cls in ("Tensor", "Scalar"):
        t = node.get("tensor", {})
        shape = _dims(t)
        dtype, enc = str(t.get("dtype", "")), str(t.get("encoding", "none") or "none").lower()
        if dtype == "string":
            if shape:
                raise ConversionError(f"feature '{shown}': string tensors of shape {shape}; seedrl str/bytes leaves are scalars")
            return Leaf(path, "string")
        try:
            ok = np.dtype(dtype).kind in "biufc"
        except TypeError:
            ok = False
        if not ok or enc not in ("none", "bytes", "zlib"):
            raise ConversionError(f"feature '{shown}': unsupported TFDS tensor dtype/encoding {dtype!r}/{enc!r}")
        return Leaf(path, "tensor", np.dtype(dtype).name, shape, enc)
    if cls in ("Sequence", "Dataset"):
        seq = node.get("sequence", {})
        if _class(seq.get("feature", {})) == "FeaturesDict":
            raise ConversionError(f"feature '{shown}': a {cls} of a FeaturesDict here (only directly inside a step)")
        return _in_sequence(_leaf_of(seq.get("feature", {}), path, shown), int(seq.get("length", -1)), shown)
    raise ConversionError(
        f"feature '{shown}': TFDS feature class {node.get('pythonClassName')!r} is not supported "
        "(supported: FeaturesDict, Tensor, Scalar, Text, ClassLabel, BBoxFeature, Image, Video, "
        "Sequence and Dataset of these)"
    )


def _in_sequence(inner: Leaf, length: int, shown: str) -> Leaf:
    """The leaf of ``inner`` repeated along a Sequence (length -1: varying) within each step."""
    n = None if length < 0 else length
    if inner.kind == "image":
        return Leaf(inner.path, "video", inner.dtype, (n, *inner.shape), inner.encoding)
    if inner.kind != "tensor" or None in inner.shape:
        raise ConversionError(f"feature '{shown}': a Sequence of {inner.kind} {inner.shape} inside a step is not "
                              "supported (only fixed-shape tensors and images)")
    return Leaf(inner.path, "ragged", inner.dtype, (n, *inner.shape), inner.encoding)


def _walk(node: Mapping, path: str, leaves: list[Leaf], root: str, length: int | None = None) -> Any:
    """Collect the leaves under a FeaturesDict; returns its seedrl treedef.

    Inside a step (``length`` not None) a Sequence/Dataset of a FeaturesDict
    is walked too: each of its leaves becomes a per-step ragged leaf.
    """
    cls, shown = _class(node), root + path
    seq = node.get("sequence", {})
    if cls in ("Sequence", "Dataset") and _class(seq.get("feature", {})) == "FeaturesDict" and root == "steps/":
        if length is not None:
            raise ConversionError(f"feature '{shown}': a {cls} of a FeaturesDict inside another one is not supported")
        return _walk(seq["feature"], path, leaves, root, int(seq.get("length", -1)))
    if cls != "FeaturesDict":
        leaf = _leaf_of(node, path, shown)
        if root != "steps/" and leaf.kind in ("image", "video"):
            raise ConversionError(f"feature '{shown}': episode-level {cls} features are not supported")
        leaves.append(leaf if length is None else _in_sequence(leaf, length, shown))
        return None
    out = {}
    for key, child in sorted(node.get("featuresDict", {}).get("features", {}).items()):
        out[key] = _walk(child, f"{path}/{key}" if path else key, leaves, root, length)
    return {"dict": out}


def parse_features(fj: Mapping) -> tuple[list[Leaf], Any, list[Leaf], Any]:
    """``features.json`` -> (step leaves, step treedef, episode leaves, episode treedef)."""
    if _class(fj) != "FeaturesDict" or "featuresDict" not in fj:
        raise ConversionError("features.json: expected a FeaturesDict in tfds's proto JSON form (tfds >= 4.5)")
    top = dict(fj["featuresDict"].get("features", {}))
    steps = top.pop("steps", None)
    if steps is None or _class(steps) != "Dataset":
        raise ConversionError("features.json: no 'steps' Dataset feature; not an RLDS dataset")
    step_leaves: list[Leaf] = []
    step_tree = _walk(steps.get("sequence", {}).get("feature", {}), "", step_leaves, "steps/")
    if step_tree is None:
        raise ConversionError("features.json: 'steps' must be a Dataset of a FeaturesDict")
    ep_leaves: list[Leaf] = []
    ep_tree = _walk({"pythonClassName": CLASSES["FeaturesDict"], "featuresDict": {"features": top}}, "", ep_leaves, "")
    return step_leaves, step_tree, ep_leaves, ep_tree


# ------------------------------------------------------------------ values


def _int64_bits(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a).reshape(-1)
    return a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64)


def cast(a: np.ndarray, dtype: str) -> np.ndarray:
    """Cast decoded values to ``dtype`` as TF does (bool: != 0, int64 -> uint64: bits)."""
    a = np.asarray(a)
    if a.dtype.name == dtype:
        return a
    if dtype == "bool":
        return a != 0
    if dtype == "uint64" and a.dtype == np.int64:
        return a.view(np.uint64)
    return a.astype(dtype)


def encode_rows(leaf: Leaf, rows: Any, key: str) -> dict[str, tuple[str, Any]]:
    """Serialize the values of ``rows`` (one per step, or one per episode) as Example features."""
    if leaf.kind == "text":
        vals = []
        for i, s in enumerate(rows):
            try:
                vals.append(s.encode("utf-8"))
            except UnicodeEncodeError as e:
                raise ConversionError(f"field '{leaf.path}': row {i} {s!r:.60} is not UTF-8 encodable ({e.reason})") from None
        return {key: ("bytes", vals)}
    if leaf.kind in ("string", "image"):
        return {key: ("bytes", [bytes(b) for b in rows])}
    if leaf.kind == "video":  # a Sequence of Image: every frame's bytes, and the frame count per row
        return {key + "/ragged_flat_values": ("bytes", [bytes(b) for r in rows for b in r]),
                key + "/ragged_row_lengths_0": ("int64", np.array([len(r) for r in rows], np.int64))}
    if leaf.kind == "ragged":
        arrs = [np.asarray(r) for r in rows]
        inner = Leaf(leaf.path, "tensor", leaf.dtype, leaf.shape[1:], leaf.encoding)
        flat = np.concatenate(arrs) if arrs else np.zeros((0, *inner.shape), leaf.dtype)
        return {**encode_rows(inner, flat, key + "/ragged_flat_values"),
                key + "/ragged_row_lengths_0": ("int64", np.array([len(a) for a in arrs], np.int64))}
    if leaf.encoding == "none":
        arr = np.asarray(rows)
        if arr.dtype.kind != "f":
            return {key: ("int64", _int64_bits(arr))}
        f32 = arr.astype(np.float32).reshape(-1)
        if arr.dtype != np.float32 and f32.astype(arr.dtype).tobytes() != arr.reshape(-1).tobytes():
            raise ConversionError(f"field '{leaf.path}': {arr.dtype} values that float32 cannot hold, for a TFDS "
                                  "feature of encoding none (stored as float32)")
        return {key: ("float", f32)}
    le = np.dtype(leaf.dtype).newbyteorder("<")
    vals, shapes = [], []
    for r in rows:
        a = np.asarray(r)
        shapes.append(a.shape)
        b = (_int64_bits(a) if leaf.dtype == "int64" else a).astype(le).tobytes()
        vals.append(zlib.compress(b) if leaf.encoding == "zlib" else b)
    if leaf.dynamic:
        return {key + "/value": ("bytes", vals), key + "/shape": ("int64", np.array(shapes, np.int64).reshape(-1))}
    return {key: ("bytes", vals)}


def _values(feats: Mapping, key: str, kind: str) -> Any:
    got, vals = feats.get(key, (None, []))
    if got is None:
        return [] if kind == "bytes" else np.zeros(0, np.int64 if kind == "int64" else np.float32)
    if got != kind:
        raise DataError(f"feature '{key}': stored as a {got} list, features.json implies {kind}")
    return vals


def row_count(leaf: Leaf, feats: Mapping, key: str) -> int | None:
    """Number of rows (steps) the stored values of ``leaf`` hold, when they tell."""
    if leaf.kind in ("text", "string", "image"):
        return len(_values(feats, key, "bytes"))
    if leaf.kind in ("ragged", "video"):
        return len(_values(feats, key + "/ragged_row_lengths_0", "int64"))
    if leaf.encoding != "none":
        return len(_values(feats, key + "/value" if leaf.dynamic else key, "bytes"))
    size = math.prod(leaf.shape) if None not in leaf.shape else 0
    return len(_values(feats, key, _number_kind(leaf))) // size if size else None


def _number_kind(leaf: Leaf) -> str:
    return "float" if np.dtype(leaf.dtype).kind == "f" else "int64"


def _from_raw(b: bytes, leaf: Leaf, shape: tuple) -> np.ndarray:
    if leaf.encoding == "zlib":
        b = zlib.decompress(b)
    a = np.frombuffer(b, dtype=np.dtype(leaf.dtype).newbyteorder("<")).astype(leaf.dtype)
    fixed = math.prod(d for d in shape if d is not None and d >= 0)
    if fixed == 0 and a.size == 0:
        shape = tuple(0 if d is None or d < 0 else d for d in shape)
    try:
        return a.reshape(tuple(-1 if d is None else d for d in shape))
    except ValueError:
        raise DataError(f"feature '{leaf.path}': {a.size} {leaf.dtype} values do not fit shape {shape}") from None


def decode_rows(leaf: Leaf, feats: Mapping, key: str, n: int) -> Any:
    """The ``n`` rows of ``leaf``: a list of str/bytes, an array ``[n, *shape]``, or a list of arrays."""
    if leaf.kind == "text":
        out = []
        for i, b in enumerate(_values(feats, key, "bytes")):
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                raise ConversionError(f"feature '{leaf.path}': row {i} of a Text feature is not UTF-8: {b[:40]!r}") from None
        return _check(out, n, leaf)
    if leaf.kind in ("string", "image"):
        return _check(list(_values(feats, key, "bytes")), n, leaf)
    if leaf.kind == "video":
        lengths = np.asarray(_check(_values(feats, key + "/ragged_row_lengths_0", "int64"), n, leaf))
        frames = list(_values(feats, key + "/ragged_flat_values", "bytes"))
        if len(frames) != lengths.sum():
            _bad(leaf, n)
        ends = np.cumsum(lengths)
        return [frames[e - k:e] for e, k in zip(ends, lengths)]
    if leaf.kind == "ragged":
        lengths = np.asarray(_check(_values(feats, key + "/ragged_row_lengths_0", "int64"), n, leaf))
        inner = Leaf(leaf.path, "tensor", leaf.dtype, leaf.shape[1:], leaf.encoding)
        flat = decode_rows(inner, feats, key + "/ragged_flat_values", int(lengths.sum()))
        if isinstance(flat, list):
            flat = np.stack(flat) if flat else np.zeros((0, *inner.shape), leaf.dtype)
        return np.split(flat, np.cumsum(lengths)[:-1]) if n else []
    if leaf.encoding == "none":
        arr = cast(_values(feats, key, _number_kind(leaf)), leaf.dtype)
        fixed = math.prod(d for d in leaf.shape if d is not None)
        if leaf.shape.count(None) > 1:
            raise ConversionError(f"feature '{leaf.path}': unencoded tensor with two unknown dims {leaf.shape}")
        if None in leaf.shape and (n == 0 or fixed == 0):
            shape = tuple(0 if d is None else d for d in leaf.shape)
        else:
            shape = tuple(arr.size // (n * fixed) if d is None else d for d in leaf.shape)
        if arr.size != n * math.prod(shape):
            _bad(leaf, n)
        return arr.reshape(n, *shape)
    vals = _check(_values(feats, key + "/value" if leaf.dynamic else key, "bytes"), n, leaf)
    if leaf.dynamic:
        shapes = _values(feats, key + "/shape", "int64").reshape(-1, len(leaf.shape))
        return [_from_raw(b, leaf, tuple(s)) for b, s in zip(vals, shapes)]
    if None not in leaf.shape and leaf.encoding == "bytes":
        per = np.dtype(leaf.dtype).itemsize * math.prod(leaf.shape)
        if any(len(v) != per for v in vals):
            _bad(leaf, n)
        flat = np.frombuffer(b"".join(vals), dtype=np.dtype(leaf.dtype).newbyteorder("<"))
        return flat.astype(leaf.dtype).reshape(n, *leaf.shape)
    return [_from_raw(b, leaf, leaf.shape) for b in vals]


def _check(vals: Any, n: int, leaf: Leaf) -> Any:
    if len(vals) != n:
        _bad(leaf, n)
    return vals


def _bad(leaf: Leaf, n: int) -> Any:
    raise DataError(f"feature '{leaf.path}': stored values do not make {n} rows of shape {leaf.shape}")
