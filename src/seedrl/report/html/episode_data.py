"""What the episode browser shows, computed in Python from an RLDS dataset (:class:`seedrl.data.Dataset`).

* **Summaries** (:func:`summaries`): one small dict per episode, for the list that is sorted,
  filtered and searched in the page: ``{"id", "index", "steps", "return", "kind", "text", "meta"}``.
  ``return`` is the episode's undiscounted return Σ_t r_t (a language episode's reward, summed over
  its turns); ``text`` the first :data:`TEXT_CHARS` characters of each prompt and completion (what the
  search box matches). At most ``limit`` episodes (the first ones) are summarised; the page says how
  many the dataset holds.
* **Details** (:func:`episode_detail`): everything needed to draw one episode.

  - *game* episodes: per step the action (each action field: a number or a list) and the reward; image
    observations (uint8 ``(H, W)``, ``(H, W, C)`` with C in 1..4, or stacked frames ``(F, H, W)`` of
    which the last is drawn) as PNG data URIs; other numeric observations of at most
    :data:`MAX_VECTOR` numbers per step as rows of numbers (larger ones are left out).
    Frames are kept for at most ``max_frames`` evenly spaced steps (``frame_steps``); the scrubber
    shows, at step t, the frame of the last kept step ≤ t. Encoded (PNG / JPEG) fields are not
    re-encoded: their stored bytes are the data URI.
  - *language* episodes (prompt / completion steps of :mod:`seedrl.envs.text.steps`): per turn the
    prompt, completion, reward, completion token ids and their log-probabilities (the first of
    :data:`LOGPROB_FIELDS` the dataset holds). Token labels: without a tokenizer in the store, a
    completion whose character count equals its token count is labelled character by character
    (the toy worlds' character tokenizers), otherwise each span shows the token id.

Numbers are rounded to 6 significant digits; NaN and infinities become ``null`` on the page.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from seedrl.data.images import encode_png

TEXT_CHARS = 200
LOGPROB_FIELDS = ("behaviour_logprobs", "logprobs", "sampling_logprobs", "token_logprobs")
PROMPT, COMPLETION = "observation/prompt", "action/completion"
COMPLETION_TOKENS = "action/completion_tokens"
MIME = {"png": "image/png", "jpeg": "image/jpeg"}
MIN_SIDE = 8  # smaller uint8 arrays are vectors, not frames
MAX_VECTOR = 64  # numbers per step of an observation shown as a vector (larger non-image fields are left out)


def _num(v: Any) -> Any:
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else None


def _nums(a: Any) -> Any:
    """A number or (nested) list of numbers, rounded; bools stay bools."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr.tolist()
    if arr.ndim == 0:
        return _num(arr)
    return [_nums(x) for x in arr]


def is_language(spec) -> bool:
    return spec is not None and PROMPT in spec.paths and COMPLETION in spec.paths


def image_fields(spec) -> list:
    """Observation fields drawn as frames: encoded images, uint8 (H, W), (H, W, C≤4) or stacked (F, H, W)."""
    out = []
    for f in spec.fields:
        if not f.path.startswith("observation") or f.is_text:
            continue
        if f.is_encoded and len(f.shape) == 3:
            out.append(f)
        elif f.dtype == "uint8" and len(f.shape) in (2, 3) and min(d or 0 for d in _height_width(f.shape)) >= MIN_SIDE:
            out.append(f)
    return out


def _height_width(shape: tuple) -> tuple:
    if len(shape) == 3 and shape[-1] not in (1, 2, 3, 4):
        return shape[1:]  # stacked frames (F, H, W)
    return shape[:2]


def vector_fields(spec) -> list:
    """Numeric observation fields that are not frames and hold at most :data:`MAX_VECTOR` numbers per step
    (drawn as rows of numbers and a plot over steps)."""
    frames = {f.path for f in image_fields(spec)}
    return [f for f in spec.fields
            if f.path.startswith("observation") and not f.is_text and f.path not in frames and not f.is_encoded
            and f.is_fixed and int(np.prod(f.shape, dtype=np.int64)) <= MAX_VECTOR]


def to_hwc(frame: np.ndarray) -> np.ndarray:
    """A uint8 frame as (H, W, C) with C in 1..4: (H, W) -> one channel; (F, H, W) stacked frames -> the last."""
    a = np.asarray(frame, np.uint8)
    if a.ndim == 2:
        return a[..., None]
    if a.shape[-1] in (1, 2, 3, 4):
        return a
    return a[-1][..., None]


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


