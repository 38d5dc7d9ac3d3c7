"""Probe: what a TFDS/RLDS dataset directory looks like on disk (not a test).

Run in the pinned compat environment:

    .venv-compat/bin/python tests/compat/probe_tfds_layout.py [--keep DIR]

It
  1. builds an RLDS-style FeaturesDict with real tfds and prints features.json;
  2. writes a tiny dataset with tfds's own writer (store_as_tfds_dataset) and
     prints the directory listing, dataset_info.json and a shard record decoded
     with seedrl's TF-free decoder (so the flattened key layout is visible);
  3. hand-writes the same dataset WITHOUT tfds's writer (features.json copied,
     a minimal dataset_info.json, a shard written with seedrl.data.formats) and
     checks that tfds.builder_from_directory(dir).as_dataset("train") loads it
     and gives back the same values;
  4. strips dataset_info.json field by field to show which fields matter;
  5. repeats the encoding probe for pos with encoding='zlib'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from seedrl.data.formats import tf_example as tfe  # noqa: E402
from seedrl.data.formats import tfrecord as tfr  # noqa: E402

tf.get_logger().setLevel("ERROR")
try:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
except ImportError:  # pragma: no cover
    pass


def banner(title: str) -> None:
    print("\n" + "=" * 78 + f"\n{title}\n" + "=" * 78)


def make_features(pos_encoding) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "episode_id": tfds.features.Text(),  # episode-level metadata field
            "steps": tfds.features.Dataset(
                {
                    "is_first": tfds.features.Scalar(dtype=np.bool_),
                    "is_last": tfds.features.Scalar(dtype=np.bool_),
                    "is_terminal": tfds.features.Scalar(dtype=np.bool_),
                    "observation": tfds.features.FeaturesDict(
                        {
                            "pixels": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
                            "pos": tfds.features.Tensor(
                                shape=(2,), dtype=np.float64, encoding=pos_encoding
                            ),
                        }
                    ),
                    "action": tfds.features.Scalar(dtype=np.int64),
                    "reward": tfds.features.Scalar(dtype=np.float32),
                    "discount": tfds.features.Scalar(dtype=np.float32),
                    "text": tfds.features.Text(),
                }
            ),
        }
    )


def make_episode(i: int, n_steps: int) -> dict:
    rng = np.random.default_rng(i)
    steps = []
    for t in range(n_steps):
        steps.append(
            {
                "is_first": t == 0,
                "is_last": t == n_steps - 1,
                "is_terminal": t == n_steps - 1 and i % 2 == 0,
                "observation": {
                    "pixels": rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8),
                    # values that float32 would round: checks the float64 is lossless
                    "pos": np.array([0.1 * t + i, -1.0 / 3.0 - t], dtype=np.float64),
                },
                "action": np.int64(-(2**40) + t if t == 1 else t),
                "reward": np.float32(0.5 * t),
                "discount": np.float32(1.0 if t < n_steps - 1 else 0.0),
                "text": f"step {t} of episode {i} \u00e9",
            }
        )
    return {"episode_id": f"ep-{i:03d}", "steps": steps}


def show_decoded(record: bytes, pos_encoding: str) -> None:
    dec = tfe.decode_example(record)
    for key in sorted(dec):
        kind, vals = dec[key]
        if kind == "bytes":
            shown = [v if len(v) <= 48 else v[:48] + b"..." for v in vals]
            print(f"  {key!r}: ({kind!r}, {len(vals)} values) {shown}")
        else:
            print(f"  {key!r}: ({kind!r}, dtype={vals.dtype}) {vals.tolist()}")
    # interpret the byte-encoded tensors
    pos = dec.get("steps/observation/pos")
    if pos:
        for j, raw in enumerate(pos[1]):
            if pos_encoding == "zlib":
                arr = np.frombuffer(zlib.decompress(raw), dtype="<f8")
                how = "np.frombuffer(zlib.decompress(v), '<f8')"
            else:
                arr = np.frombuffer(raw, dtype="<f8")
                how = "np.frombuffer(v, '<f8')"
            print(f"    steps/observation/pos[{j}] -> {how}: {arr.tolist()}")
    pix = dec.get("steps/observation/pixels")
    if pix:
        print(f"    steps/observation/pixels: kind={pix[0]} with {len(pix[1])} values")


def features_json_of(features) -> dict:
    """The exact dict tfds writes to features.json (FeatureConnector.save_config)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(features.to_proto())


