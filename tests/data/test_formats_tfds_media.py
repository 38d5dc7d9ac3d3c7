"""TFDS Image / Video / ClassLabel / BBoxFeature / nested Sequence features, without TensorFlow.

The same schema written by the real tfds writer and loaded by the real
loaders is checked in tests/compat/test_tfds_openx_compat.py; here: the
on-disk layout tfds uses (measured with tfds 4.9.4), round trips of the
bytes, and the features coming back on export.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tfds_dirs import CORE, P, _core_values, _fdict, _tensor, _tfds_dir

from seedrl.data import ConversionError, DatasetWriter, FieldSpec, StepSpec, open_dataset
from seedrl.data import images as im
from seedrl.data.columns import object_column
from seedrl.data.formats import tf_example as tfe
from seedrl.data.formats import tfrecord as tfr
from seedrl.data.formats.tfds import export_tfds, import_tfds
from seedrl.data.formats.tfds_original import label_files


def _jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _image(shape, fmt=None):
    body = {"dtype": "uint8", "shape": {"dimensions": [str(d) for d in shape]}}
    return {"pythonClassName": P + "image_feature.Image", "image": body | ({"encodingFormat": fmt} if fmt else {})}


def _seq(feature, cls="sequence_feature.Sequence"):
    return {"pythonClassName": P + cls, "sequence": {"feature": feature, "length": "-1"}}


BBOX = {"pythonClassName": P + "bounding_boxes.BBoxFeature", "boundingBox": {"dtype": "float32", "shape": {"dimensions": ["4"]}}}
VIDEO = {"pythonClassName": P + "video_feature.Video",
         "video": {"dtype": "uint8", "encodingFormat": "png", "shape": {"dimensions": ["-1", "3", "2", "3"]}}}


def _records(d):
    return [tfe.decode_example(r) for p in sorted(d.glob("*.tfrecord-*")) for r in tfr.read_records(p)]


@pytest.fixture
def openx(tmp_path):
    """An Open-X-like directory as tfds lays it out: two cameras, language, ClassLabel, BBox, nested sequences."""
    steps = {**CORE,
             "action": {"pythonClassName": P + "class_label_feature.ClassLabel", "classLabel": {"numClasses": "3"}},
             "language_instruction": {"pythonClassName": P + "text_feature.Text", "text": {}},
             "observation": _fdict({
                 "image": _image((4, 5, 3), "jpeg"),
                 "wrist_image": _image((-1, -1, 3)),  # no format: tfds keeps file bytes, here a JPEG and PNGs
                 "clip": VIDEO,
                 "box": BBOX,
                 "boxes": _seq(BBOX),
                 "contacts": _seq(_fdict({"force": _tensor("float32", (2,)), "id": _tensor("int32", cls="scalar.Scalar")})),
                 "sub": _seq(_fdict({"x": _tensor("int64", cls="scalar.Scalar")}), "dataset_feature.Dataset"),
                 "state": _fdict({"joints": _tensor("float64", (2,), "bytes")}),
             })}
    top = {"label": {"pythonClassName": P + "class_label_feature.ClassLabel", "classLabel": {"numClasses": "2"}}}
    rng = np.random.default_rng(0)
    episodes = []
    for e, n in enumerate([3, 2]):
        cam = [_jpeg(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)) for _ in range(n)]
        wrist_px = [rng.integers(0, 256, (2 + t, 3, 3), dtype=np.uint8) for t in range(n)]
        wrist = [_jpeg(a) if t == 0 else im.encode_png(a) for t, a in enumerate(wrist_px)]
        clip = [[im.encode_png(rng.integers(0, 256, (3, 2, 3), dtype=np.uint8)) for _ in range(t)] for t in range(n)]
        joints = rng.normal(size=(n, 2))
        feats = {**_core_values(n), "steps/action": ("int64", np.arange(n) % 3),
                 "steps/language_instruction": ("bytes", ["pick up the \u00e9 block".encode()] * n),
                 "steps/observation/image": ("bytes", cam), "steps/observation/wrist_image": ("bytes", wrist),
                 "steps/observation/clip/ragged_flat_values": ("bytes", [b for c in clip for b in c]),
                 "steps/observation/clip/ragged_row_lengths_0": ("int64", [len(c) for c in clip]),
                 "steps/observation/box": ("float", np.tile([0.1, 0.2, 0.5, 0.6], n)),
                 "steps/observation/boxes/ragged_flat_values": ("float", np.full(4 * (n * (n - 1) // 2), 0.25)),
                 "steps/observation/boxes/ragged_row_lengths_0": ("int64", list(range(n))),
                 "steps/observation/contacts/force/ragged_flat_values": ("float", np.arange(2 * n, dtype=float)),
                 "steps/observation/contacts/force/ragged_row_lengths_0": ("int64", [1] * n),
                 "steps/observation/contacts/id/ragged_flat_values": ("int64", [-(2**31)] * n),
                 "steps/observation/contacts/id/ragged_row_lengths_0": ("int64", [1] * n),
                 "steps/observation/sub/x/ragged_flat_values": ("int64", [2**63 - 1] * (n * (n + 1) // 2)),
                 "steps/observation/sub/x/ragged_row_lengths_0": ("int64", list(range(1, n + 1))),
                 "steps/observation/state/joints": ("bytes", [r.tobytes() for r in joints]),
                 "label": ("int64", [e])}
        episodes.append((tfe.encode_example(feats), cam, wrist, wrist_px, clip, joints))
    d = _tfds_dir(tmp_path, steps, top, [e[0] for e in episodes])
    (d / "steps-action.labels.txt").write_text("left\nright\nup\n")
    (d / "label.labels.txt").write_text("fail\nsuccess\n")
    return d, episodes


def test_import_openx_layout(openx, tmp_path):
    d, episodes = openx
    ds = import_tfds(d, tmp_path / "store")
    spec = ds.spec
    assert spec.field("observation/image") == FieldSpec("observation/image", "uint8", (4, 5, 3), "jpeg")
    assert spec.field("observation/wrist_image") == FieldSpec("observation/wrist_image", "uint8", (None, None, 3), "png")
    assert spec.field("observation/clip") == FieldSpec("observation/clip", "uint8", (None, 3, 2, 3), "png")
    assert spec.field("observation/box") == FieldSpec("observation/box", "float32", (4,))
    assert spec.field("observation/boxes").shape == (None, 4) and spec.field("observation/contacts/force").shape == (None, 2)
    assert spec.field("observation/contacts/id") == FieldSpec("observation/contacts/id", "int32", (None,))
    assert spec.field("observation/sub/x").shape == (None,) and spec.field("action").dtype == "int64"
    cfg = ds.info["config"]["tfds"]
    assert cfg["class_names"] == {"steps/action": ["left", "right", "up"], "label": ["fail", "success"]}
    assert cfg["features"] == json.loads((d / "features.json").read_text())
    for ep, (_, cam, wrist, wrist_px, clip, joints) in zip(ds, episodes):
        cols = ep.columns
        assert list(cols["observation/image"].encoded) == cam  # JPEG bytes kept as they are
        assert list(cols["observation/wrist_image"].encoded)[1:] == wrist[1:]
        assert [a.tobytes() for a in cols["observation/wrist_image"]][1:] == [a.tobytes() for a in wrist_px[1:]]
        assert cols["observation/wrist_image"][0].tobytes() == im.decode(wrist[0]).tobytes()  # PNG of its pixels
        assert [list(r) for r in cols["observation/clip"].encoded] == clip
        assert cols["observation/state/joints"].tobytes() == joints.tobytes()
        assert [len(b) for b in cols["observation/boxes"]] == list(range(len(ep)))
        assert all(x.tolist() == [2**63 - 1] * (t + 1) for t, x in enumerate(cols["observation/sub/x"]))
        assert ep.metadata["label"] in (0, 1)


def test_export_gives_the_source_features_and_bytes_back(openx, tmp_path):
    d, _ = openx
    ds = import_tfds(d, tmp_path / "store")
    assert export_tfds(ds, tmp_path / "out", name="real") is None
    out = tmp_path / "out"
    fj = json.loads((out / "features.json").read_text())
    assert fj["featuresDict"]["features"].pop("episode_id")["pythonClassName"].endswith("Text")  # the store's id
    assert fj == json.loads((d / "features.json").read_text())
    assert (out / "steps-action.labels.txt").read_text() == "left\nright\nup\n"
    assert (out / "label.labels.txt").read_text() == "fail\nsuccess\n"
    src, back = _records(d), _records(out)
    assert len(src) == len(back)
    for a, b in zip(src, back):
        # every feature the same; the one JPEG in the format-less wrist camera is PNG of the same pixels now
        assert set(a) == set(b) - {"episode_id"}
        for key in a:
            if key != "steps/observation/wrist_image":
                assert a[key][0] == b[key][0] and np.asarray(a[key][1]).tobytes() == np.asarray(b[key][1]).tobytes(), key
        assert a["steps/observation/wrist_image"][1][1:] == b["steps/observation/wrist_image"][1][1:]
    again = import_tfds(out, tmp_path / "again")
    assert all(x.equals(y) for x, y in zip(ds, again))


def test_changed_dataset_exports_features_made_from_its_spec(openx, tmp_path):
    d, _ = openx
    ds = import_tfds(d, tmp_path / "store").select(
        ["is_first", "is_last", "is_terminal", "reward", "discount", "action", "observation/image", "observation/clip"])
    export_tfds(ds, tmp_path / "out", name="sel")
    feats = json.loads((tmp_path / "out" / "features.json").read_text())
    step = feats["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    assert step["observation"]["featuresDict"]["features"]["image"] == _image((4, 5, 3), "jpeg")
    assert step["observation"]["featuresDict"]["features"]["clip"] == VIDEO
    assert step["action"]["pythonClassName"].endswith("Scalar") and not label_files(feats)
    back = import_tfds(tmp_path / "out", tmp_path / "back")
    for x, y in zip(ds, back):
        assert list(x.columns["observation/image"].encoded) == list(y.columns["observation/image"].encoded)
        assert [list(r) for r in x.columns["observation/clip"].encoded] == [list(r) for r in y.columns["observation/clip"].encoded]


def test_encoded_fields_of_our_own_export_as_images(tmp_path):
    rng = np.random.default_rng(1)
    n = 3
    blobs = [_jpeg(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)) for _ in range(n)]
    steps = [{"is_first": t == 0, "is_last": t == n - 1, "is_terminal": False,
              "observation": {"cam": blobs[t], "depth": rng.integers(0, 256, (4, 4, 1), dtype=np.uint8),
                              "clip": object_column([im.encode_png(rng.integers(0, 256, (2, 2, 4), dtype=np.uint8))] * t)},
              "action": np.float32(t), "reward": np.float32(0), "discount": np.float32(1)} for t in range(n)]
    base = StepSpec.infer({**steps[0], "observation": {"cam": np.zeros((4, 4, 3), np.uint8),
                                                       "depth": steps[0]["observation"]["depth"], "clip": np.zeros(1)}})
    fields = {"observation/cam": FieldSpec("observation/cam", "uint8", (4, 4, 3), "jpeg"),
              "observation/depth": FieldSpec("observation/depth", "uint8", (4, 4, 1), "png"),
              "observation/clip": FieldSpec("observation/clip", "uint8", (None, 2, 2, 4), "png")}
    spec = StepSpec(base.treedef, tuple(fields.get(f.path, f) for f in base.fields))
    with DatasetWriter(tmp_path / "src", spec) as w:
        w.write_episode(steps)
    src = open_dataset(tmp_path / "src")
    export_tfds(src, tmp_path / "out")
    rec = _records(tmp_path / "out")[0]
    assert rec["steps/observation/cam"] == ("bytes", blobs)
    assert rec["steps/observation/clip/ragged_row_lengths_0"][1].tolist() == [0, 1, 2]
    back = import_tfds(tmp_path / "out", tmp_path / "back")
    assert back.spec == spec and back[0].equals(src[0])
    assert list(back[0].columns["observation/depth"].encoded) == list(src[0].columns["observation/depth"].encoded)


def test_features_it_cannot_map_are_named_with_their_path(tmp_path):
    rec = tfe.encode_example({**_core_values(1), "steps/action": ("int64", [0])})
    cases = [
        (_seq(_seq(_tensor("int32", cls="scalar.Scalar"))), "steps/observation/wrist': a Sequence of ragged"),
        (_seq(_fdict({"inner": _seq(_fdict({"x": _tensor("int32", cls="scalar.Scalar")}))})),
         "steps/observation/wrist/inner': a Sequence of a FeaturesDict inside another"),
        (_seq(VIDEO), "steps/observation/wrist': a Sequence of video"),
        (_image((4, 4, -1)), r"steps/observation/wrist': Image of dtype uint8, shape \(4, 4, None\)"),
    ]
    for i, (feature, why) in enumerate(cases):
        d = _tfds_dir(tmp_path / f"c{i}", {**CORE, "action": _tensor("int64"), "observation": _fdict({"wrist": feature})},
                      {}, [rec, rec])
        with pytest.raises(ConversionError, match=why.replace("steps/", "feature 'steps/")):
            import_tfds(d, tmp_path / "back")
    d = _tfds_dir(tmp_path / "top", {**CORE, "action": _tensor("int64"), "observation": _tensor("int64")},
                  {"thumb": _image((4, 4, 3), "png")}, [rec, rec])
    with pytest.raises(ConversionError, match="feature 'thumb': episode-level Image"):
        import_tfds(d, tmp_path / "back")


def test_float64_feature_of_encoding_none_refuses_values_float32_cannot_hold(openx, tmp_path):
    d, _ = openx
    fj = json.loads((d / "features.json").read_text())
    obs = fj["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]["observation"]
    obs["featuresDict"]["features"]["state"]["featuresDict"]["features"]["joints"]["tensor"]["encoding"] = "none"
    src = import_tfds(d, tmp_path / "store")
    cfg = src.info["config"]
    cfg["tfds"]["features"] = fj  # as if the source had stored joints as float_list
    with DatasetWriter(tmp_path / "copy", src.spec, config=cfg) as w:
        for ep in src:
            w.write_episode(ep)
    with pytest.raises(ConversionError, match="'observation/state/joints': float64 values that float32 cannot hold"):
        export_tfds(open_dataset(tmp_path / "copy"), tmp_path / "out", name="real")


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.sampled_from([1, 2, 3, 4]), st.lists(st.integers(0, 3), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_png_images_and_videos_round_trip_through_tfds(tmp_path_factory, width, channels, frames, seed):
    """Arbitrary shapes and channel counts: the bytes and pixels come back exactly."""
    rng = np.random.default_rng(seed)
    n = len(frames)
    steps = [{"is_first": t == 0, "is_last": t == n - 1, "is_terminal": False,
              "observation": {"img": rng.integers(0, 256, (1 + t, width, channels), dtype=np.uint8),
                              "clip": rng.integers(0, 256, (k, 2, width, channels), dtype=np.uint8)},
              "action": np.int8(t), "reward": np.float32(t), "discount": np.float32(1)} for t, k in enumerate(frames)]
    base = StepSpec.infer(steps[:1])
    fields = {"observation/img": FieldSpec("observation/img", "uint8", (None, width, channels), "png"),
              "observation/clip": FieldSpec("observation/clip", "uint8", (None, 2, width, channels), "png")}
    spec = StepSpec(base.treedef, tuple(fields.get(f.path, f) for f in base.fields))
    root = tmp_path_factory.mktemp("rt")
    with DatasetWriter(root / "src", spec) as w:
        w.write_episode(steps)
    src = open_dataset(root / "src")
    export_tfds(src, root / "tfds")
    back = import_tfds(root / "tfds", root / "back")
    a, b = src[0], back[0]
    assert back.spec == spec and a.equals(b)
    for path in fields:
        assert [bytes(x) if isinstance(x, bytes) else list(x) for x in a.columns[path].encoded] == \
            [bytes(x) if isinstance(x, bytes) else list(x) for x in b.columns[path].encoded]
    for t, s in enumerate(steps):
        assert b[t]["observation"]["img"].tobytes() == s["observation"]["img"].tobytes()
        assert b[t]["observation"]["clip"].tobytes() == s["observation"]["clip"].tobytes()
