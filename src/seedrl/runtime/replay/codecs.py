"""Byte codecs for stored frame chunks: ``none``, ``zlib`` (level 1, standard library), ``lz4`` (optional).

A chunk is the frames one insert adds to one stream, compressed as one blob so
the codec sees the redundancy between neighbouring frames. ``lz4`` needs the
``lz4`` package (extra ``atari``); asking for it without the package is a
one-line error.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["CODECS", "Codec", "get_codec"]

CODECS = ("none", "zlib", "lz4")


class Codec:
    """Packs an array into a blob and back (the blob of ``none`` is the array itself)."""

    def __init__(self, name: str):
        if name not in CODECS:
            raise ValueError(f"compression must be one of {', '.join(CODECS)}, got {name!r}")
        self.name = name
        if name == "lz4":
            try:
                import lz4.block  # noqa: F401
            except ImportError as e:
                raise ValueError("compression 'lz4' needs the lz4 package: pip install 'seedrl[atari]' (or use 'zlib')") from e

    def pack(self, frames: np.ndarray):
        if self.name == "none":
            return np.ascontiguousarray(frames)
        raw = np.ascontiguousarray(frames).tobytes()
        if self.name == "zlib":
            return zlib.compress(raw, 1)
        import lz4.block

        return lz4.block.compress(raw, store_size=True)

    def unpack(self, blob, shape: tuple, dtype: np.dtype) -> np.ndarray:
        if self.name == "none":
            return blob
        if self.name == "zlib":
            raw = zlib.decompress(blob)
        else:
            import lz4.block

            raw = lz4.block.decompress(blob)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    @staticmethod
    def nbytes(blob) -> int:
        return blob.nbytes if isinstance(blob, np.ndarray) else len(blob)


def get_codec(name: str) -> Codec:
    return Codec(name)
