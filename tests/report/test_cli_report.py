"""``seedrl report``: writes the page, one-line errors for bad input, an old page kept when a run is bad."""

from __future__ import annotations

import json

from seedrl.cli import main


def _run(path, name="r"):
    path.mkdir()
    (path / "config.yaml").write_text(f"name: {name}\nseed: 0\n")
    (path / "metrics.jsonl").write_text("".join(json.dumps({"frames": i, "updates": i, "loss": 1.0 / (i + 1)}) + "\n"
                                                for i in range(5)))
    return str(path)


def test_writes_one_page_with_the_title(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", _run(tmp_path / "a"), _run(tmp_path / "b", "b"), "--out", str(out), "--title", "T<1>"]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>T&lt;1&gt;</title>" in page
    assert 'id="config"' in page and 'id="curves"' in page
    assert "wrote" in capsys.readouterr().err and not (tmp_path / "r.html.tmp").exists()


def test_bad_input_is_one_line_and_the_old_page_stays(tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("old page")
    good = _run(tmp_path / "a")
    cases = [([], "RUN_DIR: give at least one run folder"),
             ([good, str(tmp_path / "missing")], "is not a folder"),
             ([good, "--max-points", "3"], "--max-points: 3 is below 10")]
    for args, message in cases:
        assert main(["report", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("seedrl: error: ") and message in err and "\n" not in err
        assert out.read_text() == "old page"
    assert main(["report", good, "--out", str(tmp_path)]) == 2
    assert "--out: " in capsys.readouterr().err
