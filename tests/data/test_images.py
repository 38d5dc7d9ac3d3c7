"""Encoded-image fields: PNG lossless round trips, JPEG bytes kept, lazy decode, refusals."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from seedrl.data import DatasetWriter, Episode, FieldSpec, SpecError, StepSpec, open_dataset
from seedrl.data import images as im
from seedrl.data.columns import object_column
from seedrl.data.images import EncodedImages


def _jpeg(a: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _steps(frames, key="img"):
    n = len(frames)
    return [{"is_first": t == 0, "is_last": t == n - 1, "is_terminal": False, "observation": {key: frames[t]},
             "action": np.int32(t), "reward": np.float32(t), "discount": np.float32(1)} for t in range(n)]


def _image_spec(steps, shape, encoding):
    spec = StepSpec.infer(steps[:1])
    img = FieldSpec("observation/img", "uint8", shape, encoding)
    return StepSpec(spec.treedef, tuple(img if f.path == img.path else f for f in spec.fields))


images_strategy = st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.integers(1, 4),
                            st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None)
@given(images_strategy)
def test_png_codec_is_lossless_for_any_shape_and_channels(params):
    h, w, c, _, seed = params
    a = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    a.flat[0], a.flat[-1] = 0, 255
    b = im.encode_png(a)
    assert im.header(b) == ("png", (h, w, c))
    back = im.decode(b)
    assert back.dtype == np.uint8 and back.shape == a.shape and back.tobytes() == a.tobytes()


@settings(max_examples=15, deadline=None)
@given(images_strategy, st.booleans())
def test_store_round_trip_png_from_arrays_bit_exact(tmp_path_factory, params, varying):
    h, w, c, n, seed = params
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (h + (t if varying else 0), w, c), dtype=np.uint8) for t in range(n)]
    steps = _steps(frames)
    spec = _image_spec(steps, (None if varying else h, w, c), "png")
    root = tmp_path_factory.mktemp("png")
    with DatasetWriter(root / "d", spec) as wr:
        wr.write_episode(steps)
    ep = open_dataset(root / "d")[0]
    col = ep.columns["observation/img"]
    assert isinstance(col, EncodedImages) and len(col) == n
    for t in range(n):
        assert col[t].tobytes() == frames[t].tobytes() and col[t].shape == frames[t].shape
        assert ep[t]["observation"]["img"].tobytes() == frames[t].tobytes()
    # copying the episode into another store keeps the bytes
    with DatasetWriter(root / "copy") as wr:
        wr.write_episode(ep)
    again = open_dataset(root / "copy")[0]
    assert list(again.columns["observation/img"].encoded) == list(col.encoded)
    assert again.equals(ep)


def test_jpeg_bytes_are_kept_byte_identical_and_decoded_on_read(tmp_path):
    rng = np.random.default_rng(3)
    raw = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(3)]
    blobs = [_jpeg(a, q) for a, q in zip(raw, (50, 75, 95))]
    steps = _steps(blobs)
    spec = StepSpec.infer(_steps(raw)).with_images({"observation/img": "jpeg"})
    with DatasetWriter(tmp_path / "d", spec) as w:
        w.write_episode(steps)
    ds = open_dataset(tmp_path / "d")
    col = ds[0].columns["observation/img"]
    assert list(col.encoded) == blobs
    for t, b in enumerate(blobs):
        assert col[t].tobytes() == im.decode(b).tobytes() and col[t].shape == (6, 7, 3)
        assert np.abs(col[t].astype(int) - np.asarray(Image.open(io.BytesIO(b)))).max() <= 8  # some IDCT of the same bytes
    assert np.asarray(col).shape == (3, 6, 7, 3)
    batch = ds.read_batch(0)
    assert batch.column("observation/img").to_pylist() == blobs  # the Arrow column is the bytes
    with DatasetWriter(tmp_path / "copy") as w:  # a copy through Episode keeps the JPEG bytes
        w.write_episode(ds[0])
    assert list(open_dataset(tmp_path / "copy")[0].columns["observation/img"].encoded) == blobs


def test_lazy_column_decodes_only_what_is_read(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(5)]
    spec = StepSpec.infer(_steps(frames)).with_images({"observation/img": "png"})
    with DatasetWriter(tmp_path / "d", spec) as w:
        w.write_episode(_steps(frames))
    calls = []
    real = im.decode
    monkeypatch.setattr(im, "decode", lambda b: calls.append(1) or real(b))
    ds = open_dataset(tmp_path / "d")
    ep = ds[0]
    assert calls == []  # reading the episode decodes nothing
    assert ep.columns["observation/img"][2].tobytes() == frames[2].tobytes() and len(calls) == 1
    ds.select(["reward"])[0]
    assert len(calls) == 1
    out = ds.sample_steps(2, rng=1)
    assert out["observation/img"].shape == (2, 4, 4, 3) and len(calls) == 3


def test_refusals_name_the_field(tmp_path):
    with pytest.raises(SpecError, match="'obs/img'.*uint8"):
        FieldSpec("obs/img", "uint16", (4, 4, 3), "png")
    with pytest.raises(SpecError, match="'obs/img'.*1 or 3 channels"):
        FieldSpec("obs/img", "uint8", (4, 4, 4), "jpeg")
    with pytest.raises(SpecError, match="'obs/img'.*encoding must be"):
        FieldSpec("obs/img", "uint8", (4, 4, 3), "gif")
    f = FieldSpec("obs/img", "uint8", (4, 4, 3), "jpeg")
    a = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(SpecError, match="'obs/img'.*lossy"):
        f.check(a)
    with pytest.raises(SpecError, match="'obs/img'.*png bytes for a jpeg field"):
        f.check(im.encode_png(a))
    with pytest.raises(SpecError, match=r"'obs/img'.*shape \(5, 4, 3\)"):
        f.check(_jpeg(np.zeros((5, 4, 3), np.uint8)))
    with pytest.raises(SpecError, match="'obs/img'.*not a PNG or JPEG"):
        f.check(b"garbage")
    p = FieldSpec("obs/img", "uint8", (4, 4, 3), "png")
    with pytest.raises(SpecError, match=r"'obs/img'.*expected uint8"):
        p.check(np.zeros((4, 4, 3), np.float32))
    # a refused episode leaves what was written untouched
    frames = [np.full((4, 4, 3), t, np.uint8) for t in range(2)]
    spec = StepSpec.infer(_steps(frames)).with_images({"observation/img": "png"})
    with DatasetWriter(tmp_path / "d", spec) as w:
        w.write_episode(_steps(frames))
        with pytest.raises(SpecError, match="observation/img"):
            w.write_episode(_steps([frames[0], b"not an image"]))
    ds = open_dataset(tmp_path / "d")
    assert len(ds) == 1 and np.asarray(ds[0].columns["observation/img"]).tobytes() == np.stack(frames).tobytes()


def test_spec_json_keeps_the_encoding_and_raw_stays_the_default():
    frames = [np.zeros((2, 3, 1), np.uint8)]
    spec = StepSpec.infer(_steps(frames))
    assert spec.field("observation/img").encoding is None  # inferred image fields are raw uint8
    enc = spec.with_images({"observation/img": "png"})
    assert StepSpec.from_json(enc.to_json()) == enc and enc != spec
    assert "encoding" not in spec.field("observation/img").to_json()  # old specs' JSON unchanged
    assert "uint8 png" in enc.describe()


def test_video_field_keeps_frame_bytes_and_varying_frame_counts(tmp_path):
    rng = np.random.default_rng(5)
    clips = [[rng.integers(0, 256, (3, 4, 3), dtype=np.uint8) for _ in range(t)] for t in (2, 0, 3)]
    blobs = [[_jpeg(f) for f in clip] for clip in clips]
    steps = _steps([np.zeros((1, 3, 4, 3), np.uint8)] * 3)
    spec = _image_spec(steps, (None, 3, 4, 3), "jpeg")
    with DatasetWriter(tmp_path / "d", spec) as w:
        w.write_episode(_steps([object_column(b) for b in blobs]))
    col = open_dataset(tmp_path / "d")[0].columns["observation/img"]
    assert [list(r) for r in col.encoded] == blobs
    assert [col[t].shape for t in range(3)] == [(2, 3, 4, 3), (0, 3, 4, 3), (3, 3, 4, 3)]
    for t, clip in enumerate(blobs):
        want = np.stack([im.decode(b) for b in clip]) if clip else np.zeros((0, 3, 4, 3))
        assert col[t].tobytes() == want.astype(np.uint8).tobytes()
    # png video from arrays: lossless
    frames = rng.integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    pspec = _image_spec(steps[:1], (2, 3, 4, 3), "png")
    ep = Episode.from_steps(_steps([frames]), spec=pspec)
    assert np.asarray(ep.columns["observation/img"]).tobytes() == frames.tobytes()
    with pytest.raises(SpecError, match=r"'observation/img'.*\(2, 3, 4, 3\) frames"):
        Episode.from_steps(_steps([object_column([im.encode_png(frames[0])])]), spec=pspec)


@pytest.mark.parametrize("gray", [False, True])
def test_jpeg_decodes_as_tf_does_with_simplejpeg_and_warns_without(monkeypatch, gray):
    rng = np.random.default_rng(9)
    a = np.cumsum(rng.integers(0, 40, (17, 23, 3)), axis=1).astype(np.uint8)
    b = _jpeg(a[..., :1] if gray else a)  # 4:2:0 chroma for colour: the upsampler matters
    c = 1 if gray else 3
    sj = pytest.importorskip("simplejpeg")  # the images extra; tests/compat checks it against TF itself
    want = sj.decode_jpeg(b, colorspace="GRAY" if gray else "RGB", fastdct=True, fastupsample=False).reshape(17, 23, c)
    assert im.decode(b).tobytes() == want.tobytes()
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # as if not installed
    with pytest.warns(UserWarning, match="simplejpeg"):
        got = im.decode(b)
    assert got.shape == (17, 23, c) and got.tobytes() == np.asarray(Image.open(io.BytesIO(b))).reshape(17, 23, c).tobytes()


def test_stats_validate_and_transforms_read_decoded_pixels(tmp_path):
    from seedrl.data import stats
    from seedrl.data import transforms as T

    rng = np.random.default_rng(2)
    eps = [[rng.integers(0, 256, (3, 2, 1), dtype=np.uint8) for _ in range(n)] for n in (2, 3)]
    spec = StepSpec.infer(_steps(eps[0])).with_images({"observation/img": "png"})
    with DatasetWriter(tmp_path / "d", spec) as w:
        for frames in eps:
            w.write_episode(_steps(frames))
    ds = open_dataset(tmp_path / "d")
    pixels = np.concatenate([np.stack(f) for f in eps]).astype(np.float64)
    s = stats.compute_stats(ds).fields["observation/img"]
    assert s.count == pixels.size and s.minimum == pixels.min() and s.maximum == pixels.max()
    assert s.mean == pytest.approx(pixels.mean())
    assert stats.validate(ds) == []
    mean, _ = T.mean_and_std(ds, "observation/img")
    assert np.allclose(mean["observation/img"], pixels.mean(axis=0))  # observations count every step
    both = T.concatenate(ds[0], ds[1])
    assert isinstance(both.columns["observation/img"], EncodedImages)
    assert np.asarray(both.columns["observation/img"]).tobytes() == np.concatenate([np.stack(f) for f in eps]).tobytes()
