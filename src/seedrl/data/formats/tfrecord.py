"""TFRecord framing without TensorFlow.

A TFRecord file is a plain concatenation of records, each laid out as::

    uint64  length          (little-endian)
    uint32  masked_crc32c(length bytes)
    bytes   data[length]
    uint32  masked_crc32c(data)

where ``masked_crc(x) = ((crc >> 15) | (crc << 17)) + 0xA282EAD8  (mod 2**32)``
and ``crc`` is CRC-32C (Castagnoli).  This is the format written by
``tf.io.TFRecordWriter`` (uncompressed) and read by ``tf.data.TFRecordDataset``.

The ``crc32c`` package is used when importable; otherwise a pure-Python
table-driven implementation is used (correct but slow: a few MB/s).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO
from seedrl.data.errors import DataError

__all__ = [
    "crc32c",
    "masked_crc32c",
    "unmask_crc32c",
    "encode_record",
    "write_records",
    "read_records",
    "TFRecordWriter",
    "HAVE_FAST_CRC32C",
]

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")  # length, masked crc of length
_FOOTER = struct.Struct("<I")  # masked crc of data

# --------------------------------------------------------------------------
# CRC-32C
# --------------------------------------------------------------------------


def _make_table() -> list[int]:
    poly = 0x82F63B78  # reflected Castagnoli polynomial
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE: list[int] | None = None


def _crc32c_py(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """Pure-Python CRC-32C (slow fallback)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _make_table()
    table = _TABLE
    crc = value ^ _U32
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


try:  # pragma: no cover - depends on the environment
    import crc32c as _crc32c_mod

    def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
        """CRC-32C (Castagnoli) of ``data``, continuing from ``value``."""
        return _crc32c_mod.crc32c(data, value)

    HAVE_FAST_CRC32C = True
except ImportError:  # pragma: no cover - depends on the environment
    crc32c = _crc32c_py  # type: ignore[assignment]
    crc32c.__doc__ = "CRC-32C (Castagnoli) of ``data`` (pure-Python fallback)."
    HAVE_FAST_CRC32C = False


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC-32C that TFRecord stores."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask_crc32c(masked: int) -> int:
    """Inverse of the TFRecord mask: returns the raw CRC-32C."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def encode_record(data: bytes | bytearray | memoryview) -> bytes:
    """Frame one record (header + data + footer) as bytes."""
    data = bytes(data)
    length_bytes = struct.pack("<Q", len(data))
    return b"".join(
        (
            length_bytes,
            _FOOTER.pack(masked_crc32c(length_bytes)),
            data,
            _FOOTER.pack(masked_crc32c(data)),
        )
    )


class TFRecordWriter:
    """Writes uncompressed TFRecord files.

    Usage::

        with TFRecordWriter(path) as w:
            w.write(b"...")

    ``path`` may also be an already-open binary file object, in which case it
    is not closed by :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str] | BinaryIO):
        if hasattr(path, "write"):
            self._f: BinaryIO = path  # type: ignore[assignment]
            self._owns = False
            self.path = getattr(path, "name", "<stream>")
        else:
            self.path = os.fspath(path)
            self._f = open(self.path, "wb")
            self._owns = True
        self._closed = False
        self.num_records = 0
        self.num_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError(f"TFRecordWriter for {self.path!r} is closed")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"record must be bytes-like, got {type(data).__name__}")
        rec = encode_record(data)
        self._f.write(rec)
        self.num_records += 1
        self.num_bytes += len(rec)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_records(
    path: str | os.PathLike[str] | BinaryIO, records: Iterable[bytes]
) -> int:
    """Write every record of ``records`` to ``path``; returns the count."""
    with TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
        return w.num_records


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def read_records(
    path: str | os.PathLike[str], verify: bool = True
) -> Iterator[bytes]:
    """Yield each record's data from the TFRecord file at ``path``.

    With ``verify`` (the default) both CRCs of every record are checked.
    A truncated or corrupt record raises :class:`ValueError` naming the file
    and the byte offset at which the bad record starts.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        offset = 0
        while True:
            header = f.read(_HEADER.size)
            if not header:
                return
            if len(header) < _HEADER.size:
                raise DataError(
                    f"{name}: truncated TFRecord header at byte offset {offset} "
                    f"(got {len(header)} of {_HEADER.size} bytes)"
                )
            length, length_crc = _HEADER.unpack(header)
            if verify and masked_crc32c(header[:8]) != length_crc:
                raise DataError(
                    f"{name}: corrupt TFRecord at byte offset {offset}: "
                    f"length CRC mismatch (length field {length})"
                )
            if not verify and length > (1 << 40):
                raise DataError(
                    f"{name}: implausible TFRecord length {length} at byte offset {offset}"
                )
            body = f.read(length + _FOOTER.size)
            if len(body) < length + _FOOTER.size:
                raise DataError(
                    f"{name}: truncated TFRecord at byte offset {offset}: "
                    f"expected {length} data bytes + 4 CRC bytes, got {len(body)}"
                )
            data = body[:length]
            if verify:
                (data_crc,) = _FOOTER.unpack_from(body, length)
                if masked_crc32c(data) != data_crc:
                    raise DataError(
                        f"{name}: corrupt TFRecord at byte offset {offset}: "
                        f"data CRC mismatch ({length} data bytes)"
                    )
            yield data
            offset += _HEADER.size + length + _FOOTER.size
