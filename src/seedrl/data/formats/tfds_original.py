"""The TFDS features a dataset was imported with, kept so that export gives them back.

``import_tfds`` of a directory tfds wrote records in the dataset's config
(``dataset.json``), next to the source's name, version and split:

- ``config["tfds"]["features"]``: the source ``features.json``, verbatim;
- ``config["tfds"]["class_names"]``: ``{feature path: [names]}`` of every
  ``ClassLabel`` whose names file tfds wrote (``steps-action.labels.txt`` for
  ``steps/action``); a ClassLabel's values are int64 in the store.

``export_tfds`` reuses them when the dataset still has exactly the fields
they describe (episode metadata the source lacks, such as the ``episode_id``
the store adds, joins them as new top-level features): ``ClassLabel`` (with its names file), ``BBoxFeature``, an
``Image`` without ``encodingFormat``, a ``Sequence`` / ``Dataset`` of a
``FeaturesDict`` inside a step and ``Tensor`` encodings all come back as
they were. Otherwise (fields added, dropped or retyped) the features are
made from the spec (:func:`~seedrl.data.formats.tfds_features.leaf_for`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from seedrl.data.errors import ConversionError
from seedrl.data.formats.tfds_features import Leaf, _class, features_json, field_of, parse_features
from seedrl.data.spec import StepSpec


def label_files(fj: Mapping) -> dict[str, str]:
    """``{feature path: names file name}`` of the ClassLabels in a ``features.json``."""
    out: dict[str, str] = {}

    def walk(node: Mapping, path: str, fname: str) -> None:
        cls = _class(node)
        if cls == "ClassLabel":
            out[path] = f"{fname}.labels.txt"
        elif cls == "FeaturesDict":
            for key, child in node.get("featuresDict", {}).get("features", {}).items():
                child_name = key.replace("/", ".")
                walk(child, f"{path}/{key}" if path else key, f"{fname}-{child_name}" if fname else child_name)
        elif cls in ("Sequence", "Dataset"):
            walk(node.get("sequence", {}).get("feature", {}), path, fname)

    walk(fj, "", "")
    return out


def read_class_names(src: Path, fj: Mapping) -> dict[str, list[str]]:
    """The names of each ClassLabel whose names file is in ``src``."""
    names = {}
    for path, fname in label_files(fj).items():
        if (src / fname).exists():
            names[path] = (src / fname).read_text(encoding="utf-8").splitlines()
    return names


def write_class_names(out: Path, fj: Mapping, names: Mapping[str, Sequence[str]]) -> None:
    for path, fname in label_files(fj).items():
        if path in names:
            (out / fname).write_text("".join(f"{n}\n" for n in names[path]), encoding="utf-8")


def source_config(info: Mapping, split: str, fj: Mapping, src: Path) -> dict:
    """The ``config`` an import from a tfds-written directory records (see the module doc)."""
    tfds = {k: info.get(k) for k in ("name", "version")} | {"split": split, "features": fj}
    names = read_class_names(src, fj)
    return {"tfds": tfds | ({"class_names": names} if names else {})}


def reusable(config: Mapping, spec: StepSpec, meta_leaves: Sequence[Leaf]) -> tuple[dict, list[Leaf], dict] | None:
    """``(features.json, step leaves, class names)`` of the source, if ``spec`` and the
    episode metadata still match it exactly; else None."""
    tfds = config.get("tfds") if isinstance(config, Mapping) else None
    fj = tfds.get("features") if isinstance(tfds, Mapping) else None
    if not isinstance(fj, Mapping):
        return None
    try:
        step_leaves, _, ep_leaves, _ = parse_features(fj)
    except ConversionError:
        return None
    ours = {f.path: f for f in spec.fields}
    if {leaf.path: field_of(leaf) for leaf in step_leaves} != ours:
        return None
    theirs, mine = {leaf.path: leaf for leaf in ep_leaves}, {leaf.path: leaf for leaf in meta_leaves}
    top = fj["featuresDict"].get("features", {})
    added = [leaf for path, leaf in mine.items() if path not in theirs]  # e.g. the episode_id the store adds
    if any(mine.get(p) != leaf for p, leaf in theirs.items()) or any(x.path.split("/")[0] in top for x in added):
        return None
    by_path = {leaf.path: leaf for leaf in step_leaves}
    extra = features_json([], added)["featuresDict"]["features"]
    extra.pop("steps")
    out = {**fj, "featuresDict": {**fj["featuresDict"], "features": {**top, **extra}}}
    return out, [by_path[f.path] for f in spec.fields], dict(tfds.get("class_names") or {})
