"""Tests for seedrl.config: typed YAML configs with overrides."""

import dataclasses
import enum
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.config import ConfigError, config_to_dict, format_config_help, load_config, save_config


class Backend(enum.Enum):
    CPU = "cpu"
    GPU = "gpu"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class EnvConfig:
    name: str = field(default="CartPole-v1", metadata={"help": "environment id"})
    kind: Literal["gym", "atari"] = "gym"
    num_envs: int = field(default=4, metadata={"help": "parallel envs", "min": 1, "max": 1024})


@dataclass
class OptimConfig:
    lr: float = field(default=1e-3, metadata={"help": "learning rate", "min_exclusive": 0.0})
    batch_size: int = field(default=32, metadata={"min": 1})
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float | None = None
    warmup: int = 0
    total_steps: int = 1000

    def validate(self) -> None:
        if self.warmup > self.total_steps:
            raise ValueError(f"warmup ({self.warmup}) exceeds total_steps ({self.total_steps})")


@dataclass
class TrainConfig:
    seed: int
    env: EnvConfig = field(default_factory=EnvConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    layers: tuple[int, ...] = field(default=(64, 64), metadata={"min": 1})
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    out_dir: Path = Path("runs")
    backend: Backend = Backend.CPU
    level: Level = Level.LOW
    note: Optional[str] = None
    resume: Path | None = None
    mode: str = field(default="train", metadata={"choices": ["train", "eval"]})
    debug: bool = False


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _error(cls, source=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, source, overrides)
    return str(info.value)


# --- loading


def test_nested_yaml_file(tmp_path):
    path = _write(
        tmp_path,
        """
seed: 7
env: {name: Pong, kind: atari, num_envs: 16}
optim:
  lr: 3e-4
  batch_size: 64
  betas: [0.8, 0.9]
layers: [256, 256, 128]
tags: [a, b]
weights: {policy: 1, value: 0.5}
out_dir: /tmp/run
backend: gpu
level: 2
resume: ckpt/last
""",
    )
    cfg = load_config(TrainConfig, path)
    assert cfg.seed == 7
    assert cfg.env == EnvConfig(name="Pong", kind="atari", num_envs=16)
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.batch_size == 64
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.layers == (256, 256, 128)
    assert cfg.tags == ["a", "b"]
    assert cfg.weights == {"policy": 1.0, "value": 0.5}
    assert isinstance(cfg.weights["policy"], float)
    assert cfg.out_dir == Path("/tmp/run")
    assert cfg.backend is Backend.GPU
    assert cfg.level is Level.HIGH
    assert cfg.resume == Path("ckpt/last")
    assert cfg.note is None


def test_defaults_and_dict_source():
    cfg = load_config(TrainConfig, {"seed": 1})
    assert cfg == TrainConfig(seed=1)
    src = {"seed": 1, "env": {"name": "X"}}
    load_config(TrainConfig, src, ["env.name=Y"])
    assert src == {"seed": 1, "env": {"name": "X"}}  # input not mutated


def test_empty_yaml_file_uses_defaults(tmp_path):
    @dataclass
    class Small:
        a: int = 3

    assert load_config(Small, _write(tmp_path, "")) == Small()


def test_overrides_beat_file(tmp_path):
    path = _write(tmp_path, "seed: 1\nenv: {name: Pong}\noptim: {lr: 0.1}\n")
    cfg = load_config(
        TrainConfig,
        path,
        ["optim.lr=3e-4", "env.name=CartPole-v1", "layers=[64,64]", "seed=2", "note=null", "debug=true"],
    )
    assert cfg.optim.lr == 3e-4
    assert cfg.env.name == "CartPole-v1"
    assert cfg.layers == (64, 64)
    assert cfg.seed == 2 and cfg.note is None and cfg.debug is True


def test_override_later_wins_and_creates_nested():
    cfg = load_config(TrainConfig, None, ["seed=1", "seed=5", "weights.policy=2", "optim.betas=[0.1, 0.2]"])
    assert cfg.seed == 5
    assert cfg.weights == {"policy": 2.0}
    assert cfg.optim.betas == (0.1, 0.2)


def test_override_keeps_raw_text_for_str_fields():
    cfg = load_config(TrainConfig, {"seed": 0}, ["env.name=1", "note=yes", "out_dir=007"])
    assert cfg.env.name == "1"
    assert cfg.note == "yes"
    assert cfg.out_dir == Path("007")
    with pytest.raises(ConfigError, match=r"'tags\[0\]': expected str, got 1 \(int\)"):
        load_config(TrainConfig, {"seed": 0}, ["tags=[1, x]"])


def test_override_optional_str_null_and_enum_text():
    cfg = load_config(TrainConfig, {"seed": 0, "note": "hi"}, ["note=null", "backend=gpu", "level=2"])
    assert cfg.note is None and cfg.backend is Backend.GPU and cfg.level is Level.HIGH
    assert load_config(TrainConfig, {"seed": 0}, ["backend=GPU"]).backend is Backend.GPU  # by name


def test_optional_nested_dataclass():
    @dataclass
    class Outer:
        env: EnvConfig | None = None

    assert load_config(Outer).env is None
    assert load_config(Outer, {"env": None}).env is None
    assert load_config(Outer, {"env": None}, ["env.num_envs=2"]).env == EnvConfig(num_envs=2)
    assert "'env.num_envs' = 0 is below the minimum 1" in _error(Outer, {"env": {"num_envs": 0}})


def test_union_of_scalars():
    @dataclass
    class U:
        x: int | str = 0

    assert load_config(U, {"x": "a"}).x == "a"
    assert load_config(U, None, ["x=3"]).x == 3
    assert "expected int | str, got 1.5 (float)" in _error(U, {"x": 1.5})


# --- errors, each naming the full key path


def test_type_error_message():
    msg = _error(TrainConfig, {"seed": 0, "optim": {"lr": "abc"}})
    assert msg == "config error at 'optim.lr': expected float, got 'abc' (str)"


def test_override_type_error_message():
    assert "config error at 'optim.lr': expected float, got 'abc' (str)" in _error(
        TrainConfig, {"seed": 0}, ["optim.lr=abc"]
    )


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"seed": True}, "config error at 'seed': expected int, got True (bool)"),
        ({"seed": 1.0}, "config error at 'seed': expected int, got 1.0 (float)"),
        ({"seed": "1"}, "config error at 'seed': expected int, got '1' (str)"),
        ({"seed": 0, "debug": 1}, "config error at 'debug': expected bool, got 1 (int)"),
        ({"seed": 0, "optim": {"lr": True}}, "config error at 'optim.lr': expected float, got True (bool)"),
        ({"seed": 0, "env": {"name": 3}}, "config error at 'env.name': expected str, got 3 (int)"),
        ({"seed": 0, "env": 3}, "config error at 'env': expected EnvConfig, got 3 (int)"),
        ({"seed": 0, "layers": 64}, "config error at 'layers': expected tuple[int, ...], got 64 (int)"),
        ({"seed": 0, "layers": [64, "x"]}, "config error at 'layers[1]': expected int, got 'x' (str)"),
        ({"seed": 0, "weights": {"v": "x"}}, "config error at 'weights.v': expected float, got 'x' (str)"),
        ({"seed": 0, "weights": [1]}, "config error at 'weights': expected dict[str, float], got [1] (list)"),
        ({"seed": 0, "out_dir": 5}, "config error at 'out_dir': expected Path, got 5 (int)"),
        ({"seed": 0, "optim": {"clip": "x"}}, "config error at 'optim.clip': expected float, got 'x' (str)"),
        ({"seed": 0, "optim": {"betas": [0.1]}}, "config error at 'optim.betas': expected 2 items, got 1"),
    ],
)
def test_strict_types(data, expected):
    assert expected in _error(TrainConfig, data)


