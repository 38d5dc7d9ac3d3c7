"""TFDS RLDS directories without TensorFlow: seedrl -> TFDS -> seedrl, bit for bit.

The layout tfds itself reads is checked against tests/compat (real tfds 4.9.4);
here: round trips, the dtype -> feature table, the on-disk layout measured in
the compat probe, sharding, refusals, and directories laid out like tfds's own.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import NAN_PAYLOAD, make_episode, random_values, simple_steps, step_specs
from tfds_dirs import CORE, P, _core_values, _fdict, _tensor, _tfds_dir

from seedrl.data import ConversionError, DatasetWriter, Episode, StepSpec, open_dataset
from seedrl.data.formats import EXPORTERS, IMPORTERS, detect_format
from seedrl.data.formats import tf_example as tfe
from seedrl.data.formats import tfrecord as tfr
from seedrl.data.formats.tfds import SPEC_FILE, export_tfds, import_tfds
from seedrl.data.formats.tfds_features import Leaf, cast, decode_rows, encode_rows, leaf_for


def _write(path, episodes) -> None:
    with DatasetWriter(path) as w:
        for ep in episodes:
            w.write_episode(ep)


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.equals(y), (x, y)
        assert list(x.metadata) == list(y.metadata)


def _records(d: Path) -> list[dict]:
    return [tfe.decode_example(r) for p in sorted(d.glob("*.tfrecord-*")) for r in tfr.read_records(p)]


def _steps_features(d: Path) -> dict:
    fj = json.loads((d / "features.json").read_text())
    return fj["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if v["pythonClassName"].endswith("FeaturesDict"):
            out.update(_flat(v["featuresDict"]["features"], f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out


# ----------------------------------------------------------------- round trips

metadata_values = st.fixed_dictionaries(
    {
        "agent": st.text(max_size=6).filter(lambda s: "\x00" not in s and not any(0xD800 <= ord(c) < 0xE000 for c in s)),
        "env_seed": st.integers(-(2**63), 2**63 - 1),
        "score": st.sampled_from([0.5, -0.0, float("inf"), float(NAN_PAYLOAD), 1e300]),
        "flag": st.booleans(),
        "blob": st.binary(max_size=5),
        "cfg": st.fixed_dictionaries({"lr": st.just(np.float32(3e-4)), "u": st.just(np.uint64(2**64 - 1)),
                                      "shape": st.sampled_from([np.zeros((0, 2), np.int8), np.arange(3, dtype=np.float16)])}),
    }
)


@settings(max_examples=30, deadline=None)
@given(recipe=step_specs(), lengths=st.lists(st.integers(1, 4), min_size=1, max_size=3), md=metadata_values,
       seed=st.integers(0, 2**16))
def test_round_trip_bit_exact(recipe, lengths, md, seed):
    """Random specs (every dtype; fixed, scalar, varying, zero-size, str, bytes; tuples; NaN payloads)."""
    with tempfile.TemporaryDirectory() as d:
        eps = [make_episode(recipe, n, seed + i, **md) for i, n in enumerate(lengths)]
        _write(f"{d}/src", eps)
        src = open_dataset(f"{d}/src")
        report = export_tfds(src, f"{d}/tfds", shard_bytes=600)
        assert report is None  # the strategies draw only 1-D varying uint64: a Sequence, exact
        back = import_tfds(f"{d}/tfds", f"{d}/back")
        _same(src, back)
        assert back.spec == src.spec and back.info["config"] == src.info["config"]
        info = json.loads(Path(d, "tfds", "dataset_info.json").read_text())
        assert sum(int(x) for x in info["splits"][0]["shardLengths"]) == len(lengths)


def test_one_step_episodes_empty_strings_and_nan_payloads(tmp_path):
    steps = [{"observation": {"s": "", "b": b"", "z": np.zeros((0, 3), np.float32),
                              "f": np.array([NAN_PAYLOAD, -0.0]), "h": np.frombuffer(b"\x01\x7c\x01\xfe", np.float16).copy(),
                              "g": np.frombuffer(b"\x01\x00\xa0\x7f", np.float32)[0]},
              "action": np.int64(-(2**63)), "reward": np.float32(0), "discount": np.float32(0),
              "is_first": True, "is_last": True, "is_terminal": False}]
    _write(tmp_path / "src", [Episode.from_steps(steps, {"episode_id": i}) for i in ("", "x", "y")])  # ids are unique
    assert export_tfds(open_dataset(tmp_path / "src"), tmp_path / "t") is None
    _same(open_dataset(tmp_path / "src"), import_tfds(tmp_path / "t", tmp_path / "back"))
    rec = _records(tmp_path / "t")[0]
    assert rec["steps/observation/g"][1].view(np.uint32)[0] == 0x7FA00001  # signalling NaN bits in the float_list
    assert rec["steps/action"][1][0] == -(2**63) and rec["episode_id"] == ("bytes", [b""])


# ----------------------------------------------------------------- the dtype table

TABLE = {  # field: (value maker, expected class, TFDS dtype, shape, encoding)
    "b": (lambda r, t: t % 2 == 0, "scalar.Scalar", "bool", [], "none"),
    "i8": (lambda r, t: random_values(r, "int8", (2,)), "tensor_feature.Tensor", "int8", ["2"], "none"),
    "u32": (lambda r, t: np.uint32(2**32 - 1 - t), "scalar.Scalar", "uint32", [], "none"),
    "u64": (lambda r, t: np.uint64(2**64 - 1 - t), "scalar.Scalar", "uint64", [], "none"),
    "f32": (lambda r, t: random_values(r, "float32", (3,)), "tensor_feature.Tensor", "float32", ["3"], "none"),
    "f16": (lambda r, t: random_values(r, "float16", (2,)), "tensor_feature.Tensor", "float16", ["2"], "bytes"),
    "f64": (lambda r, t: random_values(r, "float64", ()), "tensor_feature.Tensor", "float64", [], "bytes"),
    "zero": (lambda r, t: np.zeros((2, 0), np.int32), "tensor_feature.Tensor", "int32", ["2", "0"], "bytes"),
    "zero_u64": (lambda r, t: np.zeros((0,), np.uint64), "tensor_feature.Tensor", "int64", ["0"], "bytes"),
    "v_f64": (lambda r, t: random_values(r, "float64", (t,)), "tensor_feature.Tensor", "float64", ["-1"], "bytes"),
    "v_2d": (lambda r, t: np.ones((t, t + 1), np.int16), "tensor_feature.Tensor", "int16", ["-1", "-1"], "bytes"),
    "v_u32_2d": (lambda r, t: np.full((1, t), 2**32 - 1, np.uint32), "tensor_feature.Tensor", "int64", ["-1", "-1"], "bytes"),
    "v_u64": (lambda r, t: np.full((t,), 2**64 - 1, np.uint64), "sequence_feature.Sequence", "uint64", [], "none"),
    "v_u32_rows": (lambda r, t: np.full((t, 2), 7, np.uint32), "sequence_feature.Sequence", "uint32", ["2"], "none"),
    "txt": (lambda r, t: "\u00e9" * t, "text_feature.Text", None, None, None),
    "raw": (lambda r, t: bytes([t]) * t, "tensor_feature.Tensor", "string", [], "none"),
}
VARYING = [f"observation/{k}" for k in TABLE if k.startswith("v_") and k != "v_u32_rows"]  # that one: (None, 2)


def _table_episode(n: int, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    steps = [{"observation": {k: make(rng, t) for k, (make, *_) in TABLE.items()},
              "action": (np.int32(t), {"k": np.float64(t) / 3}), "reward": np.float32(t), "discount": np.float32(1),
              "is_first": t == 0, "is_last": t == n - 1, "is_terminal": False} for t in range(n)]
    other = {**steps[0], "observation": {k: make(rng, 3) for k, (make, *_) in TABLE.items()}}
    spec = StepSpec.infer(steps + [other], varying=VARYING)
    return Episode.from_steps(steps, {"episode_id": seed}, spec=spec)


def test_dtype_table_features_json_and_round_trip(tmp_path):
    _write(tmp_path / "src", [_table_episode(n, i) for i, n in enumerate([1, 4, 2])])
    src = open_dataset(tmp_path / "src")
    assert export_tfds(src, tmp_path / "t") is None
    feats = _flat(_steps_features(tmp_path / "t"))
    for k, (_, cls, dtype, shape, enc) in TABLE.items():
        got = feats[f"observation/{k}"]
        assert got["pythonClassName"] == P + cls, k
        if cls.startswith("sequence"):
            got = got["sequence"]["feature"]
        if dtype is not None:
            assert got["tensor"] == {"dtype": dtype, "encoding": enc, "shape": {"dimensions": shape} if shape else {}}, k
    # tuple positions become dict keys; nested dicts stay FeaturesDicts; core scalars as in RLDS
    assert set(_steps_features(tmp_path / "t")["action"]["featuresDict"]["features"]) == {"0", "1"}
    assert feats["action/1/k"]["tensor"]["encoding"] == "bytes" and feats["is_last"]["tensor"]["dtype"] == "bool"
    top = json.loads((tmp_path / "t" / "features.json").read_text())["featuresDict"]["features"]
    assert top["episode_id"]["tensor"] == {"dtype": "int64", "encoding": "none", "shape": {}}
    back = import_tfds(tmp_path / "t", tmp_path / "back")
    _same(src, back)
    assert isinstance(back[0][0]["action"], tuple)
    # what the records hold, per the tfds layout (uint64 as two's complement int64; dynamic shape pairs)
    rec = _records(tmp_path / "t")[1]
    assert rec["steps/observation/u64"] == ("int64", rec["steps/observation/u64"][1]) and list(rec["steps/observation/u64"][1]) == [-1, -2, -3, -4]
    assert list(rec["steps/observation/v_2d/shape"][1]) == [0, 1, 1, 2, 2, 3, 3, 4]
    assert list(rec["steps/observation/v_u64/ragged_row_lengths_0"][1]) == [0, 1, 2, 3]
    assert list(rec["steps/is_first"][1]) == [1, 0, 0, 0]


def test_layout_matches_the_tfds_probe(tmp_path):
    """The probe's dataset (tests/compat/probe_tfds_layout.py, measured with tfds 4.9.4) comes out as tfds writes it."""
    rng = np.random.default_rng(0)
    steps = [{"is_first": t == 0, "is_last": t == 2, "is_terminal": t == 2,
              "observation": {"pixels": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "pos": np.array([0.1 * t, -1 / 3 - t])},
              "action": np.int64(-(2**40) + t if t == 1 else t), "reward": np.float32(0.5 * t),
              "discount": np.float32(1.0 if t < 2 else 0.0), "text": f"step {t} \u00e9"} for t in range(3)]
    _write(tmp_path / "src", [Episode.from_steps(steps, {"episode_id": "ep-000"})])
    export_tfds(open_dataset(tmp_path / "src"), tmp_path / "t", name="probe_rlds")
    scalar = lambda dt: {"pythonClassName": P + "scalar.Scalar", "tensor": {"dtype": dt, "encoding": "none", "shape": {}}}  # noqa: E731
    expected_steps = {
        "action": scalar("int64"), "discount": scalar("float32"), "reward": scalar("float32"),
        "is_first": scalar("bool"), "is_last": scalar("bool"), "is_terminal": scalar("bool"),
        "text": {"pythonClassName": P + "text_feature.Text", "text": {}},
        "observation": {"pythonClassName": P + "features_dict.FeaturesDict", "featuresDict": {"features": {
            "pixels": {"pythonClassName": P + "tensor_feature.Tensor",
                       "tensor": {"dtype": "uint8", "encoding": "none", "shape": {"dimensions": ["4", "4", "3"]}}},
            "pos": {"pythonClassName": P + "tensor_feature.Tensor",
                    "tensor": {"dtype": "float64", "encoding": "bytes", "shape": {"dimensions": ["2"]}}}}}},
    }
    fj = json.loads((tmp_path / "t" / "features.json").read_text())
    assert fj["pythonClassName"] == P + "features_dict.FeaturesDict"
    assert fj["featuresDict"]["features"]["episode_id"] == {"pythonClassName": P + "text_feature.Text", "text": {}}
    assert fj["featuresDict"]["features"]["steps"]["sequence"]["length"] == "-1"
    assert _steps_features(tmp_path / "t") == expected_steps
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert files == ["dataset_info.json", "features.json", "probe_rlds-train.tfrecord-00000-of-00001", SPEC_FILE]
    raw = list(tfr.read_records(tmp_path / "t" / files[2]))
    expected = tfe.encode_example({
        "episode_id": ("bytes", [b"ep-000"]),
        "steps/action": ("int64", [0, -(2**40) + 1, 2]), "steps/discount": ("float", [1, 1, 0]),
        "steps/is_first": ("int64", [1, 0, 0]), "steps/is_last": ("int64", [0, 0, 1]), "steps/is_terminal": ("int64", [0, 0, 1]),
        "steps/observation/pixels": ("int64", np.stack([s["observation"]["pixels"] for s in steps]).reshape(-1)),
        "steps/observation/pos": ("bytes", [s["observation"]["pos"].astype("<f8").tobytes() for s in steps]),
        "steps/reward": ("float", [0, 0.5, 1]), "steps/text": ("bytes", [s["text"].encode() for s in steps]),
    })
    assert raw == [expected]  # byte-identical to the probe's hand-built record (keys sorted, like tfds)
    info = json.loads((tmp_path / "t" / "dataset_info.json").read_text())
    assert info["name"] == "probe_rlds" and info["disableShuffling"] is True and info["fileFormat"] == "tfrecord"
    assert info["splits"] == [{"name": "train", "shardLengths": ["1"], "numBytes": str(len(expected)),
                               "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}]


# ----------------------------------------------------------------- shards and splits


@pytest.mark.parametrize("shard_bytes, per_shard", [(1, 1), (None, 2), (1 << 30, 7)])
def test_shards_by_size(tmp_path, shard_bytes, per_shard):
    _write(tmp_path / "src", [Episode.from_steps(simple_steps(3, i)) for i in range(7)])
    src = open_dataset(tmp_path / "src")
    if shard_bytes is None:  # room for exactly two framed records of this (constant) size
        export_tfds(src, tmp_path / "probe", shard_bytes=1)
        size = (tmp_path / "probe").glob("*.tfrecord-00000-*").__next__().stat().st_size
        shard_bytes = 2 * size + size // 2
    export_tfds(src, tmp_path / "t", shard_bytes=shard_bytes)
    info = json.loads((tmp_path / "t" / "dataset_info.json").read_text())["splits"][0]
    lengths = [int(x) for x in info["shardLengths"]]
    n = -(-7 // per_shard)
    assert lengths == [per_shard] * (7 // per_shard) + ([7 % per_shard] if 7 % per_shard else [])
    names = sorted(p.name for p in (tmp_path / "t").glob("*.tfrecord-*"))
    assert names == [f"src-train.tfrecord-{i:05d}-of-{n:05d}" for i in range(n)]
    assert [len(list(tfr.read_records(tmp_path / "t" / x))) for x in names] == lengths
    assert int(info["numBytes"]) == sum(len(r) for x in names for r in tfr.read_records(tmp_path / "t" / x))
    _same(src, import_tfds(tmp_path / "t", tmp_path / "back"))


def test_several_splits_in_one_directory(tmp_path):
    for name, seeds in [("a", [1, 2]), ("b", [3])]:
        _write(tmp_path / name, [Episode.from_steps(simple_steps(2 + s, s)) for s in seeds])
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    export_tfds(a, tmp_path / "t", name="cartpole")
    export_tfds(b, tmp_path / "t", name="cartpole", split="test")
    splits = json.loads((tmp_path / "t" / "dataset_info.json").read_text())["splits"]
    assert [s["name"] for s in splits] == ["train", "test"]
    _same(a, import_tfds(tmp_path / "t", tmp_path / "ra"))
    _same(b, import_tfds(tmp_path / "t", tmp_path / "rb", split="test"))
    with pytest.raises(FileExistsError, match="'test' already exists"):
        export_tfds(b, tmp_path / "t", name="cartpole", split="test")
    _write(tmp_path / "c", [Episode.from_steps(simple_steps(2, 0, frame=(2, 2)))])
    with pytest.raises(ConversionError, match="features differ"):
        export_tfds(open_dataset(tmp_path / "c"), tmp_path / "t", name="cartpole", split="validation")
    with pytest.raises(KeyError, match="no split 'validation'"):
        import_tfds(tmp_path / "t", tmp_path / "rc", split="validation")


# ----------------------------------------------------------------- refusals


@pytest.mark.parametrize("value", [None, [1, 2], (1, "a"), {}, 2**63])
def test_metadata_tfds_cannot_hold_is_refused_or_stored_as_json(tmp_path, value):
    _write(tmp_path / "src", [Episode.from_steps(simple_steps(2), {"note": value, "ok": 1})])
    src = open_dataset(tmp_path / "src")
    with pytest.raises(ConversionError, match="episode metadata 'note'"):
        export_tfds(src, tmp_path / "t")
    assert not list((tmp_path / "t").glob("*"))
    report = export_tfds(src, tmp_path / "t", allow_lossy=True)
    assert "'note'" in report and "'ok'" not in report
    top = json.loads((tmp_path / "t" / "features.json").read_text())["featuresDict"]["features"]
    assert top["note"]["pythonClassName"] == P + "text_feature.Text"
    _same(src, import_tfds(tmp_path / "t", tmp_path / "back"))


def test_metadata_type_changes_and_slashes_are_refused(tmp_path):
    _write(tmp_path / "a", [Episode.from_steps(simple_steps(2), {"episode_id": i}) for i in (1, 2)]
           + [Episode.from_steps(simple_steps(2), {"episode_id": "three"})])
    with pytest.raises(ConversionError, match="'episode_id': type changes between episodes"):
        export_tfds(open_dataset(tmp_path / "a"), tmp_path / "t")
    _write(tmp_path / "b", [Episode.from_steps(simple_steps(2), {"a/b": 1})])
    with pytest.raises(ConversionError, match="'a/b'"):
        export_tfds(open_dataset(tmp_path / "b"), tmp_path / "t", allow_lossy=True)
    _write(tmp_path / "c", [Episode.from_steps(simple_steps(2), {"cfg": {"x/y": 1}})])
    with pytest.raises(ConversionError, match=r"'cfg'.*'x/y'"):
        export_tfds(open_dataset(tmp_path / "c"), tmp_path / "t")


def test_varying_uint64_off_the_leading_axis(tmp_path):
    steps = [{**s, "observation": np.full((2, i + 1), 2**64 - 1 - i, np.uint64)} for i, s in enumerate(simple_steps(3))]
    spec = StepSpec.infer(steps)
    assert spec.field("observation").shape == (2, None)
    _write(tmp_path / "src", [Episode.from_steps(steps, spec=spec)])
    src = open_dataset(tmp_path / "src")
    with pytest.raises(ConversionError, match="field 'observation': varying uint64"):
        export_tfds(src, tmp_path / "t")
    report = export_tfds(src, tmp_path / "t", allow_lossy=True)
    assert "field 'observation'" in report
    _same(src, import_tfds(tmp_path / "t", tmp_path / "back"))


def test_other_refusals(tmp_path):
    _write(tmp_path / "src", [Episode.from_steps(simple_steps(2))])
    src = open_dataset(tmp_path / "src")
    with pytest.raises(ConversionError, match="no episodes"):
        export_tfds(src.filter(lambda m: False), tmp_path / "t")
    with pytest.raises(ConversionError, match="core RLDS field"):
        export_tfds(src.select(["observation", "reward"]), tmp_path / "t")
    with pytest.raises(ValueError, match="snake_case"):
        export_tfds(src, tmp_path / "t", name="Bad-Name")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError):
        export_tfds(src, tmp_path / "busy")


def test_failed_export_leaves_no_partial_shards(tmp_path, monkeypatch):
    import seedrl.data.formats.tfds as mod

    _write(tmp_path / "src", [Episode.from_steps(simple_steps(2, i)) for i in range(3)])
    calls = []

    def boom(feats):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return tfe.encode_example(feats)

    monkeypatch.setattr(mod, "encode_example", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_tfds(open_dataset(tmp_path / "src"), tmp_path / "t", shard_bytes=1)
    assert list((tmp_path / "t").iterdir()) == []


# ----------------------------------------------------------------- directories as tfds writes them


def test_import_a_directory_laid_out_by_tfds(tmp_path):
    """No seedrl_spec.json: the spec comes from features.json; values decode as tfds decodes them."""
    steps = {**CORE,
             "action": {"pythonClassName": P + "class_label_feature.ClassLabel", "classLabel": {"numClasses": "3"}},
             "observation": _fdict({
                 "lossy64": _tensor("float64", (2,)),  # tfds's encoding none: float32 on disk
                 "z": _tensor("float64", (2,), "zlib"),
                 "dyn": _tensor("int16", (-1, -1), "bytes"),
                 "tok": {"pythonClassName": P + "sequence_feature.Sequence",
                         "sequence": {"feature": _tensor("int32", cls="scalar.Scalar"), "length": "-1"}},
                 "u8": _tensor("uint8", (2,), "bytes"),
                 "lang": {"pythonClassName": P + "text_feature.Text", "text": {}},
                 "raw": _tensor("string")}),
             }
    top = {"episode_id": {"pythonClassName": P + "text_feature.Text", "text": {}}, "n": _tensor("int32", cls="scalar.Scalar"),
           "info": _fdict({"w": _tensor("float32", (3,))})}
    rng = np.random.default_rng(1)
    episodes = []
    for e, n in enumerate([3, 1, 2]):
        z = rng.normal(size=(n, 2))
        dyn = [np.full((t, t + 1), t, np.int16) for t in range(n)]
        tok = [np.arange(t, dtype=np.int32) for t in range(n)]
        u8 = rng.integers(0, 256, (n, 2), dtype=np.uint8)
        feats = {**_core_values(n), "steps/action": ("int64", np.arange(n) % 3),
                 "steps/observation/lossy64": ("float", z.reshape(-1)),
                 "steps/observation/z": ("bytes", [zlib.compress(r.tobytes()) for r in z]),
                 "steps/observation/dyn/value": ("bytes", [a.tobytes() for a in dyn]),
                 "steps/observation/dyn/shape": ("int64", np.array([a.shape for a in dyn]).reshape(-1)),
                 "steps/observation/tok/ragged_flat_values": ("int64", np.concatenate(tok)),
                 "steps/observation/tok/ragged_row_lengths_0": ("int64", [len(t) for t in tok]),
                 "steps/observation/u8": ("bytes", [r.tobytes() for r in u8]),
                 "steps/observation/lang": ("bytes", ["pick \u00e9".encode()] * n),
                 "steps/observation/raw": ("bytes", [bytes([t]) for t in range(n)]),
                 "episode_id": ("bytes", [f"ep{e}".encode()]), "n": ("int64", [n]), "info/w": ("float", [e, 0.5, -1])}
        episodes.append((tfe.encode_example(feats), z, dyn, tok, u8))
    d = _tfds_dir(tmp_path, steps, top, [e[0] for e in episodes])
    back = import_tfds(d, tmp_path / "back")
    spec = back.spec
    assert spec.field("observation/dyn").shape == (None, None) and spec.field("observation/tok").shape == (None,)
    assert spec.field("observation/lang").dtype == "str" and spec.field("observation/raw").dtype == "bytes"
    assert spec.field("action").dtype == "int64" and spec.field("observation/lossy64").dtype == "float64"
    assert len(back) == 3
    for e, (ep, (_, z, dyn, tok, u8)) in enumerate(zip(back, episodes)):
        n = len(ep)
        assert ep.metadata["episode_id"] == f"ep{e}" and ep.metadata["n"] == n and type(ep.metadata["n"]) is np.int32
        assert ep.metadata["info"]["w"].tolist() == [e, 0.5, -1] and ep.metadata["info"]["w"].dtype == np.float32
        cols = ep.columns
        assert cols["observation/lossy64"].tobytes() == z.astype(np.float32).astype(np.float64).tobytes()
        assert cols["observation/z"].tobytes() == z.tobytes()
        assert all(a.dtype == np.int16 and np.array_equal(a, b) for a, b in zip(cols["observation/dyn"], dyn))
        assert all(a.dtype == np.int32 and np.array_equal(a, b) for a, b in zip(cols["observation/tok"], tok))
        assert np.array_equal(cols["observation/u8"], u8) and cols["observation/u8"].dtype == np.uint8
        assert list(cols["observation/lang"]) == ["pick \u00e9"] * n and list(cols["observation/raw"]) == [bytes([t]) for t in range(n)]
        assert list(cols["is_first"]) == [True] + [False] * (n - 1) and cols["is_first"].dtype == bool


def test_import_refuses_what_it_cannot_hold(tmp_path):
    audio = {"pythonClassName": P + "audio_feature.Audio", "audio": {"shape": {"dimensions": ["-1"]}}}
    depth = {"pythonClassName": P + "image_feature.Image",
             "image": {"dtype": "uint16", "encodingFormat": "png", "shape": {"dimensions": ["4", "4", "1"]}}}
    rec = tfe.encode_example({**_core_values(1), "steps/action": ("int64", [0])})
    for i, (feature, why) in enumerate([(audio, "audio_feature.Audio' is not supported"), (depth, "Image of dtype uint16")]):
        d = _tfds_dir(tmp_path / f"a{i}", {**CORE, "action": _tensor("int64"), "observation": _fdict({"wrist": feature})},
                      {}, [rec, rec])
        with pytest.raises(ConversionError, match=f"feature 'steps/observation/wrist': .*{why}"):
            import_tfds(d, tmp_path / "back")
        assert not (tmp_path / "back").exists()
    d = _tfds_dir(tmp_path / "b", {k: v for k, v in CORE.items() if k != "discount"} | {"action": _tensor("int64"), "observation": _tensor("int64")}, {}, [rec, rec])
    with pytest.raises(ConversionError, match="discount"):
        import_tfds(d, tmp_path / "back")
    bad = tfe.encode_example({**_core_values(1), "steps/action": ("int64", [0]), "steps/observation": ("bytes", [b"\xff"])})
    d = _tfds_dir(tmp_path / "c", {**CORE, "action": _tensor("int64"), "observation": {"pythonClassName": P + "text_feature.Text", "text": {}}}, {}, [bad, bad])
    with pytest.raises(ConversionError, match="'observation'.*not UTF-8"):
        import_tfds(d, tmp_path / "back")


def test_without_our_spec_file_tuples_become_dicts(tmp_path):
    _write(tmp_path / "src", [_table_episode(3, 0)])
    src = open_dataset(tmp_path / "src")
    export_tfds(src, tmp_path / "t")
    (tmp_path / "t" / SPEC_FILE).unlink()
    back = import_tfds(tmp_path / "t", tmp_path / "back")[0]
    ep = src[0]
    assert set(back[0]["action"]) == {"0", "1"}
    assert back.metadata == {"episode_id": np.int64(0)}
    for path, col in ep.columns.items():
        got = back.columns[path]
        for a, b in zip(col, got):  # same values; TFDS dtypes where they are wider (uint32 varying -> int64)
            assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind in "fc"), path
            if np.asarray(a).dtype.kind in "fc":
                assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
    assert back.spec.field("observation/v_u32_2d").dtype == "int64" and back.spec.field("observation/u32").dtype == "uint32"


@pytest.mark.parametrize("dtype, shape", [("complex64", (2,)), ("complex128", ()), ("uint32", (None, None)), ("bool", (0, None))])
def test_leaf_codec_for_dtypes_the_store_cannot_hold_or_rare_shapes(dtype, shape):
    """Complex (bytes encoding; our Arrow store has no complex columns) and dynamic shapes, leaf by leaf."""
    leaf, note = leaf_for("x", dtype, shape)
    assert note is None and leaf.encoding == "bytes"
    rng = np.random.default_rng(0)
    rows = [random_values(rng, dtype, tuple(t if d is None else d for d in shape)) for t in range(4)]
    for encoding in ("bytes", "zlib"):
        lf = Leaf(leaf.path, leaf.kind, leaf.dtype, leaf.shape, encoding)
        feats = {k: (kind, np.asarray(v) if kind != "bytes" else v) for k, (kind, v) in encode_rows(lf, rows, "steps/x").items()}
        feats = tfe.decode_example(tfe.encode_example(feats))
        got = decode_rows(lf, feats, "steps/x", 4)
        assert all(cast(g, dtype).tobytes() == r.tobytes() and np.shape(g) == r.shape for g, r in zip(got, rows))


def test_registry_and_format_detection(tmp_path):
    _write(tmp_path / "src", [Episode.from_steps(simple_steps(3))])
    assert EXPORTERS["tfds"](open_dataset(tmp_path / "src"), tmp_path / "t") is None
    assert detect_format(str(tmp_path / "t")) == "tfds"
    IMPORTERS["tfds"](tmp_path / "t", tmp_path / "back")
    _same(open_dataset(tmp_path / "src"), open_dataset(tmp_path / "back"))
