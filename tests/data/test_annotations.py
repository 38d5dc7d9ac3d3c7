"""Annotations beside a dataset: round trips through Python, the CLI, filtering and TFDS/HF export;
annotating never changes a segment's bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from seedrl.cli import main
from seedrl.data import DataError, DatasetWriter, open_dataset
from seedrl.data.annotations import ANNOTATIONS_FILE, Annotations, EpisodeAnnotations, label_filter
from seedrl.data.segment import SEGMENTS


def _write(path: Path, n: int = 6) -> Path:
    with DatasetWriter(path) as w:
        for i in range(n):
            k = 3 + i
            w.write_episode([{k_: v[t] for k_, v in cols.items()} for t in range(k)] if (cols := {"observation": np.full((k, 2), i, np.float32), "action": np.arange(k, dtype=np.int64) % 2,
                             "reward": np.full(k, float(i), np.float32), "discount": np.ones(k, np.float32),
                             "is_first": np.arange(k) == 0, "is_last": np.arange(k) == k - 1,
                             "is_terminal": np.arange(k) == k - 1}) else None,
                            metadata={"episode_id": f"ep{i}", "agent_id": "me"})
    return path


def _hashes(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((path / SEGMENTS).iterdir())}


@pytest.fixture
def ds_path(tmp_path):
    return _write(tmp_path / "ds")


def test_python_round_trip_and_replay_semantics(ds_path):
    a = Annotations(ds_path)
    assert a.all() == {} and a.episode("ep1") == EpisodeAnnotations()
    a.label("ep1", "good", author="ann")
    a.label("ep1", "expert")
    a.label("ep1", "good")  # a set: no duplicate
    a.rate("ep1", 4)
    a.rate("ep1", 2.5)  # the last rating counts
    a.note("ep1", "recovers well")
    a.tag("ep1", 3, "mistake here")
    a.tag("ep1", 0, "start")
    a.label("ep2", "bad")
    a.label("ep1", "expert", remove=True)
    a.tag("ep1", 0, "start", remove=True)
    again = Annotations(ds_path)  # read back from the file only
    assert again.episode("ep1") == EpisodeAnnotations(["good"], 2.5, ["recovers well"], {3: ["mistake here"]})
    assert again.with_label("bad") == ["ep2"]
    assert EpisodeAnnotations.from_json(json.loads(json.dumps(again.episode("ep1").to_json()))) == again.episode("ep1")
    assert len(again.records()) == 11  # append-only: every record kept, removals too
    assert again.records()[0]["author"] == "ann"


def test_annotating_never_changes_a_segment_byte(ds_path):
    before = _hashes(ds_path)
    listing = sorted(p.name for p in ds_path.iterdir())
    a = Annotations(ds_path)
    for i in range(6):
        a.label(f"ep{i}", "x")
        a.tag(f"ep{i}", 1, "t")
    main(["data", "annotate", str(ds_path), "--id", "ep0", "--rating", "5", "--note", "n", "--tag", "2:oops"])
    assert _hashes(ds_path) == before
    assert sorted(p.name for p in ds_path.iterdir()) == sorted(listing + [ANNOTATIONS_FILE])
    ds = open_dataset(ds_path)
    assert len(ds) == 6 and ds[0].columns["observation"].shape == (3, 2)


def test_bad_input_names_the_field_and_writes_nothing(ds_path):
    a = Annotations(ds_path)
    with pytest.raises(DataError, match="episode_id 'nope'"):
        a.label("nope", "x")
    with pytest.raises(DataError, match="step 3: episode 'ep0' has steps 0..2"):
        a.tag("ep0", 3, "x")
    with pytest.raises(DataError, match="rating nan"):
        a.rate("ep0", float("nan"))
    with pytest.raises(DataError, match="label ' ': must be a non-empty string"):
        a.label("ep0", " ")
    with pytest.raises(DataError, match="kind 'color'"):
        a.add("ep0", "color", "red")
    with pytest.raises(DataError, match="episode_id 'nope'"):  # all checked before one is written
        a.add_many([{"episode_id": "ep0", "kind": "label", "value": "ok"},
                    {"episode_id": "nope", "kind": "label", "value": "x"}])
    assert not (ds_path / ANNOTATIONS_FILE).exists()


def test_a_torn_last_line_is_ignored_and_cut_by_the_next_write(ds_path):
    a = Annotations(ds_path)
    a.label("ep0", "kept")
    with open(ds_path / ANNOTATIONS_FILE, "ab") as fh:
        fh.write(b'{"episode_id": "ep0", "kind": "lab')  # a crash mid-write
    assert a.episode("ep0").labels == ["kept"]
    a.label("ep0", "next")
    assert a.episode("ep0").labels == ["kept", "next"]
    assert (ds_path / ANNOTATIONS_FILE).read_bytes().count(b"\n") == 2


def test_cli_annotate_show_and_filter_by_label(ds_path, tmp_path, capsys):
    for i in (1, 3, 4):
        assert main(["data", "annotate", str(ds_path), "--id", f"ep{i}", "--label", "good"]) == 0
    main(["data", "annotate", str(ds_path), "--id", "ep4", "--label", "noisy", "--tag", "0:slip"])
    capsys.readouterr()
    main(["data", "annotate", str(ds_path), "--show"])
    shown = json.loads(capsys.readouterr().out)
    assert sorted(shown) == ["ep1", "ep3", "ep4"] and shown["ep4"]["tags"] == {"0": ["slip"]}
    out = tmp_path / "good"
    assert main(["data", "filter", str(ds_path), str(out), "--label", "good", "--without-label", "noisy"]) == 0
    kept = open_dataset(out)
    assert kept.episode_ids == ["ep1", "ep3"]
    # the copied episodes keep their annotations
    assert Annotations(out).all() == {k: v for k, v in Annotations(ds_path).all().items() if k in ("ep1", "ep3")}
    assert main(["data", "filter", str(ds_path), str(tmp_path / "g2"), "--label", "good", "--where", "return>5"]) == 0
    assert open_dataset(tmp_path / "g2").episode_ids == ["ep3", "ep4"]  # returns 3*k: 12, 21
    assert main(["data", "annotate", str(ds_path), "--id", "ep9", "--label", "x"]) == 2
    assert "episode_id 'ep9'" in capsys.readouterr().err


def test_label_filter_against_brute_force(ds_path):
    rng = np.random.default_rng(0)
    a = Annotations(ds_path)
    truth = {f"ep{i}": set() for i in range(6)}
    for _ in range(40):
        eid, lab, rm = f"ep{rng.integers(6)}", "abc"[rng.integers(3)], bool(rng.random() < 0.3)
        a.label(eid, lab, remove=rm)
        (truth[eid].discard if rm else truth[eid].add)(lab)
    ds = open_dataset(ds_path)
    for want, drop in [(["a"], []), (["a", "b"], []), ([], ["c"]), (["b"], ["a"])]:
        got = label_filter(ds, want, drop).episode_ids
        assert got == [e for e, labs in truth.items() if set(want) <= labs and not labs & set(drop)]


def test_annotations_are_exported_to_hf_and_tfds(ds_path, tmp_path):
    pytest.importorskip("datasets")
    Annotations(ds_path).label("ep2", "good")
    Annotations(ds_path).tag("ep2", 1, "mistake here")
    want = Annotations(ds_path).episode("ep2").to_json()
    for fmt in ("hf", "tfds"):
        out, back = tmp_path / fmt, tmp_path / f"{fmt}_back"
        assert main(["data", "convert", str(ds_path), str(out), "--to", fmt]) == 0
        assert main(["data", "convert", str(out), str(back), "--from", fmt]) == 0
        imported = open_dataset(back)
        by_id = {str(ep.metadata["episode_id"]): ep.metadata for ep in imported}
        assert json.loads(by_id["ep2"]["annotations"]) == want
        assert by_id["ep0"]["annotations"] == "{}"