def test_int_accepted_for_float():
    cfg = load_config(TrainConfig, {"seed": 0, "optim": {"lr": 1, "clip": 2}})
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    assert type(cfg.optim.clip) is float


def test_unknown_key_suggests_close_match():
    msg = _error(TrainConfig, {"seed": 0, "optim": {"lrr": 0.1}})
    assert msg == "config error: unknown key 'optim.lrr' (did you mean 'lr'?)"
    assert "unknown key 'optim.lrr' (did you mean 'lr'?)" in _error(TrainConfig, {"seed": 0}, ["optim.lrr=1"])
    assert "unknown key 'sed' (did you mean 'seed'?)" in _error(TrainConfig, {"sed": 0})


def test_unknown_key_without_match_lists_valid_keys():
    msg = _error(TrainConfig, {"seed": 0, "env": {"zzzzzz": 1}})
    assert "unknown key 'env.zzzzzz' (valid keys: name, kind, num_envs)" in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = _write(tmp_path, "seed: 0\nenv:\n  nmae: Pong\n")
    assert "unknown key 'env.nmae' (did you mean 'name'?)" in _error(TrainConfig, path)


def test_override_into_scalar_is_rejected():
    msg = _error(TrainConfig, {"seed": 0}, ["seed.x=1"])
    assert "cannot set 'seed.x': 'seed' is int, not a nested config" in msg


