"""Integrity: checksums, schema checks, and repair that never destroys what it cannot rebuild."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import simple_steps

from seedrl.data import DatasetWriter, open_dataset
from seedrl.data.errors import (
    ChecksumError,
    DamagedSegmentWarning,
    DataError,
    DuplicateEpisodeError,
    SpecError,
    TornTailWarning,
)
from seedrl.data.repair import repair_segment
from seedrl.data.segment import EOS, list_segments, segment_paths
from seedrl.data.stats import unchecked, validate


def _write(path, n=5, steps=3, ids=None):
    with DatasetWriter(path) as w:
        return [w.write_episode(simple_steps(steps, seed=i), metadata={"i": i, **({"episode_id": ids[i]} if ids else {})})
                for i in range(n)]


def _segment(path):
    (seg,) = list_segments(path)
    arrow, index = segment_paths(path, seg)
    return seg, arrow, index


def _flip(path, *positions, zero_tail=0):
    b = bytearray(path.read_bytes())
    for p in positions:
        b[p] ^= 0xFF
    if zero_tail:
        b[-zero_tail:] = bytes(zero_tail)
    path.write_bytes(bytes(b))


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", TornTailWarning)
    warnings.simplefilter("ignore", DamagedSegmentWarning)
    return ctx


def _episodes_equal(path, ids, n_steps=3):
    ctx = _quiet()
    try:
        ds = open_dataset(path)
    finally:
        ctx.__exit__(None, None, None)
    for i, eid in enumerate(ids):
        ref = simple_steps(n_steps, seed=i)
        ep = ds.episode(eid)
        np.testing.assert_array_equal(ep.columns["observation/pos"], np.stack([s["observation"]["pos"] for s in ref]))
        np.testing.assert_array_equal(ep.columns["reward"], np.array([s["reward"] for s in ref]))
    return ds


# ------------------------------------------------------------------ checksums
def test_every_indexed_episode_carries_a_checksum(tmp_path):
    _write(tmp_path)
    lines = [json.loads(x) for x in _segment(tmp_path)[2].read_text().splitlines()]
    assert all(isinstance(x["c"], int) for x in lines)
    ds = open_dataset(tmp_path)
    assert all(ds.verify_episode(i) for i in range(len(ds))) and unchecked(ds) == 0


def test_a_flipped_data_byte_fails_its_checksum(tmp_path):
    ids = _write(tmp_path, n=3)
    _, arrow, _ = _segment(tmp_path)
    e = open_dataset(tmp_path).entries[1]
    _flip(arrow, e.offset + e.length - 40)  # inside the body of episode 1
    assert validate(open_dataset(tmp_path)) == [
        p for p in validate(open_dataset(tmp_path)) if p.startswith("episode 1 ") and "checksum" in p
    ] != []
    ds = open_dataset(tmp_path)
    with pytest.raises(ChecksumError, match=r"episode '.*-1'.*altered"):
        ds[1]
    _episodes_equal(tmp_path, [ids[0]])  # the others still read
    assert len(open_dataset(tmp_path, verify=False)[1]) == 3  # opting out reads the altered bytes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_inside_an_episode_is_reported(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("ds")
    _write(path, n=3, steps=2)
    _, arrow, _ = _segment(path)
    entries = open_dataset(path).entries
    k = data.draw(st.integers(0, len(entries) - 1))
    pos = data.draw(st.integers(entries[k].offset, entries[k].end - 1))
    bit = data.draw(st.integers(0, 7))
    b = bytearray(arrow.read_bytes())
    b[pos] ^= 1 << bit
    arrow.write_bytes(bytes(b))
    problems = validate(open_dataset(path))
    assert any(p.startswith(f"episode {k} ") for p in problems), problems


def test_old_datasets_without_checksums_still_open(tmp_path, capsys):
    ids = _write(tmp_path, n=3)
    _, _, index = _segment(tmp_path)
    lines = [json.loads(x) for x in index.read_text().splitlines()]
    index.write_text("".join(json.dumps({k: v for k, v in x.items() if k not in "ck"}) + "\n" for x in lines))
    ds = _episodes_equal(tmp_path, ids)
    assert validate(ds) == [] and unchecked(ds) == 3 and not ds.verify_episode(0)
    from seedrl.cli import main

    assert main(["data", "validate", str(tmp_path)]) == 0
    assert "valid (3 episode(s) have no checksum" in capsys.readouterr().out


def test_a_dataset_written_before_checksums_opens_validates_and_takes_appends(tmp_path):
    """tests/data/fixtures/v1_no_checksums was written by seedrl before checksums (no "c" in
    its index, no spec in its segment header)."""
    import shutil
    from pathlib import Path

    path = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "fixtures" / "v1_no_checksums", path)
    ds = _episodes_equal(path, ["old0", "old1", "old2"])
    assert validate(ds) == [] and unchecked(ds) == 3
    with DatasetWriter(path) as w:  # appends: the new segment has checksums, the old one is untouched
        w.write_episode(simple_steps(3, seed=3), metadata={"episode_id": "new3", "i": 3})
        with pytest.raises(DuplicateEpisodeError):
            w.write_episode(simple_steps(3, seed=4), metadata={"episode_id": "old1", "i": 4})
    ds = _episodes_equal(path, ["old0", "old1", "old2", "new3"])
    assert validate(ds) == [] and unchecked(ds) == 3


# -------------------------------------------------------------- schema checks
def test_a_dtype_edited_in_dataset_json_is_refused_not_misread(tmp_path):
    _write(tmp_path, n=2)
    info = json.loads((tmp_path / "dataset.json").read_text())
    for f in info["step_spec"]["fields"]:
        if f["path"] == "reward":
            f["dtype"] = "float64"
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(SpecError, match=r"field 'reward' is float in the segment, double in dataset.json"):
        open_dataset(tmp_path)


def test_a_lost_dataset_json_is_an_error_and_repair_rebuilds_it(tmp_path):
    ids = _write(tmp_path, n=2)
    original = json.loads((tmp_path / "dataset.json").read_text())
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(DataError, match="dataset.json: missing, but segments/ holds 1 segment"):
        open_dataset(tmp_path)
    with pytest.warns(UserWarning, match="rebuilt"):
        DatasetWriter(tmp_path).close()
    rebuilt = json.loads((tmp_path / "dataset.json").read_text())
    assert rebuilt["step_spec"] == original["step_spec"] and rebuilt["metadata_spec"] == original["metadata_spec"]
    _episodes_equal(tmp_path, ids)


# ----------------------------------------------------------------- repair
def test_repair_keeps_the_index_of_a_segment_whose_header_is_unreadable(tmp_path):
    """The tester's repro: header bytes flipped and the end-of-stream marker zeroed.
    Repair used to empty the index; the episodes all still decode with it."""
    ids = _write(tmp_path, n=5)
    seg, arrow, index = _segment(tmp_path)
    _flip(arrow, 20, 21, 100, zero_tail=8)
    before_index, before_arrow = index.read_bytes(), arrow.read_bytes()
    with pytest.warns(DamagedSegmentWarning, match="schema header unreadable"):
        ds = open_dataset(tmp_path)
    assert ds.episode_ids == ids
    problems = validate(ds)
    assert len(problems) == 2 and "schema header unreadable" in problems[0] and "8 bytes" in problems[1]
    with pytest.warns(DamagedSegmentWarning, match="left as it is"):
        DatasetWriter(tmp_path).close()
    assert index.read_bytes() == before_index and arrow.read_bytes() == before_arrow  # nothing destroyed
    assert (tmp_path / "set_aside" / f"{seg}.{len(before_arrow) - 8}.torn").read_bytes() == bytes(8)
    _episodes_equal(tmp_path, ids)
    with pytest.warns(DamagedSegmentWarning):
        DatasetWriter(tmp_path).close()  # a second repair sets nothing aside twice
    assert len(list((tmp_path / "set_aside").iterdir())) == 1


def test_a_truncated_segment_is_reported_and_repair_sets_aside_what_it_drops(tmp_path):
    ids = _write(tmp_path, n=4)
    seg, arrow, index = _segment(tmp_path)
    entries = open_dataset(tmp_path).entries
    original, lines = arrow.read_bytes(), index.read_text().splitlines()
    cut = entries[2].offset + entries[2].length // 2
    os.truncate(arrow, cut)
    with pytest.warns(DamagedSegmentWarning, match="2 index entr"):
        ds = open_dataset(tmp_path)
    assert ds.episode_ids == ids[:2]
    problems = validate(ds)
    assert any("point past the end" in p and repr(ids[2]) in p for p in problems)
    from seedrl.data.stats import compute_stats

    assert compute_stats(ds).episodes == 2  # no ArrowIndexError
    with pytest.warns(DamagedSegmentWarning, match="set aside"):
        DatasetWriter(tmp_path).close()
    aside = tmp_path / "set_aside"
    assert (aside / f"{seg}.{entries[2].offset}.index").read_text().splitlines() == lines[2:]
    assert (aside / f"{seg}.{entries[2].offset}.torn").read_bytes() == original[entries[2].offset : cut]
    assert arrow.read_bytes() + (aside / f"{seg}.{entries[2].offset}.torn").read_bytes() == original[:cut]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = open_dataset(tmp_path)
        assert validate(ds) == [] and ds.episode_ids == ids[:2]
    _episodes_equal(tmp_path, ids[:2])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_repair_after_any_truncation_keeps_every_whole_episode_and_sets_aside_the_rest(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("ds")
    ids = _write(path, n=3, steps=2)
    seg, arrow, index = _segment(path)
    original = arrow.read_bytes()
    ends = [e.end for e in open_dataset(path).entries]
    cut = data.draw(st.integers(0, len(original)))
    lose_index = data.draw(st.booleans())  # the index may be lost too: it is rebuilt from the stream
    os.truncate(arrow, cut)
    if lose_index:
        index.unlink()
    ctx = _quiet()
    try:
        repair_segment(path, seg)
        whole = [eid for eid, end in zip(ids, ends) if end <= cut]
        if arrow.exists():
            ds = open_dataset(path)
            assert ds.episode_ids == whole and validate(ds) == []
        else:  # nothing readable: the whole segment went to set_aside/
            assert whole == [] and (path / "set_aside" / arrow.name).read_bytes() == original[:cut]
    finally:
        ctx.__exit__(None, None, None)
    torn = sorted((path / "set_aside").glob("*.torn")) if (path / "set_aside").exists() else []
    kept = arrow.read_bytes() if arrow.exists() else b""
    if arrow.exists():  # no byte is gone: what repair cut off lies in set_aside/
        assert kept + b"".join(p.read_bytes() for p in torn) == original[:cut]
    _episodes_equal(path, whole, n_steps=2)


def test_a_repair_killed_before_truncating_loses_nothing_and_resumes(tmp_path, monkeypatch):
    ids = _write(tmp_path, n=3)
    seg, arrow, _ = _segment(tmp_path)
    with open(arrow, "ab") as fh:
        fh.write(b"\xff\xff\xff\xff\x40\x00\x00\x00partial")

    def killed(*a):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "truncate", killed)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        repair_segment(tmp_path, seg)
    monkeypatch.undo()
    (torn,) = (tmp_path / "set_aside").iterdir()
    assert torn.read_bytes() == EOS + b"\xff\xff\xff\xff\x40\x00\x00\x00partial"  # set aside before the cut
    with pytest.warns(TornTailWarning, match="set aside 23 bytes"):
        repair_segment(tmp_path, seg)
    assert len(list((tmp_path / "set_aside").iterdir())) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate(open_dataset(tmp_path)) == []
    _episodes_equal(tmp_path, ids)


def test_an_unindexed_episode_is_found_in_the_stream_without_a_checksum(tmp_path):
    ids = _write(tmp_path, n=3)
    _, _, index = _segment(tmp_path)
    index.write_text("".join(line + "\n" for line in index.read_text().splitlines()[:2]))  # killed before line 3
    DatasetWriter(tmp_path).close()
    ds = _episodes_equal(tmp_path, ids)
    assert [e.crc is None for e in ds.entries] == [False, False, True] and validate(ds) == []


def test_damaged_index_lines_are_skipped_and_their_episodes_read_from_the_stream(tmp_path):
    ids = _write(tmp_path, n=4)
    seg, _, index = _segment(tmp_path)
    original = index.read_bytes()
    lines = original.decode().splitlines()
    lines[1] = lines[1].replace('"c":', '"c":1', 1)  # a wrong episode checksum
    lines[3] = lines[3].replace('"k":', '"c":', 1)  # the line checksum's key turned into a second "c"
    index.write_text("".join(x + "\n" for x in lines))
    with pytest.warns(DamagedSegmentWarning, match="2 index line"):
        ds = open_dataset(tmp_path)
    assert sorted(ds.episode_ids) == sorted(ids) and [e.crc is None for e in ds.entries] == [False, True, False, True]
    problems = validate(ds)
    assert len(problems) == 1 and "2 index line(s) damaged" in problems[0]  # no episode fails its checksum
    with pytest.warns(DamagedSegmentWarning):
        DatasetWriter(tmp_path).close()
    assert (tmp_path / "set_aside" / f"{seg}.index.damaged").read_text().splitlines() == lines
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate(open_dataset(tmp_path)) == []
    _episodes_equal(tmp_path, ids)


# ------------------------------------------------------------- duplicates
def test_a_duplicate_episode_id_is_refused_and_nothing_is_lost(tmp_path):
    with DatasetWriter(tmp_path) as w:
        w.write_episode(simple_steps(3), metadata={"episode_id": "x", "i": 0})
        with pytest.raises(DuplicateEpisodeError, match="'episode_id': 'x' is already in"):
            w.write_episode(simple_steps(3, seed=1), metadata={"episode_id": "x", "i": 1})
        w.write_episode(simple_steps(3, seed=2), metadata={"episode_id": "y", "i": 2})
    with DatasetWriter(tmp_path) as w:  # a later writer sees the ids already there
        with pytest.raises(DuplicateEpisodeError, match="'y'"):
            w.write_episode(simple_steps(3, seed=3), metadata={"episode_id": "y", "i": 3})
    ds = open_dataset(tmp_path)
    assert ds.episode_ids == ["x", "y"] and [e.metadata["i"] for e in ds] == [0, 2]


# ------------------------------------------------------- any damage, anywhere
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_byte_changed_anywhere_is_reported_or_harmless_and_repair_keeps_the_intact_episodes(tmp_path_factory, data):
    """A flipped byte in a segment or its index: opening refuses with a DataError, or validate
    reports it, or every episode still reads back exactly. After repair, every episode whose
    bytes were not touched is still there."""
    path = tmp_path_factory.mktemp("ds")
    ids = _write(path, n=4, steps=2, ids=["e0", "e1", "e2", "e3"])  # fixed ids: the same bytes every run
    _, arrow, index = _segment(path)
    entries = open_dataset(path).entries
    target = data.draw(st.sampled_from([arrow, index]))
    pos = data.draw(st.integers(0, target.stat().st_size - 1))
    b = bytearray(target.read_bytes())
    b[pos] ^= 1 << data.draw(st.integers(0, 7))
    target.write_bytes(bytes(b))
    hit = {eid for eid, e in zip(ids, entries) if target == arrow and e.offset <= pos < e.end}
    ctx = _quiet()
    try:
        try:
            ds = open_dataset(path)
        except DataError:
            return  # refused with an error naming the file: fine, nothing misread
        if not validate(ds):
            assert len(ds) == len(ids)
            _episodes_equal(path, ids, n_steps=2)
        DatasetWriter(path).close()
        ds = open_dataset(path)
        intact = [eid for eid in ids if eid not in hit]
        assert set(intact) <= set(ds.episode_ids)
        for i, eid in enumerate(ids):
            if eid in intact:
                ds.verify_episode(ds.index_of(eid))
    finally:
        ctx.__exit__(None, None, None)
