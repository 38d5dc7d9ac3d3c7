"""Encoded-image fields: PNG / JPEG bytes in the store, uint8 arrays on read.

A field with ``encoding="png"`` or ``"jpeg"`` (``FieldSpec(path, "uint8",
(H, W, C), encoding="png")``, or ``spec.with_images({path: "png"})``) keeps
one encoded image per step in an Arrow ``large_binary`` column. ``H`` and
``W`` may vary (``None``); ``C`` is fixed: 1 (L), 2 (LA, PNG only), 3 (RGB)
or 4 (RGBA, PNG only). A video field, shape ``(T, H, W, C)`` (``T`` may vary),
keeps a list of encoded frames per step (``large_list<large_binary>``); a
step dict gives them as a 1-D object array (a list would be a tree node).

Writing takes either the encoded bytes (kept as they are, byte for byte,
after a header check of format and size) or a uint8 array, which a PNG field
encodes losslessly. A JPEG field refuses arrays: JPEG encoding is lossy, and
the store never alters a value silently; hand it the JPEG bytes.

Reading gives an :class:`EncodedImages` column: it holds the bytes and
decodes a row only when asked (``col[i]``, iteration, ``np.asarray(col)``),
so selecting other fields or slicing a few steps decodes nothing else. Its
``encoded`` attribute is the bytes; writing such a column into a field of the
same encoding copies the bytes (a JPEG dataset copies byte-identically).

PNG decode is lossless: ``decode(encode_png(a)) == a`` bit for bit. JPEG
decoding is not unique (libjpeg offers several IDCTs and upsamplers); the
store decodes as TF's ``decode_jpeg`` does by default, and so as tfds
loaders do: libjpeg-turbo's fast integer IDCT (``JDCT_IFAST``) with fancy
upsampling, through ``simplejpeg`` (``fastdct=True, fastupsample=False``),
bit-exact with TF (checked in tests/compat). Without ``simplejpeg`` installed
Pillow decodes with the accurate IDCT (``JDCT_ISLOW``), which differs from
TF's by a few levels per pixel, and a warning says so once.

Raw uint8 fields stay the default everywhere images are inferred (recordings,
``StepSpec.infer``): no codec on the write path. TFDS imports keep an
``Image`` feature encoded (so that export writes the same bytes).
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Iterator, Sequence

import numpy as np

from seedrl.data.errors import DataError, SpecError

FORMATS = ("png", "jpeg")
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_CHANNELS = {mode: c for c, mode in _MODES.items()}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG"}


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow ships with the images extra
        raise DataError("encoded-image fields need Pillow: pip install 'seedrl[images]'") from None
    return Image


def check_layout(path: str, encoding: str, dtype: str, shape: tuple) -> None:
    """Raise :class:`SpecError` naming the field unless it is a valid encoded-image field."""
    if encoding not in FORMATS:
        raise SpecError(f"field '{path}': encoding must be one of {list(FORMATS)}, got {encoding!r}")
    if dtype != "uint8" or len(shape) not in (3, 4) or shape[-1] is None or shape[-1] not in _MODES:
        raise SpecError(f"field '{path}': {encoding} images are uint8 (H, W, C) (or (T, H, W, C) videos) "
                        f"with C in 1..4, got {dtype} {shape}")
    if encoding == "jpeg" and shape[-1] not in (1, 3):
        raise SpecError(f"field '{path}': jpeg holds 1 or 3 channels, got shape {shape}")


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """Lossless PNG bytes of a uint8 ``(H, W, C)`` array (C in 1..4); ``compress_level`` 0..9 trades size for
    speed (6: zlib's default; 1 encodes a 600x400 frame about 3x faster, for frames shown once)."""
    a = np.ascontiguousarray(image)
    buf = io.BytesIO()
    _pil().fromarray(a[..., 0] if a.shape[2] == 1 else a, _MODES[a.shape[2]]).save(
        buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def header(data: bytes) -> tuple[str, tuple[int, int, int]]:
    """``(format, (H, W, C))`` of encoded image bytes, from the header only."""
    try:
        img = _pil().open(io.BytesIO(data))
    except Exception as e:  # PIL raises UnidentifiedImageError and friends
        raise DataError(f"not a PNG or JPEG image ({type(e).__name__}: {data[:16]!r})") from None
    fmt = {"PNG": "png", "JPEG": "jpeg"}.get(img.format or "")
    if fmt is None or img.mode not in _CHANNELS:
        raise DataError(f"a {img.format} image of mode {img.mode}; only PNG/JPEG of mode L, LA, RGB, RGBA are held")
    w, h = img.size
    return fmt, (h, w, _CHANNELS[img.mode])


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        warnings.warn("simplejpeg is not installed: JPEG images decode with Pillow's accurate IDCT, which differs "
                      "from TF / tfds's by a few levels per pixel (pip install 'seedrl[images]')", stacklevel=3)
        return None
    return simplejpeg


def decode(data: bytes) -> np.ndarray:
    """Encoded PNG / JPEG bytes -> uint8 ``(H, W, C)`` (JPEG: as TF decodes it, see the module doc)."""
    if data[:2] == b"\xff\xd8" and (sj := _simplejpeg()) is not None:
        h, w, colorspace, _ = sj.decode_jpeg_header(data)
        gray = colorspace.upper() == "GRAY"
        out = sj.decode_jpeg(data, colorspace="GRAY" if gray else "RGB", fastdct=True, fastupsample=False)
        return out.reshape(h, w, 1 if gray else 3)
    img = _pil().open(io.BytesIO(data))
    a = np.asarray(img)
    return a.reshape(*a.shape[:2], _CHANNELS[img.mode]) if img.mode in _CHANNELS else a


def check_value(path: str, encoding: str, shape: tuple, value: Any) -> bytes | list[bytes]:
    """One step's value for an encoded-image field -> its encoded bytes (a list of them for a video),
    or raise naming the field."""
    if len(shape) == 4:
        is_list = isinstance(value, (list, tuple)) or isinstance(value, np.ndarray) and value.dtype == object
        frames = list(value) if is_list or np.ndim(value) == 4 else None
        if frames is None or shape[0] is not None and len(frames) != shape[0]:
            raise SpecError(f"field '{path}': expected {shape} frames (a list of encoded frames or a uint8 "
                            f"array), got {type(value).__name__} of shape {np.shape(value) if frames is None else len(frames)}")
        return [check_value(path, encoding, shape[1:], f) for f in frames]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            fmt, got = header(bytes(value))
        except DataError as e:
            raise SpecError(f"field '{path}': {e}") from None
        if fmt != encoding:
            raise SpecError(f"field '{path}': got {fmt} bytes for a {encoding} field")
        if any(d is not None and d != g for d, g in zip(shape, got)):
            raise SpecError(f"field '{path}': image of shape {got}, the field holds {shape}")
        return bytes(value)
    arr = np.asarray(value)
    if encoding == "jpeg":
        raise SpecError(f"field '{path}': a jpeg field takes JPEG bytes, got a {arr.dtype} array "
                        "(encoding to JPEG is lossy; use a png field to store arrays losslessly)")
    if arr.dtype != np.uint8 or arr.ndim != 3 or any(d is not None and d != s for d, s in zip(shape, arr.shape)):
        raise SpecError(f"field '{path}': expected uint8 {shape} or PNG bytes, got {arr.dtype} {arr.shape}")
    return encode_png(arr)


def decode_row(row: bytes | Sequence[bytes], shape: tuple) -> np.ndarray:
    """One step of an encoded field: an image ``(H, W, C)`` or, for a video, its frames stacked."""
    if len(shape) == 3:
        return decode(row)
    frames = [decode(b) for b in row]
    return np.stack(frames) if frames else np.zeros((0, *(d or 0 for d in shape[1:])), np.uint8)


class EncodedImages:
    """A column of encoded images (or videos) that decodes rows when they are read.

    ``col[i]`` is a uint8 ``(H, W, C)`` array (``(T, H, W, C)`` for a video),
    ``col[a:b]`` another lazy column, ``np.asarray(col)`` the decoded
    ``[n, H, W, C]`` stack (an object column of arrays when a dim varies),
    ``col.encoded`` the bytes (lists of frame bytes for a video).
    """

    def __init__(self, encoded: Sequence[Any], encoding: str, shape: tuple):
        self.encoded = np.empty(len(encoded), dtype=object)
        for i, row in enumerate(encoded):  # a list of lists would broadcast
            self.encoded[i] = row
        self.encoding = encoding
        self.image_shape = tuple(shape)
        fixed = None not in self.image_shape
        self.dtype = np.dtype(np.uint8) if fixed else np.dtype(object)
        self.shape = (len(self.encoded), *self.image_shape) if fixed else (len(self.encoded),)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return EncodedImages(self.encoded[index], self.encoding, self.image_shape)
        if isinstance(index, (int, np.integer)):
            return decode_row(self.encoded[index], self.image_shape)
        return np.asarray(self)[index]

    def __iter__(self) -> Iterator[np.ndarray]:
        for row in self.encoded:
            yield decode_row(row, self.image_shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = list(self)
        if self.dtype == object:
            out = np.empty(len(frames), dtype=object)
            for i, f in enumerate(frames):  # assigning a list of equal-shape arrays would broadcast
                out[i] = f
        else:
            out = np.stack(frames) if frames else np.zeros(self.shape, np.uint8)
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"EncodedImages({len(self)} x {self.encoding} {self.image_shape})"


def encoded_column(path: str, encoding: str, shape: tuple, column: Any) -> list[bytes]:
    """Any column for an encoded-image field -> checked encoded bytes per step.

    The bytes of an :class:`EncodedImages` column of the same encoding are
    kept as they are (header checked, no decode, no re-encode); arrays
    ``[n, H, W, C]``, lists of arrays or of bytes go through
    :func:`check_value` row by row.
    """
    if isinstance(column, EncodedImages):
        # same encoding: its bytes; else decode, then re-encode (png) or refuse (jpeg)
        column = column.encoded if column.encoding == encoding else list(column)
    return [check_value(path, encoding, shape, v) for v in column]
