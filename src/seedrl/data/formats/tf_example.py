"""``tf.train.Example`` protobuf wire format, hand-written (no TensorFlow).

Schema (from ``tensorflow/core/example/{example,feature}.proto``)::

    message Example  { Features features = 1; }
    message Features { map<string, Feature> feature = 1; }
    message Feature  { oneof kind { BytesList bytes_list = 1;
                                    FloatList float_list = 2;
                                    Int64List int64_list = 3; } }
    message BytesList { repeated bytes value = 1; }
    message FloatList { repeated float value = 1 [packed = true]; }
    message Int64List { repeated int64 value = 1 [packed = true]; }

A map entry is encoded as a message ``{string key = 1; Feature value = 2;}``.

API
---
``encode_example(features) -> bytes``
    ``features`` maps a name to ``(kind, values)`` with kind one of
    ``"bytes"``, ``"float"``, ``"int64"``.  Values may be a list, a numpy
    array (any shape; flattened in C order) or a scalar.  Floats are stored
    as float32, ints as int64.  Keys are written in sorted order, which gives
    the same bytes as TensorFlow's ``SerializeToString(deterministic=True)``.

``decode_example(data) -> dict[str, (kind, values)]``
    floats come back as ``np.ndarray[float32]``, ints as ``np.ndarray[int64]``,
    bytes as ``list[bytes]``.  A feature whose ``kind`` oneof is unset decodes
    as ``(None, [])``.  Both packed and unpacked repeated encodings are
    accepted, and unknown fields are skipped, as a protobuf parser would.
    Malformed input raises :class:`ValueError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from seedrl.data.errors import DataError

__all__ = [
    "KINDS",
    "encode_example",
    "decode_example",
    "encode_feature",
    "decode_feature",
    "encode_varint",
    "decode_varint",
]

KINDS = ("bytes", "float", "int64")
_KIND_FIELD = {"bytes": 1, "float": 2, "int64": 3}
_FIELD_KIND = {1: "bytes", 2: "float", 3: "int64"}

_U64 = (1 << 64) - 1

# Wire types.
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

_SHIFTS10 = (7 * np.arange(10, dtype=np.uint64)).astype(np.uint64)
_COL10 = np.arange(10)


# --------------------------------------------------------------------------
# Varints
# --------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Encode one int as a protobuf varint (negatives as 10-byte two's complement)."""
    value &= _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode one unsigned varint at ``buf[pos:]``; returns ``(value, new_pos)``.

    The value is truncated to 64 bits, as protobuf parsers do.
    """
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _encode_varints_np(values: np.ndarray) -> bytes:
    """Vectorised packed varint encoding of an int64 array."""
    u = values.astype(np.int64, copy=False).view(np.uint64)
    n = u.shape[0]
    if n == 0:
        return b""
    if not (u >> np.uint64(7)).any():  # all in [0, 127]
        return u.astype(np.uint8).tobytes()
    nbytes = np.ones(n, dtype=np.int64)
    for k in range(1, 10):
        nbytes += (u >> np.uint64(7 * k)) != 0
    groups = ((u[:, None] >> _SHIFTS10[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    cont = _COL10[None, :] < (nbytes - 1)[:, None]
    groups |= cont.astype(np.uint8) << np.uint8(7)
    keep = _COL10[None, :] < nbytes[:, None]
    return groups[keep].tobytes()


def _decode_varints_np(buf: bytes, start: int, end: int) -> np.ndarray:
    """Vectorised decoding of the packed varints in ``buf[start:end]`` -> int64."""
    n = end - start
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    arr = np.frombuffer(buf, dtype=np.uint8, count=n, offset=start)
    term = arr < 0x80
    if term.all():
        return arr.astype(np.int64)
    if not term[-1]:
        raise ValueError("truncated varint in packed int64 list")
    ends = np.flatnonzero(term)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise ValueError("varint longer than 10 bytes in packed int64 list")
    group = np.repeat(np.arange(ends.shape[0]), lengths)
    shift = (7 * (np.arange(n) - starts[group])).astype(np.uint64)
    payload = (arr & 0x7F).astype(np.uint64) << shift
    return np.add.reduceat(payload, starts).view(np.int64)


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, np.bytes_):
        return bytes(v)
    if isinstance(v, np.str_):
        return str(v).encode("utf-8")
    raise TypeError(f"bytes feature value must be bytes or str, got {type(v).__name__}")


def _bytes_values(values: Any) -> list[bytes]:
    if isinstance(values, (bytes, bytearray, memoryview, str, np.bytes_, np.str_)):
        return [_as_bytes(values)]
    if isinstance(values, np.ndarray):
        return [_as_bytes(v) for v in values.reshape(-1).tolist()]
    return [_as_bytes(v) for v in values]


def _float_values(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub" and arr.size:
        raise TypeError(f"float feature values must be numeric, got dtype {arr.dtype}")
    return arr.astype("<f4", copy=False).reshape(-1)


def _int64_values(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.uint64:  # also what np.asarray makes of Python ints >= 2**63
        if (arr > np.uint64(2**63 - 1)).any():
            raise OverflowError("int64 feature value out of range [-2**63, 2**63)")
        return arr.astype(np.int64).reshape(-1)
    if arr.dtype.kind == "O":
        arr = np.array([int(v) for v in arr.reshape(-1)], dtype=np.int64)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"int64 feature values must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False).reshape(-1)


def encode_feature(kind: str, values: Any) -> bytes:
    """Serialize one ``tf.train.Feature`` message."""
    if kind == "bytes":
        inner = b"".join(_len_field(0x0A, b) for b in _bytes_values(values))
    elif kind == "float":
        arr = _float_values(values)
        inner = _len_field(0x0A, arr.tobytes()) if arr.size else b""
    elif kind == "int64":
        arr = _int64_values(values)
        inner = _len_field(0x0A, _encode_varints_np(arr)) if arr.size else b""
    else:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {KINDS}")
    return _len_field(_KIND_FIELD[kind] << 3 | _LEN, inner)


def encode_example(features: Mapping[str, tuple[str, Any]]) -> bytes:
    """Serialize a ``tf.train.Example`` from ``{name: (kind, values)}``."""
    entries = []
    for key in sorted(features):
        spec = features[key]
        try:
            kind, values = spec
        except (TypeError, ValueError):
            raise TypeError(
                f"feature {key!r}: expected a (kind, values) pair, got {type(spec).__name__}"
            ) from None
        kb = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        entry = _len_field(0x0A, kb) + _len_field(0x12, encode_feature(kind, values))
        entries.append(_len_field(0x0A, entry))
    return _len_field(0x0A, b"".join(entries))


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _read_len(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    n, pos = decode_varint(buf, pos)
    if n > end - pos:
        raise ValueError(
            f"length-delimited field of {n} bytes overruns its message at offset {pos}"
        )
    return pos, pos + n


def _skip(buf: bytes, pos: int, end: int, wire_type: int) -> int:
    if wire_type == _VARINT:
        _, pos = decode_varint(buf, pos)
        if pos > end:
            raise ValueError("truncated varint")
        return pos
    if wire_type == _I64:
        pos += 8
    elif wire_type == _I32:
        pos += 4
    elif wire_type == _LEN:
        _, pos = _read_len(buf, pos, end)
    else:
        raise ValueError(f"unsupported wire type {wire_type}")
    if pos > end:
        raise ValueError("truncated fixed-width field")
    return pos


def _tag(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    tag, pos = decode_varint(buf, pos)
    if pos > end:
        raise ValueError("truncated tag")
    field = tag >> 3
    if field == 0:
        raise ValueError("invalid field number 0")
    return field, tag & 7, pos


def _parse_bytes_list(buf: bytes, pos: int, end: int, out: list[bytes]) -> None:
    while pos < end:
        field, wt, pos = _tag(buf, pos, end)
        if field == 1 and wt == _LEN:
            s, pos = _read_len(buf, pos, end)
            out.append(buf[s:pos])
        else:
            pos = _skip(buf, pos, end, wt)


def _parse_float_list(buf: bytes, pos: int, end: int, chunks: list[np.ndarray]) -> None:
    while pos < end:
        field, wt, pos = _tag(buf, pos, end)
        if field == 1 and wt == _LEN:  # packed
            s, pos = _read_len(buf, pos, end)
            if (pos - s) % 4:
                raise ValueError("packed float list length is not a multiple of 4")
            chunks.append(np.frombuffer(buf, dtype="<f4", count=(pos - s) // 4, offset=s))
        elif field == 1 and wt == _I32:  # unpacked
            if pos + 4 > end:
                raise ValueError("truncated float value")
            chunks.append(np.frombuffer(buf, dtype="<f4", count=1, offset=pos))
            pos += 4
        else:
            pos = _skip(buf, pos, end, wt)


def _parse_int64_list(buf: bytes, pos: int, end: int, chunks: list[np.ndarray]) -> None:
    pending: list[int] = []
    while pos < end:
        field, wt, pos = _tag(buf, pos, end)
        if field == 1 and wt == _LEN:  # packed
            s, pos = _read_len(buf, pos, end)
            if pending:
                chunks.append(np.array(pending, dtype=np.uint64).view(np.int64))
                pending = []
            chunks.append(_decode_varints_np(buf, s, pos))
        elif field == 1 and wt == _VARINT:  # unpacked
            v, pos = decode_varint(buf, pos)
            if pos > end:
                raise ValueError("truncated int64 value")
            pending.append(v)
        else:
            pos = _skip(buf, pos, end, wt)
    if pending:
        chunks.append(np.array(pending, dtype=np.uint64).view(np.int64))


def _parse_feature(buf: bytes, pos: int, end: int) -> tuple[str | None, list]:
    kind: str | None = None
    acc: list = []
    while pos < end:
        field, wt, pos = _tag(buf, pos, end)
        if field in _FIELD_KIND and wt == _LEN:
            s, pos = _read_len(buf, pos, end)
            new_kind = _FIELD_KIND[field]
            if new_kind != kind:  # oneof: a different member replaces the old one
                kind, acc = new_kind, []
            # the same member seen again merges (repeated fields concatenate)
            if field == 1:
                _parse_bytes_list(buf, s, pos, acc)
            elif field == 2:
                _parse_float_list(buf, s, pos, acc)
            else:
                _parse_int64_list(buf, s, pos, acc)
        else:
            pos = _skip(buf, pos, end, wt)
    return kind, acc


def _finish(kind: str | None, acc: list):
    if kind == "float":
        if not acc:
            return kind, np.zeros(0, dtype=np.float32)
        return kind, np.concatenate(acc).astype(np.float32)  # copy: owned, native order
    if kind == "int64":
        if not acc:
            return kind, np.zeros(0, dtype=np.int64)
        return kind, np.concatenate(acc).astype(np.int64)
    return kind, acc


def decode_feature(data: bytes) -> tuple[str | None, np.ndarray | list[bytes]]:
    """Parse one serialized ``tf.train.Feature``."""
    data = bytes(data)
    return _finish(*_parse_feature(data, 0, len(data)))


def _parse_map_entry(buf: bytes, pos: int, end: int) -> tuple[str, tuple]:
    key = b""
    kind: str | None = None
    acc: list = []
    while pos < end:
        field, wt, pos = _tag(buf, pos, end)
        if field == 1 and wt == _LEN:
            s, pos = _read_len(buf, pos, end)
            key = buf[s:pos]
        elif field == 2 and wt == _LEN:
            s, pos = _read_len(buf, pos, end)
            k2, acc2 = _parse_feature(buf, s, pos)
            # a repeated submessage field merges into the previous one
            if k2 is not None:
                if k2 != kind:
                    kind, acc = k2, acc2
                else:
                    acc.extend(acc2)
        else:
            pos = _skip(buf, pos, end, wt)
    try:
        skey = key.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"feature key is not valid UTF-8: {key!r}") from e
    return skey, _finish(kind, acc)


def decode_example(data: bytes | bytearray | memoryview) -> dict[str, tuple]:
    """Parse a serialized ``tf.train.Example`` into ``{name: (kind, values)}``."""
    buf = bytes(data)
    end = len(buf)
    out: dict[str, tuple] = {}
    pos = 0
    try:
        while pos < end:
            field, wt, pos = _tag(buf, pos, end)
            if field == 1 and wt == _LEN:  # Features (repeated occurrences merge)
                fs, fe = _read_len(buf, pos, end)
                pos = fe
                while fs < fe:
                    f2, wt2, fs = _tag(buf, fs, fe)
                    if f2 == 1 and wt2 == _LEN:
                        s, fs = _read_len(buf, fs, fe)
                        key, value = _parse_map_entry(buf, s, fs)
                        out[key] = value  # map semantics: last entry wins
                    else:
                        fs = _skip(buf, fs, fe, wt2)
            else:
                pos = _skip(buf, pos, end, wt)
    except ValueError as e:
        raise DataError(f"malformed tf.train.Example: {e}") from None
    return out
