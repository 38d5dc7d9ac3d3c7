"""Episode metadata: lossless JSON encoding and a consistency spec.

RLDS episode metadata is a flat-or-nested dict next to ``steps``
(``episode_id``, ``agent_id``, ``environment_config``...). We keep it as JSON
so that indexes stay human-readable, with tags for what JSON cannot hold
exactly: non-finite floats (by their 64 bits, so NaN payloads survive), bytes,
tuples and numpy values (dtype, shape and raw bytes).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any, Mapping

import numpy as np

from seedrl.data.errors import SpecError

RESERVED_KEYS = ("steps",)


def encode(value: Any) -> Any:
    """Python/numpy value -> JSON-able value (inverse: :func:`decode`)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.generic):
        return value
    if isinstance(value, float) and not isinstance(value, np.generic):
        if math.isfinite(value):
            return value
        return {"__f64": struct.pack("<d", value).hex()}
    if isinstance(value, bytes):
        return {"__bytes": base64.b64encode(value).decode()}
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            if arr.dtype.kind == "U" and arr.shape == ():
                return {"__npstr": str(arr)}
            raise SpecError(f"episode metadata: cannot store numpy dtype {arr.dtype}")
        return {
            "__nd": {
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "scalar": isinstance(value, np.generic),
                "data": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode(),
            }
        }
    if isinstance(value, tuple):
        return {"__tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str) or k.startswith("__"):
                raise SpecError(f"episode metadata: key {k!r} must be a str not starting with '__'")
        return {k: encode(v) for k, v in value.items()}
    raise SpecError(f"episode metadata: cannot store a {type(value).__name__} ({value!r:.60})")


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__f64" in value:
        return struct.unpack("<d", bytes.fromhex(value["__f64"]))[0]
    if "__bytes" in value:
        return base64.b64decode(value["__bytes"])
    if "__npstr" in value:
        return np.str_(value["__npstr"])
    if "__tuple" in value:
        return tuple(decode(v) for v in value["__tuple"])
    if "__nd" in value:
        nd = value["__nd"]
        arr = np.frombuffer(base64.b64decode(nd["data"]), dtype=np.dtype(nd["dtype"])).reshape(nd["shape"]).copy()
        return arr[()] if nd["scalar"] else arr
    return {k: decode(v) for k, v in value.items()}


def dumps(metadata: Mapping[str, Any]) -> str:
    return json.dumps(encode(dict(metadata)), separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes) -> dict[str, Any]:
    return decode(json.loads(text))


def kind_of(value: Any) -> str:
    """A short type descriptor used to keep metadata consistent across episodes."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        return f"{arr.dtype.name}{list(arr.shape)}" if isinstance(value, np.ndarray) else arr.dtype.name
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{kind_of(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return type(value).__name__
    return type(value).__name__


def metadata_spec(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Key -> kind descriptor, as stored in ``dataset.json``."""
    return {k: kind_of(v) for k, v in metadata.items()}


def check_metadata(metadata: Mapping[str, Any], spec: Mapping[str, str] | None) -> None:
    """Raise naming the key if ``metadata`` does not match the dataset's metadata spec.

    ``episode_id`` may be given or not on each episode (a missing one is assigned).
    """
    for key in metadata:
        if key in RESERVED_KEYS:
            raise SpecError(f"episode metadata key '{key}' is reserved by RLDS")
    if spec is None:
        return
    mine = metadata_spec({k: v for k, v in metadata.items() if k != "episode_id"})
    theirs = {k: v for k, v in spec.items() if k != "episode_id"}
    for key in sorted(set(mine) | set(theirs)):
        if key not in theirs:
            raise SpecError(f"episode metadata key '{key}' is not in this dataset's metadata {sorted(theirs)}")
        if key not in mine:
            raise SpecError(f"episode metadata key '{key}' is missing (this dataset has {sorted(theirs)})")
        if mine[key] != theirs[key] and "none" not in (mine[key], theirs[key]):
            raise SpecError(
                f"episode metadata '{key}' changed type within the dataset: expected {theirs[key]}, "
                f"got {mine[key]} ({metadata[key]!r:.60})"
            )