def tfds_load(builder_dir: Path) -> list[dict]:
    builder = tfds.builder_from_directory(str(builder_dir))
    ds = builder.as_dataset(split="train", shuffle_files=False)
    out = []
    for ep in ds:
        steps = list(tfds.as_numpy(ep["steps"]))
        out.append(
            {
                "episode_id": ep["episode_id"].numpy(),
                "steps": steps,
            }
        )
    return out


def check_equal(loaded: list[dict], episodes: list[dict]) -> None:
    assert len(loaded) == len(episodes), (len(loaded), len(episodes))
    for got, ep in zip(loaded, episodes):
        assert got["episode_id"] == ep["episode_id"].encode()
        assert len(got["steps"]) == len(ep["steps"])
        for gs, s in zip(got["steps"], ep["steps"]):
            for k in ("is_first", "is_last", "is_terminal"):
                assert bool(gs[k]) == s[k] and gs[k].dtype == np.bool_, k
            assert np.array_equal(gs["observation"]["pixels"], s["observation"]["pixels"])
            assert gs["observation"]["pixels"].dtype == np.uint8
            assert gs["observation"]["pos"].dtype == np.float64
            assert gs["observation"]["pos"].tobytes() == s["observation"]["pos"].tobytes()
            assert gs["action"] == s["action"] and gs["action"].dtype == np.int64
            assert gs["reward"] == s["reward"] and gs["reward"].dtype == np.float32
            assert gs["discount"] == s["discount"]
            assert gs["text"] == s["text"].encode()


