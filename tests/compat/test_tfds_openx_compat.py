"""An Open-X-style robot dataset written by the real tfds writer, through seedrl and back.

Needs the pinned environment (requirements-compat.txt):
    .venv-compat/bin/python -m pytest tests/compat/test_tfds_openx_compat.py -q -m compat

The fixture generator builds, with ``tfds.dataset_builders.store_as_tfds_dataset``,
episodes of an Open-X-like schema: two cameras (a JPEG ``Image`` and a PNG
``Image`` of varying size), a wrist ``Video``, a language instruction
``Text``, nested state dicts with float64 and integer extremes, a
``ClassLabel`` with names (step and episode level), a ``BBoxFeature``, a
``Sequence`` of a FeaturesDict and a ``Sequence`` of BBoxes. Then:

(a) ``import_tfds`` gives, value for value and bit for bit, what tfds's own
    loader gives (images decoded by Pillow equal TF's ``decode_jpeg`` /
    ``decode_png``), and keeps the encoded bytes;
(b) ``export_tfds`` of the import loads in tfds with the same features
    (ClassLabel names included), the same values, and the same image bytes
    on disk; rlds transformations agree on both.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tfds = pytest.importorskip("tensorflow_datasets")
rlds = pytest.importorskip("rlds")
Image = pytest.importorskip("PIL.Image")
tf = pytest.importorskip("tensorflow")

from tfds_steps import assert_steps_match, flat  # noqa: E402

from seedrl.data import open_dataset  # noqa: E402
from seedrl.data.formats import tf_example as tfe  # noqa: E402
from seedrl.data.formats import tfrecord as tfr  # noqa: E402
from seedrl.data.formats.tfds import export_tfds, import_tfds  # noqa: E402
from seedrl.data.images import EncodedImages  # noqa: E402

pytestmark = pytest.mark.compat

I64, U8 = np.iinfo(np.int64), np.iinfo(np.uint8)
F64_EXTREMES = np.array([np.finfo(np.float64).max, np.finfo(np.float64).tiny, -0.0, 5e-324, np.inf, -1 / 3])


def _features():
    F = tfds.features
    return F.FeaturesDict({
        "episode_metadata": F.FeaturesDict({"file_path": F.Text(), "success": F.ClassLabel(names=["no", "yes"])}),
        "steps": F.Dataset({
            "is_first": F.Scalar(np.bool_), "is_last": F.Scalar(np.bool_), "is_terminal": F.Scalar(np.bool_),
            "reward": F.Scalar(np.float32), "discount": F.Scalar(np.float32),
            "language_instruction": F.Text(),
            "action": F.FeaturesDict({
                "world_vector": F.Tensor(shape=(3,), dtype=np.float32),
                "gripper": F.ClassLabel(names=["open", "close", "hold"]),
            }),
            "observation": F.FeaturesDict({
                "image": F.Image(shape=(8, 10, 3), encoding_format="jpeg"),
                "wrist_image": F.Image(shape=(None, None, 3), encoding_format="png"),
                "depth": F.Image(shape=(8, 10, 1), encoding_format="png"),
                "wrist_clip": F.Video(shape=(None, 4, 6, 3)),
                "state": F.FeaturesDict({
                    "joints": F.Tensor(shape=(6,), dtype=np.float64, encoding=F.Encoding.ZLIB),
                    "coarse": F.Tensor(shape=(2,), dtype=np.float64),  # encoding none: float32 on disk
                    "counters": F.FeaturesDict({"i64": F.Tensor(shape=(2,), dtype=np.int64),
                                                "u8": F.Tensor(shape=(2,), dtype=np.uint8),
                                                "i32": F.Scalar(np.int32)}),
                }),
                "target": F.BBoxFeature(),
                "objects": F.Sequence({"bbox": F.BBoxFeature(), "kind": F.ClassLabel(num_classes=5)}),
                "tokens": F.Sequence(F.Scalar(np.int32)),
            }),
        }),
    })


def _jpeg_bytes(a: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _episode(i: int, n: int) -> dict:
    rng = np.random.default_rng(i)
    steps = []
    for t in range(n):
        k = (t + i) % 3
        steps.append({
            "is_first": t == 0, "is_last": t == n - 1, "is_terminal": t == n - 1,
            "reward": np.float32(t == n - 1), "discount": np.float32(1.0),
            "language_instruction": f"put the {'red' if i % 2 else 'blue'} cube in the b\u00f6wl",
            "action": {"world_vector": rng.normal(size=3).astype(np.float32), "gripper": k},
            "observation": {
                # a JPEG file's bytes (tfds keeps them as they are), and arrays tfds encodes itself
                "image": io.BytesIO(_jpeg_bytes(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8), 60 + 10 * t)),
                "wrist_image": rng.integers(0, 256, (5 + t, 7, 3), dtype=np.uint8),
                "depth": rng.integers(0, 256, (8, 10, 1), dtype=np.uint8),
                "wrist_clip": rng.integers(0, 256, (t, 4, 6, 3), dtype=np.uint8),
                "state": {"joints": np.roll(F64_EXTREMES, t), "coarse": np.array([0.5, -2.25]) * t,
                          "counters": {"i64": np.array([I64.min, I64.max]), "u8": np.array([U8.min, U8.max], np.uint8),
                                       "i32": np.int32(-(2**31) + t)}},
                "target": tfds.features.BBox(0.125, 0.25, 0.5, 0.75),
                "objects": {"bbox": [tfds.features.BBox(0.0, 0.0, 1.0, 1.0)] * k, "kind": list(range(k))},
                "tokens": np.arange(t, dtype=np.int32) - 2**31,
            },
        })
    return {"episode_metadata": {"file_path": f"/data/ep{i}.npy", "success": i % 2}, "steps": steps}


@pytest.fixture(scope="module")
def openx(tmp_path_factory):
    """The fixture generator: an Open-X-style dataset written by tfds's own writer."""
    root = tmp_path_factory.mktemp("openx")
    episodes = [(f"ep{i}", _episode(i, n)) for i, n in enumerate([3, 1, 4])]
    builder = tfds.dataset_builders.store_as_tfds_dataset(
        name="openx_like", version="1.0.0", features=_features(), split_datasets={"train": episodes},
        data_dir=str(root / "data"), disable_shuffling=True,
    )
    return root, Path(builder.data_dir)


