"""Checkpoint manifests: every truncation and every flipped byte is caught; loading falls back
to the newest whole checkpoint; saving is atomic and prunes manifests with their checkpoints."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seedrl.runtime.checkpoint import (
    list_checkpoints,
    list_folder_checkpoints,
    load_checkpoint,
    read_newest,
    save_checkpoint,
    save_folder_checkpoint,
    set_aside,
)
from seedrl.runtime.errors import CheckpointError
from seedrl.runtime.manifest import manifest_path, verify, write_manifest


def _folder(root, files: dict[str, bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    write_manifest(root)
    return root


@given(data=st.binary(min_size=1, max_size=300), where=st.integers(0, 10**6), bit=st.integers(0, 7),
       cut=st.integers(0, 10**6))
def test_any_flipped_bit_or_truncation_is_caught(tmp_path_factory, data, where, bit, cut):
    root = _folder(tmp_path_factory.mktemp("ck"), {"model.safetensors": data, "anchor/weights.bin": b"x" * 7})
    assert verify(root) is None
    target = root / "model.safetensors"
    flipped = bytearray(data)
    flipped[where % len(data)] ^= 1 << bit
    target.write_bytes(bytes(flipped))
    assert "SHA-256" in verify(root)
    target.write_bytes(data[: cut % len(data)])  # truncated, possibly to empty
    assert "bytes" in verify(root)
    target.write_bytes(data)
    assert verify(root) is None


def test_missing_files_and_manifests_are_named(tmp_path):
    root = _folder(tmp_path / "c", {"a.bin": b"1", "sub/b.bin": b"22"})
    (root / "sub" / "b.bin").unlink()
    assert verify(root) == "sub/b.bin is missing"
    (root / "MANIFEST.json").write_text("{not json")
    assert verify(root).startswith("unreadable manifest")
    (root / "MANIFEST.json").unlink()
    assert verify(root) == "no manifest"
    assert verify(tmp_path / "nowhere") == "missing"


def test_a_file_checkpoint_has_a_sidecar_and_is_verified_on_load(tmp_path):
    path = save_checkpoint(tmp_path, {"counters": {"updates": 5}, "w": torch.arange(4)})
    assert manifest_path(path).name == path.name + ".manifest.json"
    assert json.loads(manifest_path(path).read_text())["files"].keys() == {path.name}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(path)["w"].tolist() == [0, 1, 2, 3]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="damaged.*truncated"):
        load_checkpoint(path)


def test_a_run_folder_loads_its_newest_whole_checkpoint(tmp_path, caplog):
    for updates in (1, 2, 3):
        save_checkpoint(tmp_path, {"counters": {"updates": updates}}, keep=3)
    newest = list_checkpoints(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(tmp_path)["counters"]["updates"] == 2
    assert "ckpt-000000003.pt is damaged" in caplog.text
    for p in list_checkpoints(tmp_path)[:-1]:
        p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*ckpt-000000001.pt: .*0 bytes"):
        load_checkpoint(tmp_path)


def test_read_newest_falls_back_only_over_damage(tmp_path):
    def write(folder):
        (folder / "state.pt").write_bytes(b"state")

    paths = [save_folder_checkpoint(tmp_path, s, write, keep=5) for s in (2, 4, 6)]
    assert list_folder_checkpoints(tmp_path) == paths
    (paths[2] / "state.pt").write_bytes(b"")  # truncated to empty
    path, value, damaged = read_newest(paths, lambda p: (p / "state.pt").read_bytes())
    assert path == paths[1] and value == b"state" and [p for p, _ in damaged] == [paths[2]]
    # a whole checkpoint its reader cannot read is no damage: an error, not a silent fallback
    with pytest.raises(CheckpointError, match="matches its manifest but cannot be read"):
        read_newest(paths[:2], lambda p: 1 / 0)
    # without a manifest (written before manifests) a reader failure is damage
    (paths[1] / "MANIFEST.json").unlink()
    path, _, damaged = read_newest(paths[:2], lambda p: (p / "state.pt").read_bytes() if p == paths[0] else 1 / 0)
    assert path == paths[0] and "ZeroDivisionError" in damaged[0][1]


def test_saving_prunes_manifests_and_set_aside_hides_a_checkpoint(tmp_path):
    for updates in (1, 2, 3):
        save_checkpoint(tmp_path, {"counters": {"updates": updates}}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt-000000002.pt", "ckpt-000000002.pt.manifest.json",
                     "ckpt-000000003.pt", "ckpt-000000003.pt.manifest.json"]
    moved = set_aside(list_checkpoints(tmp_path)[-1])
    assert moved.name == "ckpt-000000003.pt.damaged"
    assert (tmp_path / "checkpoints" / "ckpt-000000003.pt.manifest.json.damaged").exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000002.pt"]
    folder = save_folder_checkpoint(tmp_path, 7, lambda f: (f / "x").write_text("x"), keep=1)
    assert set_aside(folder).name == "checkpoint-7.damaged" and list_folder_checkpoints(tmp_path) == []