def test_malformed_override():
    assert "override 'seed' is not of the form key=value" in _error(TrainConfig, None, ["seed"])
    assert "cannot parse" in _error(TrainConfig, None, ["layers=[1, 2"])


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"optim": {"batch_size": 0}}, "'optim.batch_size' = 0 is below the minimum 1"),
        ({"env": {"num_envs": 2048}}, "'env.num_envs' = 2048 is above the maximum 1024"),
        ({"optim": {"lr": 0.0}}, "'optim.lr' = 0.0 must be greater than 0.0"),
        ({"layers": [64, 0]}, "'layers[1]' = 0 is below the minimum 1"),
        ({"mode": "serve"}, "'mode' = 'serve' is not one of ['train', 'eval']"),
        ({"env": {"kind": "foo"}}, "'env.kind' = 'foo' is not one of ['gym', 'atari']"),
        ({"backend": "tpu"}, "'backend' = 'tpu' is not one of ['cpu', 'gpu']"),
        ({"level": 3}, "'level' = 3 is not one of [1, 2]"),
        ({"level": True}, "'level' = True is not one of [1, 2]"),
    ],
)
def test_range_and_choices(data, expected):
    assert expected in _error(TrainConfig, {"seed": 0, **data})


def test_literal_is_type_strict():
    @dataclass
    class L:
        n: Literal[1, 2] = 1

    assert load_config(L, {"n": 2}).n == 2
    assert "'n' = True is not one of [1, 2]" in _error(L, {"n": True})


def test_missing_required_key():
    assert _error(TrainConfig, {}) == "config error: missing required key 'seed' (int)"

    @dataclass
    class Inner:
        path: Path

    @dataclass
    class Outer:
        inner: Inner

    assert "missing required key 'inner.path' (Path)" in _error(Outer, {"inner": {}})


def test_validate_hook_is_wrapped_with_path():
    msg = _error(TrainConfig, {"seed": 0, "optim": {"warmup": 10, "total_steps": 5}})
    assert msg == "config error at 'optim': warmup (10) exceeds total_steps (5)"


def test_validate_hook_on_root_and_defaults():
    calls = []

    @dataclass
    class Root:
        a: int = 1
        optim: OptimConfig = field(default_factory=lambda: OptimConfig(warmup=9, total_steps=1))

        def validate(self):
            calls.append(self.a)
            assert self.a > 0, "a must be positive"

    assert "config error at 'optim': warmup (9)" in _error(Root)
    # a section given as a mapping keeps the field's default instance for the keys it leaves out
    assert "config error at 'optim': warmup (9)" in _error(Root, {"a": 0, "optim": {}})
    assert "config error at '<root>': a must be positive" in _error(Root, {"a": 0, "optim": {"warmup": 0}})
    assert calls == [0]


def test_post_init_errors_are_wrapped():
    @dataclass
    class P:
        x: int = 0

        def __post_init__(self):
            if self.x < 0:
                raise ValueError("x must be >= 0")

    @dataclass
    class Q:
        p: P = field(default_factory=P)

    assert "config error at 'p': x must be >= 0" in _error(Q, {"p": {"x": -1}})


def test_bad_yaml_file(tmp_path):
    assert "cannot parse YAML file" in _error(TrainConfig, _write(tmp_path, "seed: [1\n"))
    assert "top level of" in _error(TrainConfig, _write(tmp_path, "- 1\n- 2\n"))


def test_config_error_is_value_error_with_path():
    with pytest.raises(ValueError) as info:
        load_config(TrainConfig, {"seed": 0, "optim": {"lr": "abc"}})
    assert info.value.path == "optim.lr"


# --- serialisation