def our_encode_episode(ep: dict, zlib_pos: bool) -> bytes:
    """Serialize an episode exactly like tfds does, with seedrl's encoder only."""
    steps = ep["steps"]

    def col(fn):
        return [fn(s) for s in steps]

    pos_bytes = col(lambda s: np.asarray(s["observation"]["pos"], "<f8").tobytes())
    if zlib_pos:
        pos_bytes = [zlib.compress(b) for b in pos_bytes]
    return tfe.encode_example(
        {
            "episode_id": ("bytes", [ep["episode_id"]]),
            "steps/is_first": ("int64", col(lambda s: int(s["is_first"]))),
            "steps/is_last": ("int64", col(lambda s: int(s["is_last"]))),
            "steps/is_terminal": ("int64", col(lambda s: int(s["is_terminal"]))),
            # uint8 Tensor, encoding=none: an int64_list of all steps' pixels, C order
            "steps/observation/pixels": (
                "int64",
                np.concatenate([s["observation"]["pixels"].reshape(-1) for s in steps]),
            ),
            "steps/observation/pos": ("bytes", pos_bytes),
            "steps/action": ("int64", col(lambda s: int(s["action"]))),
            "steps/reward": ("float", col(lambda s: s["reward"])),
            "steps/discount": ("float", col(lambda s: s["discount"])),
            "steps/text": ("bytes", col(lambda s: s["text"])),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="write under this directory and keep it")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="tfds_probe_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"tensorflow {tf.__version__}  tensorflow_datasets {tfds.__version__}  root={root}")

    episodes = [make_episode(i, n) for i, n in enumerate([3, 1, 4])]

    # ---------------------------------------------------------------- 1 + 2
    for enc_name, enc in [("bytes", tfds.features.Encoding.BYTES), ("zlib", tfds.features.Encoding.ZLIB)]:
        features = make_features(enc)
        banner(f"[{enc_name}] features.json (= MessageToDict(features.to_proto()), what save_config writes)")
        features_json = features_json_of(features)
        print(json.dumps(features_json, indent=2, sort_keys=True))
        data_dir = root / f"tfds_{enc_name}"
        builder = tfds.dataset_builders.store_as_tfds_dataset(
            name=f"probe_rlds_{enc_name}",
            version="1.0.0",
            features=features,
            split_datasets={"train": [(f"ep{i}", ep) for i, ep in enumerate(episodes)]},
            data_dir=str(data_dir),
            disable_shuffling=True,
        )
        bdir = Path(builder.data_dir)
        banner(f"[{enc_name}] files in {bdir}")
        for p in sorted(bdir.iterdir()):
            print(f"  {p.name}  ({p.stat().st_size} bytes)")
        banner(f"[{enc_name}] dataset_info.json")
        print((bdir / "dataset_info.json").read_text())
        feats_on_disk = json.loads((bdir / "features.json").read_text())
        assert feats_on_disk == features_json, "features.json != MessageToDict(to_proto())"
        print("features.json on disk == MessageToDict(features.to_proto()): True")

        shards = sorted(p for p in bdir.iterdir() if ".tfrecord-" in p.name)
        records = [r for s in shards for r in tfr.read_records(s)]
        banner(f"[{enc_name}] shard record 0 decoded with seedrl (episode 0: 3 steps)")
        show_decoded(records[0], enc_name)

        # does tfds write exactly our bytes?
        ours = [our_encode_episode(ep, enc_name == "zlib") for ep in episodes]
        print(f"  key order inside the tfds-written record: {key_order(records[0])}")
        same = [_same(a, b) for a, b in zip(records, ours)]
        print(f"  tfds records decode equal to seedrl-built records: {same}")
        print(f"  ... byte-identical: {[a == b for a, b in zip(records, ours)]}")
        canon = [tf.train.Example.FromString(r).SerializeToString(deterministic=True) for r in records]
        print(
            "  ... byte-identical to TF's deterministic re-serialization of the tfds record: "
            f"{[a == b for a, b in zip(canon, ours)]}"
        )

        loaded = tfds_load(bdir)
        check_equal(loaded, episodes)
        print("  tfds.builder_from_directory(...).as_dataset('train') round trip: OK")

        # ------------------------------------------------------------ 3
        banner(f"[{enc_name}] hand-written dataset (no tfds writer) loads with tfds")
        hand = root / f"hand_{enc_name}" / "probe_rlds" / "1.0.0"
        hand.mkdir(parents=True, exist_ok=True)
        (hand / "features.json").write_text(json.dumps(features_json, indent=4, sort_keys=True))
        shard = hand / "probe_rlds-train.tfrecord-00000-of-00001"
        tfr.write_records(shard, ours)
        info = {
            "name": "probe_rlds",
            "version": "1.0.0",
            "fileFormat": "tfrecord",
            "splits": [
                {
                    "name": "train",
                    # tfds writes the sum of the serialized examples (no TFRecord framing)
                    "numBytes": str(sum(len(r) for r in ours)),
                    "shardLengths": [str(len(ours))],
                    "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                }
            ],
        }
        print(json.dumps(info, indent=2))
        (hand / "dataset_info.json").write_text(json.dumps(info, indent=2))
        check_equal(tfds_load(hand), episodes)
        print("  loads and matches: OK")

        # ------------------------------------------------------------ 4
        if enc_name == "bytes":
            banner("which dataset_info.json fields matter (each removed in turn)")
            variants = {
                "no fileFormat": lambda d: d.pop("fileFormat"),
                "no version": lambda d: d.pop("version"),
                "no name": lambda d: d.pop("name"),
                "no splits[0].numBytes": lambda d: d["splits"][0].pop("numBytes"),
                "no splits[0].filepathTemplate": lambda d: d["splits"][0].pop("filepathTemplate"),
                "no splits[0].shardLengths": lambda d: d["splits"][0].pop("shardLengths"),
                "shardLengths wrong (2 instead of 3)": lambda d: d["splits"][0].update(shardLengths=["2"]),
                "shardLengths as ints": lambda d: d["splits"][0].update(shardLengths=[len(ours)]),
                "two shards [2,1] (files split accordingly)": None,
                "two shards [2,1] + disableShuffling true": None,
                "dir not named <name>/<version>": None,
                "name != shard file prefix": lambda d: d.update(name="other_name"),
                "no features.json": None,
                "features.json in legacy to_json() form": None,
            }
            for label, mutate in variants.items():
                vdir = root / "variants" / label.replace(" ", "_").replace("/", "_").replace("[", "").replace("]", "").replace("(", "").replace(")", "").replace(",", "").replace(".", "_") / "probe_rlds" / "1.0.0"
                if label.startswith("dir not named"):
                    vdir = root / "variants" / "some_dir"
                vdir.mkdir(parents=True, exist_ok=True)
                d = json.loads(json.dumps(info))
                if label.startswith("two shards"):
                    tfr.write_records(vdir / "probe_rlds-train.tfrecord-00000-of-00002", ours[:2])
                    tfr.write_records(vdir / "probe_rlds-train.tfrecord-00001-of-00002", ours[2:])
                    d["splits"][0]["shardLengths"] = ["2", "1"]
                    if "disableShuffling" in label:
                        d["disableShuffling"] = True
                else:
                    shutil.copy(shard, vdir / shard.name)
                    if mutate is not None:
                        mutate(d)
                if label == "features.json in legacy to_json() form":
                    (vdir / "features.json").write_text(json.dumps(features.to_json()))
                elif label != "no features.json":
                    (vdir / "features.json").write_text(json.dumps(features_json))
                (vdir / "dataset_info.json").write_text(json.dumps(d))
                try:
                    got = tfds_load(vdir)
                    try:
                        check_equal(got, episodes)
                        res = "loads, values OK"
                    except AssertionError as e:
                        res = f"loads, but WRONG: {len(got)} episodes ({e!s:.80})"
                except Exception as e:  # noqa: BLE001
                    res = f"FAILS: {type(e).__name__}: {str(e).splitlines()[0][:150]}"
                print(f"  {label:45s} -> {res}")

    # ------------------------------------------------------------------ 6
    banner("how other dtypes/encodings serialize (features.serialize_example)")
    side = tfds.features.FeaturesDict(
        {
            "f64_none": tfds.features.Tensor(shape=(2,), dtype=np.float64),
            "f64_bytes": tfds.features.Tensor(
                shape=(2,), dtype=np.float64, encoding=tfds.features.Encoding.BYTES
            ),
            "u8_bytes": tfds.features.Tensor(
                shape=(2, 2), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
            ),
            "i32": tfds.features.Scalar(dtype=np.int32),
            "flag": tfds.features.Scalar(dtype=np.bool_),
            "str_tensor": tfds.features.Tensor(shape=(), dtype=np.str_),
            "text": tfds.features.Text(),
            "seq_f32": tfds.features.Sequence(tfds.features.Tensor(shape=(2,), dtype=np.float32)),
        }
    )
    value = {
        "f64_none": np.array([0.1, 1e300]),
        "f64_bytes": np.array([0.1, 1e300]),
        "u8_bytes": np.array([[1, 2], [3, 255]], np.uint8),
        "i32": np.int32(-5),
        "flag": True,
        "str_tensor": "abc",
        "text": "t\u00e9xt",
        "seq_f32": np.array([[1, 2], [3, 4], [5, 6]], np.float32),
    }
    rec = side.serialize_example(value)
    print(json.dumps(features_json_of(side)["featuresDict"]["features"]["str_tensor"]))
    for k, (kind, vals) in sorted(tfe.decode_example(rec).items()):
        print(f"  {k!r}: {kind} {vals if kind == 'bytes' else vals.tolist()}")

    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def key_order(record: bytes) -> list[str]:
    """Feature keys in the order they appear on the wire."""
    buf, keys = record, []
    _, _, pos = tfe._tag(buf, 0, len(buf))
    s, e = tfe._read_len(buf, pos, len(buf))
    while s < e:
        _, _, s = tfe._tag(buf, s, e)
        a, s = tfe._read_len(buf, s, e)
        _, _, a = tfe._tag(buf, a, s)
        k0, k1 = tfe._read_len(buf, a, s)
        keys.append(buf[k0:k1].decode())
    return keys


def _same(a: bytes, b: bytes) -> bool:
    da, db = tfe.decode_example(a), tfe.decode_example(b)
    if set(da) != set(db):
        print("   key sets differ:", sorted(set(da) ^ set(db)))
        return False
    ok = True
    for k in da:
        (ka, va), (kb, vb) = da[k], db[k]
        eq = ka == kb and (va == vb if ka == "bytes" else np.array_equal(va, vb))
        if not eq:
            print(f"   {k}: tfds={ka} {va!r:.120}  ours={kb} {vb!r:.120}")
            ok = False
    return ok


if __name__ == "__main__":
    main()
