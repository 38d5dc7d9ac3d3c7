"""The episode browser's data: summaries, game and language details, frames, bounds of the written page."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest

from seedrl.cli import main
from seedrl.data import DatasetWriter, StepSpec, open_dataset
from seedrl.report.html.episode_data import (
    episode_detail,
    frame_steps,
    image_fields,
    summaries,
    to_hwc,
    token_labels,
    vector_fields,
)
from tests.report.episode_sets import COMPLETIONS, REWARDS, game_dataset, game_frame, game_return, language_dataset


def _png(uri: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_game_summaries_and_detail_hold_the_known_values(tmp_path):
    ds = open_dataset(game_dataset(tmp_path / "g", episodes=3))
    rows = summaries(ds)
    assert [(r["id"], r["steps"], r["return"]) for r in rows] == [(f"g{e}", 4 + e, game_return(e)) for e in range(3)]
    assert rows[1]["meta"] == {"agent_id": "actor-1"} and summaries(ds, limit=2, start=1)[0]["id"] == "g1"
    d = episode_detail(ds[2], 2)
    assert d["kind"] == "game" and d["reward"] == [0.5 * t - 2 for t in range(6)]
    assert d["action"] == {"action": [(t + 2) % 3 for t in range(6)]}
    assert d["vectors"] == {"observation/state": [[t, -2] for t in range(6)]}
    assert d["frame_steps"] == list(range(6))
    for t, uri in enumerate(d["frames"]["observation/pixels"]):
        np.testing.assert_array_equal(_png(uri), game_frame(2, t))  # lossless PNG of the stored frame


def test_long_episodes_keep_a_bounded_number_of_frames():
    for n, k in ((5, 8), (1000, 8), (401, 400), (10_000, 400)):
        steps = frame_steps(n, k)
        assert len(steps) == min(n, k) and steps[0] == 0 and steps[-1] == n - 1 and steps == sorted(set(steps))


def test_frame_layouts_and_which_fields_are_frames():
    assert to_hwc(np.ones((9, 10), np.uint8)).shape == (9, 10, 1)
    stacked = np.stack([np.full((9, 10), i, np.uint8) for i in range(4)])  # Atari's (4, 84, 84) frame stack
    assert (to_hwc(stacked) == 3).all() and to_hwc(stacked).shape == (9, 10, 1)
    obs = {"rgb": np.zeros((20, 30, 3), np.uint8), "stack": np.zeros((4, 84, 84), np.uint8),
           "tiny": np.zeros((3, 3), np.uint8), "grid": np.zeros((9, 9), np.float32), "state": np.zeros(4, np.float32)}
    spec = StepSpec.infer({"observation": obs, "action": np.int64(0), "reward": np.float32(0),
                           "discount": np.float32(1), "is_first": True, "is_last": True, "is_terminal": True})
    assert [f.path for f in image_fields(spec)] == ["observation/rgb", "observation/stack"]
    # a 3x3 uint8 is a vector; a 9x9 float grid (81 numbers) is too big to list per step
    assert [f.path for f in vector_fields(spec)] == ["observation/tiny", "observation/state"]


def test_encoded_png_frames_are_passed_through_byte_for_byte(tmp_path):
    frames = [game_frame(0, t) for t in range(3)]
    steps = [{"observation": f, "action": np.int64(0), "reward": np.float32(1), "discount": np.float32(1),
              "is_first": t == 0, "is_last": t == 2, "is_terminal": t == 2} for t, f in enumerate(frames)]
    spec = StepSpec.infer(steps).with_images({"observation": "png"})
    with DatasetWriter(tmp_path / "png", spec) as w:
        w.write_episode(steps)
    ep = open_dataset(tmp_path / "png")[0]
    d = episode_detail(ep, 0)
    stored = ep.columns["observation"].encoded
    assert [base64.b64decode(u.split(",", 1)[1]) for u in d["frames"]["observation"]] == [bytes(b) for b in stored]


def test_language_detail_prompt_completion_reward_and_logprobs(tmp_path):
    ds = open_dataset(language_dataset(tmp_path / "lm"))
    rows = summaries(ds)
    assert [r["return"] for r in rows] == REWARDS and "Name a prime." in rows[1]["text"]
    d = episode_detail(ds[0], 0)
    turn = d["turns"][0]
    assert d["kind"] == "language" and d["logprob_field"] == "behaviour_logprobs"
    assert turn["completion"] == COMPLETIONS[0] and turn["reward"] == 1.0
    assert turn["labels"] == list(COMPLETIONS[0]) and turn["tokens"] == list(range(100, 100 + len(COMPLETIONS[0])))
    assert turn["logprobs"] == [-0.25 * j for j in range(len(COMPLETIONS[0]))]
    assert token_labels("ab", [7, 8, 9]) == ["#7", "#8", "#9"]  # no character per token: the ids


def test_written_page_is_bounded_summaries_for_all_details_for_k(tmp_path):
    game_dataset(tmp_path / "g", episodes=30)
    out = tmp_path / "p.html"
    assert main(["report", "--data", str(tmp_path / "g"), "--episodes", "3", "--max-episodes", "20", "--out", str(out)]) == 0
    page = out.read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data-episodes-0">(.*?)</script>', page).group(1))
    assert data["total"] == 30 and len(data["episodes"]) == 20 and list(data["details"]) == ["g0", "g1", "g2"]
    assert "the first 20 listed" in page and 'src="http' not in page and "cdn" not in page.lower()


def test_bad_data_paths_and_options_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "p.html"
    for args, message in ((["--data", str(tmp_path)], "is not an RLDS dataset"),
                          (["--data", str(game_dataset(tmp_path / "g", 1)), "--episodes", "-1"], "--episodes: -1 is negative")):
        assert main(["report", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert not out.exists()


def test_a_run_folders_episodes_are_browsed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: r\n")
    (run / "metrics.jsonl").write_text('{"frames": 1, "loss": 1}\n')
    game_dataset(run / "episodes", episodes=2)
    out = tmp_path / "p.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert 'id="episodes-0"' in out.read_text() and "Episodes: run/episodes" in out.read_text()


def test_multi_turn_language_episode_sums_its_rewards(tmp_path):
    from seedrl.envs.text.steps import completion_spec, completion_step

    steps = [completion_step("Q1", [1], "ab", [5, 6], 0.5, {"behaviour_logprobs": np.array([-1.0, -2.0], np.float32)},
                             is_first=True, is_last=False, is_terminal=False),
             completion_step("Q1 ab Q2", [1, 5, 6, 2], "xyz!", [7, 8], 2.0,
                             {"behaviour_logprobs": np.array([-0.5, -0.25], np.float32)}, is_first=False)]
    with DatasetWriter(tmp_path / "chat", completion_spec(steps)) as w:
        w.write_episode(steps, metadata={"episode_id": "c0"})
    ds = open_dataset(tmp_path / "chat")
    assert summaries(ds)[0]["return"] == 2.5 and "Q1 ab Q2" in summaries(ds)[0]["text"]
    turns = episode_detail(ds[0], 0)["turns"]
    assert [t["reward"] for t in turns] == [0.5, 2.0] and turns[1]["prompt"] == "Q1 ab Q2"
    assert turns[0]["labels"] == ["a", "b"] and turns[1]["labels"] == ["#7", "#8"]  # 4 characters, 2 tokens
    assert turns[1]["logprobs"] == [-0.5, -0.25]


def test_jpeg_frames_keep_their_bytes_and_mime(tmp_path):
    from PIL import Image

    def jpeg(t):
        buf = io.BytesIO()
        Image.fromarray(game_frame(0, t)).save(buf, format="JPEG")
        return buf.getvalue()

    steps = [{"observation": jpeg(t), "action": np.int64(0), "reward": np.float32(0), "discount": np.float32(1),
              "is_first": t == 0, "is_last": t == 1, "is_terminal": t == 1} for t in range(2)]
    spec = StepSpec.infer([{**s, "observation": game_frame(0, 0)} for s in steps]).with_images({"observation": "jpeg"})
    with DatasetWriter(tmp_path / "jpg", spec) as w:
        w.write_episode(steps)
    uris = episode_detail(open_dataset(tmp_path / "jpg")[0], 0)["frames"]["observation"]
    assert [u.split(",")[0] for u in uris] == ["data:image/jpeg;base64"] * 2
    assert [base64.b64decode(u.split(",", 1)[1]) for u in uris] == [jpeg(0), jpeg(1)]
