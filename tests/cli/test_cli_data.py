"""`seedrl data ...` with bad input and misuse: one-line errors, nothing overwritten or duplicated unasked."""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from seedrl.cli import main
from seedrl.data import DataError, DatasetWriter, open_dataset
from seedrl.data.formats import IMPORTERS

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from strategies import simple_steps  # noqa: E402


def _make(path: Path, n: int = 3, prefix: str = "e") -> Path:
    with DatasetWriter(path) as w:
        for i in range(n):
            w.write_episode(simple_steps(3, seed=i), metadata={"episode_id": f"{prefix}{i}", "agent_id": "a"})
    return path


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("seedrl: error:") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("command", [["info"], ["head"], ["stats"], ["validate"], ["validate", "--repair"]])
def test_bad_paths_are_one_line_errors(tmp_path, capsys, command):
    missing, afile, foreign = tmp_path / "missing", tmp_path / "afile", tmp_path / "foreign"
    afile.write_text("x")
    foreign.mkdir()
    assert main(["data", *command, str(missing)]) == 2
    _one_line_error(capsys, str(missing))
    assert not missing.exists()  # --repair never creates a dataset where there was none
    assert main(["data", *command, str(afile)]) == 2
    _one_line_error(capsys, str(afile))
    assert main(["data", *command, str(foreign)]) == 2
    _one_line_error(capsys, str(foreign), "not an RLDS dataset")
    assert list(foreign.iterdir()) == []


def test_head_by_id_and_bad_counts(tmp_path, capsys):
    ds = _make(tmp_path / "ds")
    assert main(["data", "head", str(ds), "--id", "e2", "-s", "1"]) == 0
    assert "episode 2: 3 steps" in capsys.readouterr().out
    assert main(["data", "head", str(ds), "--id", "nope"]) == 2
    _one_line_error(capsys, "'nope'", str(ds))
    for bad in (["-n", "0"], ["-s", "-1"], ["-n", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(["data", "head", str(ds), *bad])
        assert exit_.value.code == 2
        assert bad[0] in capsys.readouterr().err


def test_checksum_and_dataset_json_errors_through_the_cli(tmp_path, capsys):
    ds = _make(tmp_path / "ds", n=2)
    e = open_dataset(ds).entries[1]
    seg = next((ds / "segments").glob("*.arrow"))
    b = bytearray(seg.read_bytes())
    b[e.end - 40] ^= 0xFF
    seg.write_bytes(bytes(b))
    assert main(["data", "validate", str(ds)]) == 1
    captured = capsys.readouterr()
    assert "episode 1 (e1)" in captured.err and "checksum" in captured.err and "1 problem(s)" in captured.out
    info = json.loads((ds / "dataset.json").read_text())
    info["step_spec"]["fields"][-4]["dtype"] = "int32"  # a dtype edited by hand
    (ds / "dataset.json").write_text(json.dumps(info))
    assert main(["data", "head", str(ds)]) == 2
    _one_line_error(capsys, "does not match", "dataset.json")


def test_a_lost_dataset_json_names_the_fix_and_the_fix_works(tmp_path, capsys):
    ds = _make(tmp_path / "ds", n=2)
    (ds / "dataset.json").unlink()
    assert main(["data", "info", str(ds)]) == 2
    _one_line_error(capsys, "dataset.json: missing", "validate --repair")
    with pytest.warns(UserWarning, match="rebuilt"):
        assert main(["data", "validate", "--repair", str(ds)]) == 0
    assert open_dataset(ds).episode_ids == ["e0", "e1"]


def test_repair_of_the_testers_damaged_segment_keeps_its_index(tmp_path, capsys):
    ds = _make(tmp_path / "ds", n=5)
    seg = next((ds / "segments").glob("*.arrow"))
    index = seg.with_suffix(".index")
    b = bytearray(seg.read_bytes())
    b[20] ^= 0xFF
    b[21] ^= 0xFF
    b[100] ^= 0xFF
    b[-8:] = bytes(8)
    seg.write_bytes(bytes(b))
    size = index.stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["data", "validate", "--repair", str(ds)]) == 1  # still damaged: reported, not destroyed
    assert index.stat().st_size == size and "ds: 5 episodes, 15 steps: 2 problem(s)" in capsys.readouterr().out


def test_convert_refuses_an_existing_destination_unless_told(tmp_path, capsys):
    ds, other = _make(tmp_path / "ds"), _make(tmp_path / "other", n=2, prefix="o")
    hf = tmp_path / "hf"
    assert main(["data", "convert", str(ds), str(hf), "--to", "hf"]) == 0
    before = sorted((p.name, p.read_bytes()) for p in hf.rglob("*") if p.is_file())
    assert main(["data", "convert", str(other), str(hf), "--to", "hf"]) == 2
    _one_line_error(capsys, str(hf), "--overwrite")
    assert sorted((p.name, p.read_bytes()) for p in hf.rglob("*") if p.is_file()) == before
    assert main(["data", "convert", str(other), str(hf), "--to", "hf", "--overwrite"]) == 0
    back = tmp_path / "back"
    assert main(["data", "convert", str(hf), str(back), "--from", "hf"]) == 0
    assert open_dataset(back).episode_ids == ["o0", "o1"]
    assert main(["data", "convert", str(hf), str(tmp_path / "x"), "--from", "hf", "--to", "seedrl", "--append"]) == 0
    assert main(["data", "convert", str(ds), str(hf), "--to", "tfds", "--append"]) == 2
    _one_line_error(capsys, "--append")
    for dst in (ds, tmp_path):  # the source itself, or a folder holding it: never replaced
        assert main(["data", "convert", str(ds), str(dst), "--to", "hf", "--overwrite"]) == 2
        _one_line_error(capsys, "holds) the source")
    assert open_dataset(ds).episode_ids == ["e0", "e1", "e2"]
    assert not list(tmp_path.glob(".*convert-*"))  # no staging folder left behind


def test_append_imports_new_ids_and_refuses_repeated_ones_atomically(tmp_path, capsys):
    ds, other = _make(tmp_path / "ds"), _make(tmp_path / "other", n=2, prefix="o")
    hf = tmp_path / "hf"
    assert main(["data", "convert", str(other), str(hf), "--to", "hf"]) == 0
    assert main(["data", "convert", str(hf), str(ds), "--from", "hf"]) == 2
    _one_line_error(capsys, str(ds), "--append")
    assert main(["data", "convert", str(hf), str(ds), "--from", "hf", "--append"]) == 0
    assert open_dataset(ds).episode_ids == ["e0", "e1", "e2", "o0", "o1"]
    segments = sorted(p.name for p in (ds / "segments").iterdir())
    assert main(["data", "convert", str(hf), str(ds), "--from", "hf", "--append"]) == 2
    _one_line_error(capsys, "'o0'", "nothing was appended")
    assert sorted(p.name for p in (ds / "segments").iterdir()) == segments
    assert open_dataset(ds).episode_ids == ["e0", "e1", "e2", "o0", "o1"]


def test_a_failed_overwrite_leaves_the_destination_as_it_was(tmp_path, capsys, monkeypatch):
    ds, other = _make(tmp_path / "ds"), _make(tmp_path / "other", n=2, prefix="o")
    hf = tmp_path / "hf"
    assert main(["data", "convert", str(other), str(hf), "--to", "hf"]) == 0

    def half_then_fail(src, out):
        IMPORTERS_ORIGINAL(src, out)
        raise DataError("field 'reward': simulated failure after writing")

    IMPORTERS_ORIGINAL = IMPORTERS["hf"]
    monkeypatch.setitem(IMPORTERS, "hf", half_then_fail)
    assert main(["data", "convert", str(hf), str(ds), "--from", "hf", "--overwrite"]) == 2
    _one_line_error(capsys, "simulated failure")
    assert open_dataset(ds).episode_ids == ["e0", "e1", "e2"]
    assert not list(tmp_path.glob(".*convert-*"))


def test_unwritable_destination_and_unknown_formats(tmp_path, capsys, monkeypatch):
    ds = _make(tmp_path / "ds")
    (tmp_path / "afile").write_text("x")
    assert main(["data", "convert", str(ds), str(tmp_path / "afile" / "out"), "--to", "hf"]) == 2
    _one_line_error(capsys, "afile")
    assert main(["data", "convert", str(tmp_path / "nope"), str(tmp_path / "o"), "--to", "hf"]) == 2
    _one_line_error(capsys, "source does not exist")
    assert main(["data", "convert", str(ds), str(tmp_path / "o"), "--to", "zarr"]) == 2
    _one_line_error(capsys, "--to 'zarr'")
    assert main(["data", "convert", str(tmp_path / "afile"), str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "cannot tell the format")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)  # root ignores chmod: deny where the CLI first writes
    assert main(["data", "convert", str(ds), str(tmp_path / "ro" / "out"), "--to", "hf"]) == 2
    _one_line_error(capsys, "PermissionError", "ro")


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: d[:100], "not valid JSON"),
        (lambda d: json.dumps({k: v for k, v in json.loads(d).items() if k != "step_spec"}), "'step_spec'"),
        (lambda d: d.replace('"uint8"', '"float99"'), "float99"),
        (lambda d: "[1, 2]", "not a seedrl RLDS dataset"),
        (lambda d: d.replace('"version": 1', '"version": 99'), "format version 99"),
    ],
)
def test_a_damaged_dataset_json_is_one_line_naming_it(tmp_path, capsys, damage, needle):
    ds = _make(tmp_path / "ds", n=1)
    (ds / "dataset.json").write_text(damage((ds / "dataset.json").read_text()))
    for command in (["info"], ["head"], ["stats"], ["validate"], ["validate", "--repair"]):
        assert main(["data", *command, str(ds)]) == 2
        _one_line_error(capsys, str(ds / "dataset.json"), needle)