def _load(builder_dir):
    builder = tfds.builder_from_directory(str(builder_dir))
    return builder, list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))


def _same(path, ours, theirs) -> None:
    if isinstance(ours, str):
        assert theirs == ours.encode("utf-8"), path
        return
    a, b = np.asarray(ours), np.asarray(theirs)
    assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), path


def _assert_as_tfds_loads(ds, builder_dir) -> None:
    for ours, theirs in zip(ds, assert_steps_match(ds, _load(builder_dir)[1], _same)):
        md = flat(ours.metadata)
        for path, value in flat(theirs).items():
            _same(path, md[path], value)


def _image_bytes(builder_dir, key: str) -> list:
    return [tfe.decode_example(r)[key][1] for p in sorted(builder_dir.glob("*.tfrecord-*")) for r in tfr.read_records(p)]


def test_a_import_equals_what_tfds_loads_and_keeps_the_bytes(openx):
    root, builder_dir = openx
    ds = import_tfds(builder_dir, root / "store")
    spec = ds.spec
    assert spec.field("observation/image").encoding == "jpeg" and spec.field("observation/wrist_image").shape == (None, None, 3)
    assert spec.field("observation/wrist_clip").shape == (None, 4, 6, 3) and spec.field("observation/objects/bbox").shape == (None, 4)
    names = ds.info["config"]["tfds"]["class_names"]
    assert names["steps/action/gripper"] == ["open", "close", "hold"] and names["episode_metadata/success"] == ["no", "yes"]
    _assert_as_tfds_loads(ds, builder_dir)
    for key in ("image", "wrist_image", "depth"):
        stored = [list(ep.columns[f"observation/{key}"].encoded) for ep in ds]
        assert stored == _image_bytes(builder_dir, f"steps/observation/{key}"), key
    assert isinstance(ds[0].columns["observation/image"], EncodedImages)


def test_b_export_loads_in_tfds_like_the_original(openx):
    root, builder_dir = openx
    ds = import_tfds(builder_dir, root / "store_b")
    out = root / "exported"
    assert export_tfds(ds, out, name="openx_like") is None
    builder, _ = _load(out)
    feats = builder.info.features
    assert feats["steps"]["action"]["gripper"].names == ["open", "close", "hold"]
    assert feats["episode_metadata"]["success"].names == ["no", "yes"]
    assert type(feats["steps"]["observation"]["target"]).__name__ == "BBoxFeature"
    assert feats["steps"]["observation"]["image"].encoding_format == "jpeg"
    _assert_as_tfds_loads(open_dataset(root / "store_b"), out)
    for key in ("image", "wrist_image", "depth"):  # byte-identical on disk
        assert _image_bytes(out, f"steps/observation/{key}") == _image_bytes(builder_dir, f"steps/observation/{key}")
    # rlds transformations read both the same
    orig = tfds.builder_from_directory(str(builder_dir)).as_dataset(split="train", shuffle_files=False)
    ours = builder.as_dataset(split="train", shuffle_files=False)
    for split in (orig, ours):
        assert [int(rlds.transformations.episode_length(ep["steps"])) for ep in split] == [len(ep) for ep in ds]
        total = rlds.transformations.sum_nested_steps(
            split, lambda s: tf.cast(s["observation"]["state"]["counters"]["i32"], tf.int64))
        assert int(total) == sum(int(ep.columns["observation/state/counters/i32"].astype(np.int64).sum()) for ep in ds)
