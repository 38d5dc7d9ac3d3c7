"""The reward-vs-KL figure: the run's running-mean path and Best-of-N's points and bound."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from seedrl.report.html.lm_front import front_svg, run_path
from seedrl.report.html.rundata import Run


def _run(kl, reward, frontier=None) -> Run:
    return Run(Path("r"), "r", {}, {"kl": np.asarray(kl, float), "reward": np.asarray(reward, float)}, frontier)


def test_run_path_is_the_running_mean_over_a_tenth_of_the_rows():
    kl = np.arange(20.0)
    reward = np.where(np.arange(20) % 2 == 0, 1.0, 3.0)
    x, y = run_path(_run(kl, reward))  # window 2: (i + i+1)/2 and (1 + 3)/2
    assert x.tolist() == [i + 0.5 for i in range(19)] and y.tolist() == [2.0] * 19
    x, y = run_path(_run([np.nan, 1.0, 2.0], [5.0, np.nan, 4.0]))  # only rows with both
    assert x.tolist() == [2.0] and y.tolist() == [4.0]


def test_front_points_and_bound_and_the_note_without_a_frontier():
    front = [{"n": n, "reward": r, "kl_estimate": k, "kl_bound": b}
             for n, r, k, b in ((1, 0.0, 0.0, 0.0), (4, 1.0, 0.5, np.log(4) - 0.75))]
    svg = front_svg([_run([0.0, 1.0], [0.0, 1.0], front)])
    assert [int(n) for n in re.findall(r'class="bon-point" data-n="(\d+)"', svg)] == [1, 4]
    assert svg.count('class="bon-bound"') == 1 and svg.count('class="run-path"') == 1 and "No run here" not in svg
    # N=1 sits at the plot's lower-left corner (KL 0, the smallest reward): x = LEFT, y = H - BOTTOM
    from seedrl.report.html.lm_front import BOTTOM, H, LEFT

    assert f'cx="{LEFT:.1f}" cy="{H - BOTTOM:.1f}"' in svg
    assert "No run here has a bon_frontier.json" in front_svg([_run([0.0, 1.0], [0.0, 1.0])])


def test_bon_files_of_both_formats_and_a_one_line_error(tmp_path):
    import json

    import pytest

    from seedrl.errors import InputFileError
    from seedrl.report.html.rundata import load_bon

    row = {"n": 2, "reward": 0.5, "kl_estimate": 0.1, "kl_bound": 0.19}
    (tmp_path / "bon_frontier.json").write_text(json.dumps({"rows": [row]}))
    (tmp_path / "bond_fronts.json").write_text(json.dumps({"runs": [], "best_of_n": [row, dict(row, n=4)]}))
    assert load_bon(tmp_path / "bon_frontier.json") == ("bon_frontier.json", [row])
    label, rows = load_bon(tmp_path / "bond_fronts.json")
    svg = front_svg([_run([0.0, 1.0], [0.0, 1.0])], [(label, rows)])
    assert [int(n) for n in re.findall(r'class="bon-point" data-n="(\d+)"', svg)] == [2, 4]
    assert "Best-of-N of bond_fronts.json" in svg and "No run here" not in svg
    (tmp_path / "bad.json").write_text(json.dumps({"rows": [{"n": 1}]}))
    with pytest.raises(InputFileError, match=r"--bon: .*bad.json' has no 'rows' or 'best_of_n' list"):
        load_bon(tmp_path / "bad.json")
    with pytest.raises(InputFileError, match=r"--bon: .*nope.json' is not a readable JSON file"):
        load_bon(tmp_path / "nope.json")