def test_a_truncated_segment_through_the_cli(tmp_path, capsys):
    import os

    ds = _make(tmp_path / "ds", n=3)
    e = open_dataset(ds).entries[1]
    seg = next((ds / "segments").glob("*.arrow"))
    os.truncate(seg, e.offset + 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["data", "validate", str(ds)]) == 1
        assert "point past the end" in capsys.readouterr().err
        assert main(["data", "stats", str(ds)]) == 0
        assert "ds: 1 episodes" in capsys.readouterr().out
        assert main(["data", "validate", "--repair", str(ds)]) == 0
    assert "ds: 1 episodes, 3 steps: valid" in capsys.readouterr().out
    assert sorted(p.suffix for p in (ds / "set_aside").iterdir()) == [".index", ".torn"]
    assert len((ds / "set_aside" / f"{seg.stem}.{e.offset}.index").read_text().splitlines()) == 2


@pytest.mark.parametrize("bug", [KeyError("segments"), ValueError("shapes (3,) and (4,) not aligned")])
def test_a_bug_inside_a_data_command_keeps_its_traceback(tmp_path, monkeypatch, bug):
    """Only the store's own input errors (DataError) print one line; a plain KeyError or
    ValueError from inside `seedrl data` is a bug and must not be hidden as bad input."""
    other = _make(tmp_path / "other", n=1, prefix="o")

    def broken(src, out):
        raise bug

    monkeypatch.setitem(IMPORTERS, "hf", broken)
    with pytest.raises(type(bug)):
        main(["data", "convert", str(other), str(tmp_path / "x"), "--from", "hf"])
