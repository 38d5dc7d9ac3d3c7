"""Key maps: default maps per action space, the held-keys -> action rule, and errors naming the field and value."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium import spaces

from seedrl.play.keys import KeyMap, KeyMapError, default_key_map, load_key_map, meaning_keys, parse_key_map

PONG = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]


def test_discrete2_default_is_arrows_with_action_0_when_no_key():
    km = default_key_map(spaces.Discrete(2))
    assert km.action(["ArrowLeft"]) == 0 and km.action(["ArrowRight"]) == 1
    assert km.action([]) == 0 and km.action(["KeyQ"]) == 0
    assert km.keys == ["ArrowLeft", "ArrowRight"]
    assert isinstance(km.action(["ArrowRight"]), np.int64)


def test_atari_meanings_map_to_arrows_and_space_with_noop_default():
    km = default_key_map(spaces.Discrete(6), PONG)
    assert km.to_json() == {"keys": {"Space": 1, "ArrowRight": 2, "ArrowLeft": 3, "ArrowRight+Space": 4,
                                     "ArrowLeft+Space": 5}, "default": 0}
    assert km.action([]) == 0
    assert km.action(["Space"]) == 1
    assert km.action(["ArrowRight", "Space"]) == 4  # the largest entry the held keys cover wins
    assert km.action(["ArrowLeft", "Space", "KeyZ"]) == 5
    assert meaning_keys("UPRIGHTFIRE") == "ArrowUp+ArrowRight+Space"
    assert meaning_keys("NOOP") is None


def test_full_atari_action_set_has_a_key_combo_for_every_action_but_noop():
    meanings = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
                "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE",
                "DOWNLEFTFIRE"]
    km = default_key_map(spaces.Discrete(18), meanings)
    assert sorted(int(a) for _, a in km.entries) == list(range(1, 18))
    for i, m in enumerate(meanings[1:], start=1):  # pressing exactly a meaning's keys plays that meaning
        assert km.action(meaning_keys(m).split("+")) == i


def test_small_discrete_spaces_use_digits_and_large_ones_need_keys():
    km = default_key_map(spaces.Discrete(4, start=1))
    assert [km.action([f"Digit{i}"]) for i in range(4)] == [1, 2, 3, 4] and km.default == 1
    with pytest.raises(KeyMapError, match="--keys: no default key map for Discrete\\(11\\)"):
        default_key_map(spaces.Discrete(11))
    with pytest.raises(KeyMapError, match="no default key map for Box"):
        default_key_map(spaces.Box(-1, 1, (2,)))


def test_box_actions_from_a_given_map():
    space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    km = parse_key_map({"keys": {"ArrowLeft": [-2.0], "ArrowRight": [2.0]}, "default": [0.0]}, space)
    np.testing.assert_array_equal(km.action(["ArrowRight"]), np.array([2.0], np.float32))
    assert km.action([]).dtype == np.float32
    with pytest.raises(KeyMapError, match=r"key map default: missing; Box"):
        parse_key_map({"ArrowLeft": [-2.0]}, space)
    with pytest.raises(KeyMapError, match=r"keys.ArrowLeft: \[-3.0\] is outside Box"):
        parse_key_map({"keys": {"ArrowLeft": [-3.0]}, "default": [0.0]}, space)
    with pytest.raises(KeyMapError, match=r"keys.ArrowLeft: \[1.0, 2.0\] is not an action of shape \(1,\)"):
        parse_key_map({"keys": {"ArrowLeft": [1.0, 2.0]}, "default": [0.0]}, space)


@pytest.mark.parametrize("data, message", [
    ({"ArrowLeft": 2}, r"key map keys.ArrowLeft: 2 is outside Discrete\(2\)"),
    ({"ArrowLeft": "0"}, r"key map keys.ArrowLeft: '0' is not an integer action"),
    ({"ArrowLeft": True}, r"key map keys.ArrowLeft: True is not an integer action"),
    ({"Escape": 0}, r"key map keys.Escape: 'Escape' is reserved"),
    ({"ArrowUp+Enter": 0}, r"key map keys.ArrowUp\+Enter: 'Enter' is reserved"),
    ({"left": 0}, r"key map keys.left: 'left' is not a KeyboardEvent.code"),
    ({"keys": {"ArrowLeft": 0}, "defualt": 1}, r"key map: unknown field 'defualt'"),
    ({"keys": {"ArrowLeft": 0}, "default": 5}, r"key map default: 5 is outside Discrete\(2\)"),
    ({"keys": {}}, r"key map keys: empty"),
    ({"keys": [0, 1]}, r"key map keys: expected an object"),
    ({"KeyA+KeyB": 0, "KeyB+KeyA": 1}, r"key map keys.KeyB\+KeyA: the same keys as 'KeyA\+KeyB'"),
])
def test_bad_maps_name_the_field_and_value(data, message):
    with pytest.raises(KeyMapError, match=message):
        parse_key_map(data, spaces.Discrete(2))


def test_load_key_map_inline_file_and_default(tmp_path):
    space = spaces.Discrete(3)
    inline = load_key_map('{"KeyA": 2, "KeyD": 1}', space)
    assert inline.action(["KeyA"]) == 2 and inline.default == 0
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(inline.to_json()))
    assert load_key_map(str(path), space) == inline  # to_json round-trips
    assert load_key_map(None, space) == default_key_map(space)
    with pytest.raises(KeyMapError, match="--keys: 'nope.json' is neither a JSON object nor a JSON file"):
        load_key_map("nope.json", space)
    path.write_text("{not json")
    with pytest.raises(KeyMapError, match=f"--keys file '{path}': not valid JSON"):
        load_key_map(str(path), space)


def test_key_map_equality_is_structural():
    a = parse_key_map({"ArrowLeft": 0}, spaces.Discrete(2))
    assert isinstance(a, KeyMap) and a == parse_key_map({"keys": {"ArrowLeft": 0}, "default": 0}, spaces.Discrete(2))
