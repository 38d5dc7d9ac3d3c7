"""The images rows of benchmarks/data_store.py: camera frames stored raw vs encoded.

The same episodes of ``--image-size`` square RGB camera-like frames
(smooth moving gradients plus sensor noise: they compress the way camera
images do, unlike the random Atari frames of the main table) are written
three ways: a raw uint8 ``(H, W, 3)`` field (the store's default), a PNG
field fed the arrays (the write pays the PNG encoding) and a JPEG field fed
JPEG bytes encoded beforehand, untimed (as a TFDS import gets them).

Measured, medians of ``--repeats``: bytes on disk (segment files), write
steps/s, and full-read steps/s where reading decodes every frame of every
episode (``np.asarray(column)``) and sums its pixels. Raw and PNG checksums
must agree (PNG is lossless); JPEG's differ (lossy, it is not compared).
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np

from seedrl.data import DatasetWriter, FieldSpec, StepSpec, open_dataset


def camera_episode(i: int, steps: int, size: int, seed: int) -> dict:
    """Flat columns of episode ``i``: frames ``[steps, size, size, 3]`` uint8 and the RLDS scalars."""
    rng = np.random.default_rng([seed, i, 1])
    y, x = np.mgrid[0:size, 0:size] / size
    t = np.arange(steps)[:, None, None, None] / 10
    phase = rng.uniform(0, 6.3, 3)
    base = 0.5 + 0.4 * np.sin(6 * (x[None, ..., None] + y[None, ..., None] * phase) + t + phase)
    noise = rng.normal(0, 0.02, (steps, size, size, 3))
    frames = np.clip((base + noise) * 255, 0, 255).astype(np.uint8)
    flags = np.zeros(steps, bool)
    first, last = flags.copy(), flags.copy()
    first[0] = last[-1] = True
    return {"observation": frames, "action": np.zeros(steps, np.int64), "reward": np.zeros(steps, np.float32),
            "discount": np.ones(steps, np.float32), "is_first": first, "is_last": last, "is_terminal": flags.copy()}


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _spec(size: int, encoding: str | None) -> StepSpec:
    base = StepSpec.infer({k: v[0] for k, v in camera_episode(0, 1, size, 0).items()})
    obs = FieldSpec("observation", "uint8", (size, size, 3), encoding)
    return StepSpec(base.treedef, tuple(obs if f.path == "observation" else f for f in base.fields))


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure_images(episodes: int, steps: int, size: int, repeats: int, seed: int, work: Path) -> list[dict]:
    data = [camera_episode(i, steps, size, seed) for i in range(episodes)]
    jpeg = [{**ep, "observation": [_jpeg(f) for f in ep["observation"]]} for ep in data]
    variants = {"raw uint8": (None, data), "png (encoded on write)": ("png", data), "jpeg q90 (bytes given)": ("jpeg", jpeg)}
    total = episodes * steps
    results = []
    for name, (encoding, eps) in variants.items():
        spec, folder = _spec(size, encoding), work / f"images-{encoding}"
        writes, reads, checksum = [], [], 0
        for _ in range(repeats):
            shutil.rmtree(folder, ignore_errors=True)
            t = time.perf_counter()
            with DatasetWriter(folder, spec) as w:
                for ep in eps:
                    w.write_episode(ep)
            writes.append(time.perf_counter() - t)
            t = time.perf_counter()
            checksum = sum(int(np.asarray(ep.columns["observation"]).sum(dtype=np.int64)) for ep in open_dataset(folder))
            reads.append(time.perf_counter() - t)
        results.append({"system": f"images {size}x{size}x3: {name}", "steps": total, "disk_bytes": _disk_bytes(folder),
                        "bytes_per_step": _disk_bytes(folder) / total, "write_steps_s": total / float(np.median(writes)),
                        "read_steps_s": total / float(np.median(reads)), "checksum": checksum})
        shutil.rmtree(folder, ignore_errors=True)
    return results


def images_table(results: list[dict]) -> str:
    rows = [("system", "bytes/step on disk", "write steps/s", "read+decode steps/s")]
    rows += [(r["system"], f"{r['bytes_per_step']:,.0f}", f"{r['write_steps_s']:,.0f}", f"{r['read_steps_s']:,.0f}")
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
