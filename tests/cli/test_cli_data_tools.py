"""`seedrl data filter | select | merge`, and `convert` across formats: new datasets, sources untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from seedrl.cli import main
from seedrl.data import DatasetWriter, open_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
sys.path.insert(0, str(Path(__file__).parent))
from strategies import simple_steps  # noqa: E402
from test_cli_data import _one_line_error  # noqa: E402


def _make(path: Path, n: int = 6, prefix: str = "e", reward_dtype=np.float32) -> Path:
    """Episode i: i + 2 steps, every reward i (return i * (i + 2)), agent 'a' or 'b', a step 'info' field."""
    with DatasetWriter(path) as w:
        for i in range(n):
            steps = simple_steps(i + 2, seed=i)
            for s in steps:
                s["reward"] = reward_dtype(i)
                s["info"] = np.int16(i)
            w.write_episode(steps, metadata={"episode_id": f"{prefix}{i}", "agent_id": "ab"[i % 2], "level": i})
    return path


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _same_episodes(out: Path, src: Path, ids: list[str]) -> None:
    got = open_dataset(out)
    ref = open_dataset(src).select(got.spec.paths)
    assert got.episode_ids == ids
    assert all(got.episode(i).equals(ref.episode(i)) for i in ids)  # bit-exact, metadata included


@pytest.fixture
def src(tmp_path):
    return _make(tmp_path / "src")


def test_filter_by_return_length_and_metadata(src, tmp_path, capsys):
    before = _files(src)
    returns = {f"e{i}": i * (i + 2) for i in range(6)}
    assert main(["data", "filter", str(src), str(tmp_path / "rich"), "--where", "return>8"]) == 0
    _same_episodes(tmp_path / "rich", src, [k for k, r in returns.items() if r > 8])
    assert main(["data", "filter", str(src), str(tmp_path / "b"), "--where", "length <= 5",
                 "--metadata", "agent_id=b"]) == 0
    _same_episodes(tmp_path / "b", src, ["e1", "e3"])
    assert main(["data", "filter", str(src), str(tmp_path / "lv"), "--where", "level!=2", "--where", "return<24"]) == 0
    _same_episodes(tmp_path / "lv", src, ["e0", "e1", "e3"])
    assert _files(src) == before  # the source is only read

    for bad, needle in ((["--where", "return>>1"], "--where 'return>>1'"), (["--where", "nokey>1"], "'nokey'"),
                        (["--metadata", "agent_id"], "KEY=VALUE"), (["--where", "agent_id>3"], "cannot compare"),
                        (["--where", "return>1000"], "no episode left"), ([], "at least one")):
        assert main(["data", "filter", str(src), str(tmp_path / "x"), *bad]) == 2
        _one_line_error(capsys, needle)
        assert not (tmp_path / "x").exists()
    assert main(["data", "filter", str(src), str(tmp_path / "rich"), "--where", "return>0"]) == 2
    _one_line_error(capsys, "--overwrite")
    assert main(["data", "filter", str(src), str(tmp_path / "rich"), "--where", "return>0", "--overwrite"]) == 0
    assert len(open_dataset(tmp_path / "rich")) == 5
    assert _files(src) == before


def test_select_episodes_and_fields(src, tmp_path, capsys):
    before = _files(src)
    assert main(["data", "select", str(src), str(tmp_path / "r"), "--episodes", "0:2,-1", "--ids", "e3,e1"]) == 0
    _same_episodes(tmp_path / "r", src, ["e0", "e1", "e5", "e3"])
    assert main(["data", "select", str(src), str(tmp_path / "f"), "--fields", "observation/pos", "--ids", "e2"]) == 0
    out = open_dataset(tmp_path / "f")
    assert sorted(out.spec.paths) == ["action", "discount", "is_first", "is_last", "is_terminal", "observation/pos", "reward"]
    _same_episodes(tmp_path / "f", src, ["e2"])
    assert _files(src) == before
    for bad, needle in ((["--episodes", "9"], "out of range"), (["--episodes", "a:b"], "'a:b'"),
                        (["--ids", "zz"], "'zz'"), (["--fields", "observation/nope"], "observation/nope"),
                        ([], "give --episodes"), (["--episodes", "3:3"], "no episode left")):
        assert main(["data", "select", str(src), str(tmp_path / "x"), *bad]) == 2
        _one_line_error(capsys, needle)
        assert not (tmp_path / "x").exists()


def test_merge_equal_specs_and_refusals(src, tmp_path, capsys):
    other = _make(tmp_path / "other", n=2, prefix="o")
    before = _files(src), _files(other)
    assert main(["data", "merge", str(src), str(other), str(tmp_path / "m")]) == 0
    merged = open_dataset(tmp_path / "m")
    assert merged.episode_ids == [f"e{i}" for i in range(6)] + ["o0", "o1"]
    assert merged.episode("o1").equals(open_dataset(other).episode("o1"))

    assert main(["data", "merge", str(src), str(src), str(tmp_path / "d")]) == 2
    _one_line_error(capsys, "'e0'", "--new-ids")
    assert main(["data", "merge", str(src), str(src), str(tmp_path / "d"), "--new-ids"]) == 0
    assert len(set(map(str, open_dataset(tmp_path / "d").episode_ids))) == 12

    wide = _make(tmp_path / "wide", n=1, prefix="w", reward_dtype=np.float64)
    assert main(["data", "merge", str(src), str(wide), str(tmp_path / "y")]) == 2
    _one_line_error(capsys, "field 'reward': float32[] vs float64[]", str(wide))
    assert main(["data", "merge", str(src), str(tmp_path / "y")]) == 2
    _one_line_error(capsys, "at least two sources")
    assert main(["data", "merge", str(src), str(other), str(src)]) == 2
    _one_line_error(capsys, "holds) the source")
    assert not (tmp_path / "y").exists()
    assert (_files(src), _files(other)) == before


def test_convert_between_formats_round_trips_and_refusals_name_the_field(src, tmp_path, capsys):
    pytest.importorskip("datasets")
    before = _files(src)
    assert main(["data", "convert", str(src), str(tmp_path / "tfds"), "--to", "tfds"]) == 0
    assert main(["data", "convert", str(tmp_path / "tfds"), str(tmp_path / "hf"), "--to", "hf"]) == 0  # tfds -> hf
    assert main(["data", "convert", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    back, ref = open_dataset(tmp_path / "back"), open_dataset(src)
    assert back.episode_ids == ref.episode_ids and all(back[i].equals(ref[i]) for i in range(len(ref)))
    assert _files(src) == before

    text = tmp_path / "text"
    with DatasetWriter(text) as w:
        steps = simple_steps(3)
        for s in steps:
            s["observation"]["note"] = "hi"
        w.write_episode(steps)
    pytest.importorskip("minari")
    assert main(["data", "convert", str(text), str(tmp_path / "mi" / "text-v0"), "--to", "minari"]) == 2
    _one_line_error(capsys, "observation/note")
