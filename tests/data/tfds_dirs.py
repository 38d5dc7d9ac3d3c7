"""Directories laid out as tfds writes them (features.json, dataset_info.json, TFRecord shards), by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seedrl.data.formats import tfrecord as tfr

P = "tensorflow_datasets.core.features."


def _tensor(dtype, shape=(), encoding="none", cls="tensor_feature.Tensor"):
    dims = {"dimensions": [str(d) for d in shape]} if shape else {}
    return {"pythonClassName": P + cls, "tensor": {"dtype": dtype, "encoding": encoding, "shape": dims}}


def _fdict(features):
    return {"pythonClassName": P + "features_dict.FeaturesDict", "featuresDict": {"features": features}}


def _tfds_dir(root: Path, step_features: dict, top: dict, records: list[bytes], name="real") -> Path:
    d = root / name / "1.0.0"
    d.mkdir(parents=True)
    fj = _fdict({**top, "steps": {"pythonClassName": P + "dataset_feature.Dataset",
                                  "sequence": {"feature": _fdict(step_features), "length": "-1"}}})
    (d / "features.json").write_text(json.dumps(fj, indent=4, sort_keys=True))
    tfr.write_records(d / f"{name}-train.tfrecord-00000-of-00002", records[:1])
    tfr.write_records(d / f"{name}-train.tfrecord-00001-of-00002", records[1:])
    (d / "dataset_info.json").write_text(json.dumps({"name": name, "version": "1.0.0", "splits": [
        {"name": "train", "shardLengths": ["1", str(len(records) - 1)], "numBytes": "0"}]}))
    return d


CORE = {"is_first": _tensor("bool", cls="scalar.Scalar"), "is_last": _tensor("bool", cls="scalar.Scalar"),
        "is_terminal": _tensor("bool", cls="scalar.Scalar"), "reward": _tensor("float32", cls="scalar.Scalar"),
        "discount": _tensor("float32", cls="scalar.Scalar")}


def _core_values(n: int) -> dict:
    return {"steps/is_first": ("int64", [1] + [0] * (n - 1)), "steps/is_last": ("int64", [0] * (n - 1) + [1]),
            "steps/is_terminal": ("int64", [0] * n), "steps/reward": ("float", np.arange(n) / 4),
            "steps/discount": ("float", np.ones(n))}
