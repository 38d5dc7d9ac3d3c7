"""Our TF-free TFDS export/import against real tensorflow_datasets 4.9.4 and rlds 0.1.8.

Needs the pinned environment (requirements-compat.txt):
    .venv-compat/bin/python -m pytest tests/compat/test_tfds_compat.py -q -m compat

(a) what export_tfds writes loads with tfds.builder_from_directory and every
    value (bits and dtype) equals the source;
(b) rlds transformations on it agree with seedrl.data.transforms;
(c) a dataset written by tfds's own writer imports with import_tfds equal to
    what tfds reads, and survives import -> export -> tfds again.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tfds = pytest.importorskip("tensorflow_datasets")
rlds = pytest.importorskip("rlds")

from tfds_steps import assert_steps_match, flat  # noqa: E402

from seedrl.data import DatasetWriter, Episode, StepSpec, open_dataset  # noqa: E402
from seedrl.data import transforms as T  # noqa: E402
from seedrl.data.formats.tfds import export_tfds, import_tfds  # noqa: E402
from seedrl.data.spec import tree_flatten  # noqa: E402

pytestmark = pytest.mark.compat

F64_NAN = np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f", np.float64)[0]
F32_SNAN = np.frombuffer(b"\x01\x00\xa0\x7f", np.float32)[0]  # signalling, with a payload
F16_NAN = np.frombuffer(b"\x01\x7c", np.float16)[0]
WIDENED = {"observation/zu": "int64"}  # zero-size uint64: no values, labelled int64 for TF's decode_raw


def _step(rng: np.random.Generator, t: int, n: int) -> dict:
    return {
        "is_first": t == 0, "is_last": t == n - 1, "is_terminal": t == n - 1 and n % 2 == 1,
        "observation": {
            "pixels": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
            "pos": np.array([F64_NAN, 0.1 * t - 1 / 3]),
            "h": np.array([F16_NAN, -0.0], np.float16),
            "i8": np.int8(-128 + t),
            "u16": rng.integers(0, 2**16, 3, dtype=np.uint16),
            "u32": np.uint32(2**32 - 1 - t),
            "u64": np.array([2**64 - 1, 2**63 + t], np.uint64),
            "b": np.array([t % 2 == 0, True]),
            "z": np.zeros((0,), np.float32),
            "zu": np.zeros((0, 2), np.uint64),
            "v": rng.normal(size=t).astype(np.float32),
            "vu64": np.full(t, 2**64 - 1 - t, np.uint64),
            "vu32r": np.full((t, 2), 2**32 - 1, np.uint32),
            "v2": np.full((t, 3 - t % 3), t, np.int16),
            "txt": "\u00e9t\u00e9 " * t,
            "raw": bytes(range(t)),
        },
        "action": (np.int64(-(2**40) + t), {"cont": np.array([F32_SNAN, t], np.float32)}),
        "reward": np.float32(0.25 * t),
        "discount": np.float32(t < n - 1),
    }


def _spec(rng) -> StepSpec:
    varying = ["observation/v", "observation/vu64", "observation/v2"]
    return StepSpec.infer([_step(rng, 1, 3), _step(rng, 2, 3)], varying=varying)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds_compat")
    rng = np.random.default_rng(7)
    spec = _spec(rng)
    assert spec.field("observation/vu32r").shape == (None, 2)
    with DatasetWriter(root / "src") as w:
        for i, n in enumerate([1, 3, 5, 2]):
            md = {"agent": f"agent-\u00e9{i}", "seed": -(2**63) + i, "score": float(F64_NAN) if i else 0.5, "ok": i % 2 == 0,
                  "blob": bytes([i]) * i, "cfg": {"lr": np.float32(1e-3 * i), "dims": np.array([i, -i], np.int32)}}
            w.write_episode(Episode.from_steps([_step(rng, t, n) for t in range(n)], md, spec=spec))
    src = open_dataset(root / "src")
    assert export_tfds(src, root / "tfds", name="seedrl_compat", shard_bytes=2000) is None
    return src, root / "tfds"


def _check(path: str, ours, theirs) -> None:
    """``theirs`` (from tfds.as_numpy) is exactly ``ours``: Text/strings as bytes, numbers bit for bit."""
    if isinstance(ours, str):
        assert theirs == ours.encode("utf-8"), path
        return
    if isinstance(ours, bytes):
        assert theirs == ours, path
        return
    a, b = np.asarray(ours), np.asarray(theirs)
    dtype = np.dtype(WIDENED.get(path, a.dtype))
    assert b.dtype == dtype and b.shape == a.shape, (path, b.dtype, dtype, b.shape, a.shape)
    assert b.tobytes() == a.astype(dtype).tobytes(), (path, a, b)


def _load(builder_dir, split="train"):
    builder = tfds.builder_from_directory(str(builder_dir))
    return builder.as_dataset(split=split, shuffle_files=False)


def test_a_tfds_loads_our_export_value_for_value(exported):
    src, d = exported
    assert len([p for p in d.iterdir() if ".tfrecord-" in p.name]) > 1
    episodes = assert_steps_match(src, list(tfds.as_numpy(_load(d))), _check)
    for ours, theirs in zip(src, episodes):
        md = flat(theirs)
        assert set(md) == set(flat(ours.metadata))
        for path, value in flat(ours.metadata).items():
            typed = {bool: np.bool_, int: np.int64, float: np.float64}.get(type(value))
            _check(path, typed(value) if typed else value, md[path])
    # and our own import of it, here with numpy 1.26 / pyarrow 25, is bit-exact
    back = import_tfds(d, d.parent / "back")
    assert len(back) == len(src) and all(a.equals(b) for a, b in zip(src, back))


def test_b_rlds_transformations_agree_with_ours(exported):
    src, d = exported
    ds = _load(d)
    lengths = [int(rlds.transformations.episode_length(ep["steps"])) for ep in ds]
    assert lengths == [T.episode_length(ep) for ep in src]
    for ours, theirs in zip(src, ds):
        final = tfds.as_numpy(rlds.transformations.final_step(theirs["steps"]))
        mine = tree_flatten(T.final_step(ours))[1]  # tuple positions -> 'action/0'
        for path, value in flat(final).items():
            _check(path, mine[path], value)
    total = rlds.transformations.sum_nested_steps(ds, lambda s: s["action"]["0"])
    assert int(total) == int(T.sum_field(src, "action/0"))
    bits = rlds.transformations.sum_nested_steps(ds, lambda s: tf_cast_int64(s["observation"]["pixels"]))
    assert np.array_equal(np.asarray(bits), T.sum_field(src, "observation/pixels"))
    reward = rlds.transformations.sum_nested_steps(ds, lambda s: s["reward"])
    assert float(reward) == pytest.approx(float(T.sum_field(src, "reward")), rel=1e-6)


def tf_cast_int64(x):
    import tensorflow as tf

    return tf.cast(x, tf.int64)


# ----------------------------------------------------------------- (c) written by tfds itself


def _real_features():
    F = tfds.features
    return F.FeaturesDict({
        "episode_id": F.Text(),
        "agent_id": F.Scalar(dtype=np.int32),
        "info": F.FeaturesDict({"w": F.Tensor(shape=(3,), dtype=np.float32)}),
        "steps": F.Dataset({
            "is_first": F.Scalar(dtype=np.bool_), "is_last": F.Scalar(dtype=np.bool_),
            "is_terminal": F.Scalar(dtype=np.bool_),
            "action": F.ClassLabel(num_classes=4),
            "reward": F.Scalar(dtype=np.float32), "discount": F.Scalar(dtype=np.float32),
            "language_instruction": F.Text(),
            "observation": F.FeaturesDict({
                "image": F.Tensor(shape=(3, 2, 3), dtype=np.uint8),
                "state": F.Tensor(shape=(2,), dtype=np.float64),  # encoding none: tfds stores float32
                "exact": F.Tensor(shape=(2,), dtype=np.float64, encoding=F.Encoding.ZLIB),
                "depth": F.Tensor(shape=(2, 2), dtype=np.float16, encoding=F.Encoding.BYTES),
                "tokens": F.Sequence(F.Scalar(dtype=np.int32)),
                "mask": F.Tensor(shape=(None, None), dtype=np.bool_, encoding=F.Encoding.BYTES),
                "raw": F.Tensor(shape=(), dtype=np.str_),
                "big": F.Scalar(dtype=np.int64),
            }),
        }),
    })


def _real_episode(i: int, n: int) -> dict:
    rng = np.random.default_rng(100 + i)
    steps = [{
        "is_first": t == 0, "is_last": t == n - 1, "is_terminal": t == n - 1,
        "action": int(rng.integers(0, 4)), "reward": np.float32(rng.normal()), "discount": np.float32(1.0),
        "language_instruction": f"pick up the {'red' if i % 2 else 'blue'} block \u2713",
        "observation": {
            "image": rng.integers(0, 256, (3, 2, 3), dtype=np.uint8),
            "state": rng.normal(size=2), "exact": rng.normal(size=2),
            "depth": rng.normal(size=(2, 2)).astype(np.float16),
            "tokens": np.arange(t, dtype=np.int32), "mask": rng.integers(0, 2, (t, t + 1)).astype(bool),
            "raw": bytes([i, t]), "big": np.int64(-(2**63) + t),
        },
    } for t in range(n)]
    return {"episode_id": f"real-{i}", "agent_id": np.int32(i - 2),
            "info": {"w": np.array([i, 0.5, -1], np.float32)}, "steps": steps}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds_real")
    episodes = [_real_episode(i, n) for i, n in enumerate([3, 1, 4, 2, 5])]
    builder = tfds.dataset_builders.store_as_tfds_dataset(
        name="real_rlds", version="1.0.0", features=_real_features(),
        split_datasets={"train": [(f"k{i}", ep) for i, ep in enumerate(episodes)]},
        data_dir=str(root / "data"), disable_shuffling=False,  # tfds orders by key hash: import must follow its shards
    )
    return root, builder.data_dir


def _assert_matches_tfds(ds, builder_dir) -> None:
    for ours, theirs in zip(ds, assert_steps_match(ds, list(tfds.as_numpy(_load(builder_dir))), _check)):
        for path, value in flat(theirs).items():
            _check(path, flat(ours.metadata)[path], value)


def test_c_import_a_dataset_written_by_tfds(real):
    root, builder_dir = real
    ds = import_tfds(builder_dir, root / "imported")
    spec = ds.spec
    assert spec.field("observation/tokens").shape == (None,) and spec.field("observation/mask").shape == (None, None)
    assert spec.field("language_instruction").dtype == "str" and spec.field("observation/raw").dtype == "bytes"
    assert spec.field("action").dtype == "int64" and spec.field("observation/depth").dtype == "float16"
    assert sorted(ep.metadata["episode_id"] for ep in ds) == [f"real-{i}" for i in range(5)]
    _assert_matches_tfds(ds, builder_dir)
    # and back out: our export of the import reads in tfds exactly like the original
    export_tfds(ds, root / "again", name="real_rlds")
    back = open_dataset(root / "imported")
    _assert_matches_tfds(back, root / "again")
