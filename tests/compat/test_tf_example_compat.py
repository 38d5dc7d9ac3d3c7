"""Our TF-free TFRecord / tf.train.Example code against real TensorFlow.

Needs the pinned environment (requirements-compat.txt):
    .venv-compat/bin/python -m pytest tests/compat -q -m compat
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from seedrl.data.formats import tf_example as tfe  # noqa: E402
from seedrl.data.formats import tfrecord as tfr  # noqa: E402

pytestmark = pytest.mark.compat

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NAN_BITS = np.array([0x7FC00001, 0xFFBADBAD, 0x7F800001, 0x7FC00000], np.uint32)


def _random_features(rng: np.random.Generator) -> dict:
    feats = {}
    for i in range(int(rng.integers(0, 7))):
        kind = ("bytes", "float", "int64")[int(rng.integers(0, 3))]
        n = int(rng.integers(0, 6))
        if kind == "bytes":
            vals = [rng.bytes(int(rng.integers(0, 12))) for _ in range(n)]
        elif kind == "float":
            vals = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)
        else:
            vals = rng.integers(I64_MIN, I64_MAX, size=n, dtype=np.int64, endpoint=True)
            if n:
                vals[0] = (I64_MIN, I64_MAX, -1, 0)[i % 4]
        feats[f"f{i}/{kind}"] = (kind, vals)
    return feats


CASES = [
    {},
    {"empty_b": ("bytes", []), "empty_f": ("float", []), "empty_i": ("int64", [])},
    {"nan": ("float", NAN_BITS.view(np.float32)), "ext": ("int64", [I64_MIN, I64_MAX, -1, 0, 1])},
    {"steps/observation/pos": ("bytes", [np.arange(2, dtype=np.float64).tobytes()]),
     "steps/is_first": ("int64", [1, 0, 0]), "steps/text": ("bytes", [b"a", b"", "\u00e9"])},
] + [_random_features(np.random.default_rng(seed)) for seed in range(40)]


def _to_tf(features: dict):
    fmap = {}
    for k, (kind, vals) in features.items():
        if kind == "bytes":
            f = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v.encode() if isinstance(v, str) else bytes(v) for v in vals]))
        elif kind == "float":
            f = tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(vals, np.float32)))
        else:
            f = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in vals]))
        fmap[k] = f
    return tf.train.Example(features=tf.train.Features(feature=fmap))


def _from_tf(ex) -> dict:
    out = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        if kind == "bytes_list":
            out[k] = ("bytes", list(f.bytes_list.value))
        elif kind == "float_list":
            out[k] = ("float", np.array(f.float_list.value, np.float32))
        elif kind == "int64_list":
            out[k] = ("int64", np.array(f.int64_list.value, np.int64))
        else:
            out[k] = (None, [])
    return out


def _bits(values, quiet: bool) -> list[int]:
    bits = np.asarray(values, np.float32).reshape(-1).view(np.uint32).copy()
    if quiet:
        # TF's Python protobuf API hands floats over as Python floats (doubles);
        # float32 -> float64 sets the quiet bit of a signalling NaN on x86.  The
        # wire bytes stay bit-exact (checked separately), the API view does not.
        nan = np.isnan(bits.view(np.float32))
        bits[nan] |= np.uint32(0x00400000)
    return bits.tolist()


def _quieted(features: dict) -> dict:
    return {
        k: (kind, np.array(_bits(v, True), np.uint32).view(np.float32) if kind == "float" else v)
        for k, (kind, v) in features.items()
    }


def _assert_same(a: dict, b: dict, quiet_nans: bool = False):
    assert set(a) == set(b)
    for k in a:
        (ka, va), (kb, vb) = a[k], b[k]
        assert ka == kb, k
        if ka == "float":
            assert _bits(va, quiet_nans) == _bits(vb, quiet_nans), k
        elif ka == "int64":
            assert [int(x) for x in va] == [int(x) for x in vb], k
        else:
            assert [v.encode() if isinstance(v, str) else bytes(v) for v in va] == \
                [v.encode() if isinstance(v, str) else bytes(v) for v in vb], k


@pytest.mark.parametrize("features", CASES)
def test_our_encoder_parses_with_tf(features):
    data = tfe.encode_example(features)
    ex = tf.train.Example.FromString(data)
    _assert_same(_from_tf(ex), features, quiet_nans=True)
    # TF's parser keeps every bit (NaN payloads included): re-serializing is identity
    assert ex.SerializeToString(deterministic=True) == data
    # sorted keys + packed lists == TF's deterministic serialization, byte for byte
    tf_bytes = _to_tf(features).SerializeToString(deterministic=True)
    assert tfe.encode_example(_quieted(features)) == tf_bytes


@pytest.mark.parametrize("features", CASES)
def test_tf_serialization_decodes_with_ours(features):
    ex = _to_tf(features)
    for data in (ex.SerializeToString(), ex.SerializeToString(deterministic=True)):
        ours = tfe.decode_example(data)
        _assert_same(ours, _from_tf(ex))  # bit-exact against TF's own view
        _assert_same(ours, features, quiet_nans=True)
        # and back: our re-encoding is TF's deterministic bytes
        assert tfe.encode_example(ours) == ex.SerializeToString(deterministic=True)


def test_parse_example_op_on_our_bytes():
    """The graph-side parser (what tf.data pipelines use) agrees too."""
    feats = {
        "i": ("int64", [I64_MIN, 3, I64_MAX]),
        "f": ("float", NAN_BITS.view(np.float32)),
        "b": ("bytes", [b"x", b"\x00yz"]),
    }
    spec = {
        "i": tf.io.VarLenFeature(tf.int64),
        "f": tf.io.VarLenFeature(tf.float32),
        "b": tf.io.VarLenFeature(tf.string),
    }
    parsed = tf.io.parse_single_example(tfe.encode_example(feats), spec)
    assert parsed["i"].values.numpy().tolist() == [I64_MIN, 3, I64_MAX]
    assert parsed["f"].values.numpy().view(np.uint32).tolist() == NAN_BITS.tolist()
    assert parsed["b"].values.numpy().tolist() == [b"x", b"\x00yz"]


def _records(rng, n=25):
    recs = [b"", b"\x00", bytes(range(256))]
    recs += [rng.bytes(int(rng.integers(0, 5000))) for _ in range(n)]
    recs.append(tfe.encode_example(CASES[2]))
    return recs


def test_our_tfrecord_reads_with_tf(tmp_path):
    recs = _records(np.random.default_rng(0))
    path = tmp_path / "ours.tfrecord"
    tfr.write_records(path, recs)
    got = [t.numpy() for t in tf.data.TFRecordDataset(str(path))]
    assert got == recs
    # and TF's own legacy iterator (checks CRCs too)
    assert list(tf.compat.v1.io.tf_record_iterator(str(path))) == recs


def test_tf_tfrecord_reads_with_ours(tmp_path):
    recs = _records(np.random.default_rng(1))
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in recs:
            w.write(r)
    assert list(tfr.read_records(path)) == recs
    # byte-identical files
    ours = tmp_path / "ours.tfrecord"
    tfr.write_records(ours, recs)
    assert ours.read_bytes() == path.read_bytes()


def test_tf_rejects_what_we_reject(tmp_path):
    path = tmp_path / "bad.tfrecord"
    tfr.write_records(path, [b"hello", b"world"])
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0x10  # a data byte of the second record
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="offset 21"):
        list(tfr.read_records(path))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


# ---------------------------------------------------------------------------
# TFDS directory layout (see tests/compat/probe_tfds_layout.py for the details)
# ---------------------------------------------------------------------------


def _rlds_features(tfds):
    Tensor, Scalar = tfds.features.Tensor, tfds.features.Scalar
    return tfds.features.FeaturesDict(
        {
            "episode_id": tfds.features.Text(),
            "steps": tfds.features.Dataset(
                {
                    "is_first": Scalar(dtype=np.bool_),
                    "is_last": Scalar(dtype=np.bool_),
                    "is_terminal": Scalar(dtype=np.bool_),
                    "observation": {
                        "pixels": Tensor(shape=(4, 4, 3), dtype=np.uint8),
                        "pos": Tensor(shape=(2,), dtype=np.float64,
                                      encoding=tfds.features.Encoding.ZLIB),
                    },
                    "action": Scalar(dtype=np.int64),
                    "reward": Scalar(dtype=np.float32),
                    "discount": Scalar(dtype=np.float32),
                    "text": tfds.features.Text(),
                }
            ),
        }
    )


def _episode(i: int, n: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "episode_id": f"ep-{i}",
        "steps": [
            {
                "is_first": t == 0, "is_last": t == n - 1, "is_terminal": t == n - 1,
                "observation": {"pixels": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
                                "pos": np.array([0.1 * t, -1 / 3 - i])},
                "action": I64_MIN + t, "reward": np.float32(t / 3), "discount": np.float32(1),
                "text": f"t{t}",
            }
            for t in range(n)
        ],
    }


def _encode_episode_ours(ep: dict) -> bytes:
    import zlib

    st = ep["steps"]
    return tfe.encode_example({
        "episode_id": ("bytes", [ep["episode_id"]]),
        "steps/is_first": ("int64", [s["is_first"] for s in st]),
        "steps/is_last": ("int64", [s["is_last"] for s in st]),
        "steps/is_terminal": ("int64", [s["is_terminal"] for s in st]),
        "steps/observation/pixels": ("int64", np.stack([s["observation"]["pixels"] for s in st])),
        "steps/observation/pos": ("bytes", [zlib.compress(s["observation"]["pos"].astype("<f8")
                                                          .tobytes()) for s in st]),
        "steps/action": ("int64", [s["action"] for s in st]),
        "steps/reward": ("float", [s["reward"] for s in st]),
        "steps/discount": ("float", [s["discount"] for s in st]),
        "steps/text": ("bytes", [s["text"] for s in st]),
    })


def test_tfds_layout_both_directions(tmp_path):
    import json

    tfds = pytest.importorskip("tensorflow_datasets")
    from google.protobuf import json_format

    features = _rlds_features(tfds)
    episodes = [_episode(i, n) for i, n in enumerate([3, 1, 2])]
    records = [_encode_episode_ours(ep) for ep in episodes]

    # tfds's serializer and ours agree (TF deterministic bytes == ours)
    for ep, rec in zip(episodes, records):
        theirs = features.serialize_example(ep)
        assert tf.train.Example.FromString(theirs).SerializeToString(deterministic=True) == rec

    # a directory written without tfds loads with tfds.builder_from_directory
    d = tmp_path / "seedrl_rlds" / "1.0.0"
    d.mkdir(parents=True)
    (d / "features.json").write_text(json.dumps(json_format.MessageToDict(features.to_proto())))
    tfr.write_records(d / "seedrl_rlds-train.tfrecord-00000-of-00002", records[:2])
    tfr.write_records(d / "seedrl_rlds-train.tfrecord-00001-of-00002", records[2:])
    (d / "dataset_info.json").write_text(json.dumps({
        "name": "seedrl_rlds", "version": "1.0.0", "fileFormat": "tfrecord",
        "disableShuffling": True,
        "splits": [{"name": "train", "shardLengths": ["2", "1"],
                    "numBytes": str(sum(map(len, records))),
                    "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}],
    }))
    ds = tfds.builder_from_directory(str(d)).as_dataset(split="train")
    got = list(ds)
    assert len(got) == 3
    for g, ep in zip(got, episodes):
        assert g["episode_id"].numpy() == ep["episode_id"].encode()
        steps = list(tfds.as_numpy(g["steps"]))
        assert len(steps) == len(ep["steps"])
        for gs, s in zip(steps, ep["steps"]):
            assert gs["is_first"] == s["is_first"] and gs["is_first"].dtype == np.bool_
            assert gs["is_terminal"] == s["is_terminal"]
            assert gs["observation"]["pixels"].dtype == np.uint8
            assert np.array_equal(gs["observation"]["pixels"], s["observation"]["pixels"])
            assert gs["observation"]["pos"].dtype == np.float64
            assert gs["observation"]["pos"].tobytes() == s["observation"]["pos"].tobytes()
            assert gs["action"] == s["action"] and gs["reward"] == s["reward"]
            assert gs["text"] == s["text"].encode()