def frame_steps(n: int, max_frames: int) -> list[int]:
    """At most ``max_frames`` evenly spaced steps of ``0..n-1``, always with step 0 (all of them if n ≤ max_frames)."""
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_frames)})


def _frames(field, column, steps: list[int]) -> list[str]:
    if field.is_encoded:
        mime = MIME[field.encoding]
        return [data_uri(bytes(column.encoded[t]), mime) for t in steps]
    return [data_uri(encode_png(to_hwc(column[t]))) for t in steps]


def _texts(column: Any) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in column]


def _logprobs(ep) -> tuple[str | None, list]:
    for name in LOGPROB_FIELDS:
        if name in ep.columns:
            return name, list(ep.columns[name])
    return None, [None] * len(ep)


def token_labels(completion: str, tokens: list[int]) -> list[str]:
    """Labels of the heat map's spans: the characters when there is one per token, else ``#id``."""
    if len(completion) == len(tokens):
        return list(completion)
    return [f"#{t}" for t in tokens]


def episode_return(ep) -> float:
    return float(np.nansum(np.asarray(ep.columns["reward"], np.float64)))


def game_detail(ep, max_frames: int = 400) -> dict:
    n = len(ep)
    keep = frame_steps(n, max_frames)
    spec = ep.spec
    return {
        "kind": "game", "steps": n, "return": _num(episode_return(ep)),
        "reward": _nums(ep.columns["reward"]),
        "action": {f.path: [_nums(a) for a in ep.columns[f.path]]
                   for f in spec.fields if f.path.startswith("action") and not f.is_text and not f.is_encoded},
        "is_terminal": bool(np.asarray(ep.columns["is_terminal"])[-1]) if n else False,
        "frame_steps": keep,
        "frames": {f.path: _frames(f, ep.columns[f.path], keep) for f in image_fields(spec)},
        "vectors": {f.path: [_nums(v) for v in ep.columns[f.path]] for f in vector_fields(spec)},
    }


def language_detail(ep) -> dict:
    prompts, completions = _texts(ep.columns[PROMPT]), _texts(ep.columns[COMPLETION])
    tokens = ep.columns.get(COMPLETION_TOKENS, [[]] * len(ep))
    source, logprobs = _logprobs(ep)
    turns = []
    for t in range(len(ep)):
        toks = [int(x) for x in np.asarray(tokens[t]).ravel()]
        lp = None if logprobs[t] is None else _nums(np.asarray(logprobs[t], np.float64).ravel())
        turns.append({"prompt": prompts[t], "completion": completions[t], "reward": _num(ep.columns["reward"][t]),
                      "tokens": toks, "labels": token_labels(completions[t], toks), "logprobs": lp})
    return {"kind": "language", "steps": len(ep), "return": _num(episode_return(ep)), "logprob_field": source,
            "turns": turns}


def episode_detail(ep, index: int, max_frames: int = 400) -> dict:
    """The page's detail of one episode (see the module doc), with its ``id`` and ``index``."""
    body = language_detail(ep) if is_language(ep.spec) else game_detail(ep, max_frames)
    return {"id": str(ep.episode_id if ep.episode_id is not None else index), "index": index, **body}


def _meta(metadata: dict) -> dict:
    return {str(k): v for k, v in metadata.items()
            if isinstance(v, (str, int, float, bool)) and k != "episode_id" and len(str(v)) <= 80}


def summaries(ds, limit: int = 10_000, start: int = 0) -> list[dict]:
    """One summary per episode of ``ds`` from index ``start`` to ``limit`` (exclusive); reads only rewards
    (and texts for language)."""
    if ds.spec is None or not len(ds):
        return []
    language = is_language(ds.spec)
    view = ds.select(["reward", PROMPT, COMPLETION] if language else ["reward"])
    out = []
    for i, entry in enumerate(ds.entries[start:limit], start):
        ep = view[i]
        text = ""
        if language:
            text = "\n".join(p[:TEXT_CHARS] + "\n" + c[:TEXT_CHARS]
                             for p, c in zip(_texts(ep.columns[PROMPT]), _texts(ep.columns[COMPLETION])))
        out.append({"id": str(entry.episode_id if entry.episode_id is not None else i), "index": i,
                    "steps": int(entry.num_steps), "return": _num(episode_return(ep)),
                    "kind": "language" if language else "game", "text": text, "meta": _meta(entry.metadata)})
    return out