def test_config_to_dict_is_plain_yaml():
    cfg = load_config(
        TrainConfig, {"seed": 3, "backend": "gpu", "resume": "a/b", "weights": {"x": 1.5}, "level": 2}
    )
    d = config_to_dict(cfg)
    assert d["backend"] == "gpu" and d["level"] == 2
    assert d["out_dir"] == "runs" and d["resume"] == "a/b"
    assert d["layers"] == [64, 64] and d["optim"]["betas"] == [0.9, 0.999]
    assert yaml.safe_load(yaml.safe_dump(d)) == d


def test_save_and_load_round_trip(tmp_path):
    cfg = TrainConfig(
        seed=1,
        env=EnvConfig(name="3e-4", kind="atari"),  # str that looks like a float stays a str
        optim=OptimConfig(lr=3e-4, clip=0.5),
        tags=["null", "yes", "1", ""],
        weights={"on": 1.0, "1": 2.0},
        out_dir=Path("out/run 1"),
        backend=Backend.GPU,
        level=Level.HIGH,
        note="multi\nline",
        resume=Path("x"),
    )
    path = save_config(cfg, tmp_path / "sub" / "saved.yaml")
    assert load_config(TrainConfig, path) == cfg


def test_format_config_help():
    text = format_config_help(TrainConfig)
    lines = text.splitlines()
    assert lines[0].split() == ["KEY", "TYPE", "DEFAULT", "HELP"]
    by_key = {line.split()[0]: line for line in lines[1:]}
    assert "env" not in by_key and "optim" not in by_key  # nested configs are expanded
    assert set(by_key) >= {"seed", "env.name", "env.kind", "optim.lr", "optim.betas", "layers", "backend"}
    assert "(required)" in by_key["seed"]
    assert "learning rate [> 0.0]" in by_key["optim.lr"]
    assert "parallel envs [>= 1, <= 1024]" in by_key["env.num_envs"]
    assert "'gym' | 'atari'" in by_key["env.kind"]
    assert "Path | None" in by_key["resume"]
    assert "one of ['cpu', 'gpu']" in by_key["backend"]
    assert "[64, 64]" in by_key["layers"]


# --- property test: round trip over generated values


@dataclass
class Leaf:
    x: float = 0.0
    flag: bool = False
    kind: Literal["a", "b", "c"] = "a"


@dataclass
class Everything:
    i: int = 0
    f: float = 0.0
    s: str = ""
    b: bool = False
    opt: int | None = None
    backend: Backend = Backend.CPU
    level: Level = Level.LOW
    path: Path = Path(".")
    tup: tuple[int, ...] = ()
    pair: tuple[str, float] = ("", 0.0)
    items: list[str] = field(default_factory=list)
    table: dict[str, int] = field(default_factory=dict)
    leaf: Leaf = field(default_factory=Leaf)
    leaves: list[Leaf] = field(default_factory=list)
    maybe_leaf: Leaf | None = None


_floats = st.floats(allow_nan=False)
_text = st.text(max_size=20)
_leaf = st.builds(Leaf, x=_floats, flag=st.booleans(), kind=st.sampled_from(["a", "b", "c"]))
_everything = st.builds(
    Everything,
    i=st.integers(),
    f=_floats,
    s=_text,
    b=st.booleans(),
    opt=st.none() | st.integers(),
    backend=st.sampled_from(Backend),
    level=st.sampled_from(Level),
    path=st.builds(Path, st.text(st.characters(blacklist_characters="\x00"), max_size=10)),
    tup=st.lists(st.integers(), max_size=4).map(tuple),
    pair=st.tuples(_text, _floats),
    items=st.lists(_text, max_size=4),
    table=st.dictionaries(_text, st.integers(), max_size=4),
    leaf=_leaf,
    leaves=st.lists(_leaf, max_size=3),
    maybe_leaf=st.none() | _leaf,
)


@settings(max_examples=200, deadline=None)
@given(_everything)
def test_dict_round_trip_property(cfg):
    assert load_config(Everything, config_to_dict(cfg)) == cfg


@settings(max_examples=100, deadline=None)
@given(_everything)
def test_yaml_round_trip_property(cfg):
    with tempfile.TemporaryDirectory() as tmp:
        path = save_config(cfg, Path(tmp) / "c.yaml")
        assert load_config(Everything, path) == cfg


def test_everything_defaults_round_trip():
    cfg = Everything()
    assert load_config(Everything, config_to_dict(cfg)) == cfg
    assert config_to_dict(cfg)["leaf"] == dataclasses.asdict(cfg.leaf)
