"""Minari interop: RLDS <-> Minari both ways, checked against minari's own loader; refusals."""

import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

minari = pytest.importorskip("minari")
pytest.importorskip("h5py")
pytest.importorskip("PIL", reason="minari 0.5.4's storage modules import Pillow at load time")

from gymnasium import spaces  # noqa: E402
from minari.data_collector.episode_buffer import EpisodeBuffer  # noqa: E402
from minari.serialization import serialize_space  # noqa: E402

from seedrl.data import ConversionError, DatasetWriter, open_dataset  # noqa: E402
from seedrl.data.formats.minari import export_minari, import_minari  # noqa: E402

NAN64 = np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f", np.float64)[0]
SNAN32 = np.frombuffer(b"\x01\x00\x80\x7f", np.float32)[0]
FORMATS = ["hdf5", "arrow"]


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))  # never ~/.minari, never a download
    return root


def _obs(kind, i):
    if kind == "box":
        return np.array([SNAN32, -0.0, i], np.float32)
    return {"pos": np.array([NAN64, i], np.float64), "grid": {"cells": np.full((2, 2), i, np.uint8)},
            "flag": np.bool_(i % 2), "count": np.int64(10 + i)}


def _steps(n, obs_kind, act_kind, terminated, disc=np.float32(1)):
    """An RLDS episode of n transitions (n + 1 steps), following the module's lossless rule."""
    steps = []
    for i in range(n + 1):
        last = i == n
        act = np.int64(0 if last else i % 3) if act_kind == "discrete" else np.array([0, 0] if last else [i, -i], np.float32)
        steps.append({
            "observation": _obs(obs_kind, i), "action": act, "reward": np.float64(0 if last else i + 0.5),
            "discount": np.float32(0) if last or (terminated and i == n - 1) else disc,
            "is_first": i == 0, "is_last": last, "is_terminal": terminated and last,
            "info": {"energy": np.float16(i / 4), "label": "" if i % 2 else f"s{i}"},
        })
    return steps


def _write(path, obs_kind, act_kind, episodes=((3, True), (2, False), (1, True))):
    with DatasetWriter(path) as w:
        for k, (n, term) in enumerate(episodes):
            w.write_episode(_steps(n, obs_kind, act_kind, term), {"seed": 100 + k, "agent": f"a{k}"})
    return open_dataset(path)


def _same(a, b):
    assert b.spec == a.spec, a.spec.diff(b.spec)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.equals(y), (x, y)


def _leaves(tree, prefix=""):
    """{"/a/b": array} of a nested Minari value; also undoes minari's arrow quirks (per-step dicts, "a/b" keys)."""
    if isinstance(tree, np.ndarray) and tree.dtype == object and len(tree) and isinstance(tree[0], dict):
        tree = {k: np.stack([np.asarray(x[k]) for x in tree]) for k in tree[0]}
    if isinstance(tree, dict):
        return {p: v for k, t in tree.items() for p, v in _leaves(t, f"{prefix}/{k}").items()}
    return {prefix: np.asarray(tree)}


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("obs_kind,act_kind", [("box", "discrete"), ("dict", "box"), ("dict", "discrete")])
def test_export_read_by_minari_then_back(tmp_path, data_format, obs_kind, act_kind):
    src = _write(tmp_path / "src", obs_kind, act_kind)
    report = export_minari(src, "seedrl/gen-v0", data_format=data_format)
    assert report.lossless and report.episodes == 3
    md = minari.load_dataset("seedrl/gen-v0")  # minari's own loader, from $MINARI_DATASETS_PATH
    assert md.total_episodes == 3 and md.total_steps == 6
    if act_kind == "discrete":
        assert md.action_space == spaces.Discrete(3)
    else:
        assert isinstance(md.action_space, spaces.Box) and md.action_space.dtype == np.float32
    if obs_kind == "dict":
        assert md.observation_space["count"] == spaces.Discrete(4, start=10)
    metas = list(md.storage.get_episode_metadata(md.episode_indices))
    for rlds, ep, m in zip(src, md.iterate_episodes(), metas):
        n = len(rlds) - 1
        assert len(ep) == n and int(m["seed"]) == rlds.metadata["seed"]
        want_obs, got_obs = _leaves(rlds.steps["observation"]), _leaves(ep.observations)
        assert want_obs.keys() == got_obs.keys()
        for p in want_obs:
            assert got_obs[p].dtype == want_obs[p].dtype and got_obs[p].tobytes() == want_obs[p].tobytes(), p
        assert np.asarray(ep.actions).tobytes() == rlds.columns["action"][:n].tobytes()
        assert np.array_equal(ep.rewards, rlds.columns["reward"][:n]) and ep.rewards.dtype == np.float64
        term = bool(rlds.columns["is_terminal"][-1])
        assert ep.terminations.tolist() == [False] * (n - 1) + [term]
        assert ep.truncations.tolist() == [False] * (n - 1) + [not term]
        infos = _leaves(ep.infos)
        energy = infos["/info/energy"].reshape(-1)  # arrow adds a unit axis to scalar infos
        assert energy.tobytes() == rlds.columns["info/energy"].tobytes()
        labels = [x.decode() if isinstance(x, bytes) else str(x) for x in infos["/info/label"]]
        assert labels == list(rlds.columns["info/label"])
    import_minari("seedrl/gen-v0", tmp_path / "back")
    _same(src, open_dataset(tmp_path / "back"))


def _native(dataset_id, data_format):
    """A Minari dataset made by minari itself: Dict obs, Box action, infos, seeds, a mid-episode termination."""
    obs_space = spaces.Dict({"x": spaces.Box(-1, 1, (2,), np.float32), "k": spaces.Discrete(5)})
    act_space = spaces.Box(-2, 2, (1,), np.float32)
    rng = np.random.default_rng(0)
    buffers = []
    for k, (n, term, trunc) in enumerate([(3, [0, 0, 1], [0, 0, 0]), (2, [0, 0], [0, 1]), (4, [0, 1, 0, 0], [0, 0, 0, 1])]):
        buffers.append(EpisodeBuffer(
            seed=7 + k, observations={"x": rng.uniform(-1, 1, (n + 1, 2)).astype(np.float32), "k": rng.integers(0, 5, n + 1)},
            actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32), rewards=rng.normal(size=n),
            terminations=np.array(term, bool), truncations=np.array(trunc, bool), options={"level": k},
            infos={"speed": rng.normal(size=(n + 1, 1)).astype(np.float32),
                   "nest": {"v": rng.integers(0, 9, (n + 1, 2)).astype(np.int16)}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=obs_space, action_space=act_space,
                                                  data_format=data_format, jpeg_encoding=False), buffers


@pytest.mark.parametrize("data_format", FORMATS)
def test_minari_native_round_trip(tmp_path, minari_root, data_format):
    native, buffers = _native("farama/native-v0", data_format)
    report = import_minari("farama/native-v0", tmp_path / "rlds", root=minari_root)
    assert report.lossless and report.episodes == 3
    ds = open_dataset(tmp_path / "rlds")
    assert [e.metadata for e in ds.entries] == [{"episode_id": i, "seed": 7 + i, "options": {"level": i}} for i in range(3)]
    assert ds.spec.field("nest/v").shape == (2,) and ds.spec.field("nest/v").dtype == "int16"
    third = ds[2]  # terminations [0, 1, 0, 0], truncated at the end
    assert third.columns["discount"].tolist() == [1, 0, 1, 1, 0] and third.columns["discount"].dtype == np.float64
    assert third.columns["is_terminal"].tolist() == [False] * 5 and third.columns["is_last"].tolist() == [False] * 4 + [True]
    assert ds[0].columns["is_terminal"].tolist() == [False, False, False, True]
    assert third.columns["action"][-1].tolist() == [0.0] and third.columns["reward"][-1] == 0
    assert np.array_equal(third.columns["observation/x"], buffers[2].observations["x"])
    assert ds.spec.field("speed").shape == (1,)
    export_minari(ds, "farama/native-again-v0", root=tmp_path / "m2", data_format=data_format)
    again = minari.MinariDataset(tmp_path / "m2" / "farama/native-again-v0" / "data")
    assert serialize_space(again.observation_space) == serialize_space(native.observation_space)
    assert serialize_space(again.action_space) == serialize_space(native.action_space)
    for a, b in zip(native.iterate_episodes(), again.iterate_episodes()):
        for key in ("actions", "rewards", "terminations", "truncations"):
            x, y = np.asarray(getattr(a, key)), np.asarray(getattr(b, key))
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), key
        for p, v in _leaves(a.observations).items():
            assert v.tobytes() == _leaves(b.observations)[p].tobytes(), p
        want, got = _leaves(a.infos), _leaves(b.infos)
        assert want.keys() == got.keys() == {"/speed", "/nest/v"}
        assert all(want[k].dtype == got[k].dtype and want[k].tobytes() == got[k].tobytes() for k in want)
    metas = list(again.storage.get_episode_metadata(again.episode_indices))
    assert [int(m["seed"]) for m in metas] == [7, 8, 9] and [int(m["options"]["level"]) for m in metas] == [0, 1, 2]


@pytest.mark.parametrize("data_format", FORMATS)
def test_lossy_export_is_refused_or_reported(tmp_path, data_format):
    with DatasetWriter(tmp_path / "src") as w:
        w.write_episode(_steps(3, "box", "discrete", False, disc=np.float32(0.99)), {"seed": 1})
        last_reward = _steps(2, "box", "discrete", True)
        last_reward[-1]["reward"] = np.float64(5)
        w.write_episode(last_reward, {"seed": 2})
    with pytest.raises(ConversionError, match="field 'discount' differs at step\\(s\\) \\[0, 1, 2\\]"):
        export_minari(tmp_path / "src", "seedrl/lossy-v0", data_format=data_format)
    report = export_minari(tmp_path / "src", "seedrl/lossy-v0", data_format=data_format, allow_lossy=True)
    assert len(report.changes) == 2 and not report.lossless
    assert "'discount'" in report.changes[0] and "0.99" in report.changes[0]
    assert "'reward'" in report.changes[1] and "[2]" in report.changes[1]
    md = minari.load_dataset("seedrl/lossy-v0")
    assert [e.terminations.tolist() for e in md.iterate_episodes()] == [[False] * 3, [False, True]]
    import_minari("seedrl/lossy-v0", tmp_path / "back")
    back = open_dataset(tmp_path / "back")
    assert back[0].columns["discount"].tolist() == [1, 1, 1, 0] and back[1].columns["reward"][-1] == 0


def test_terminal_flag_must_match_discount(tmp_path):
    steps = _steps(2, "box", "discrete", True)
    steps[1]["discount"] = np.float32(1)  # terminal episode whose last transition still bootstraps
    with DatasetWriter(tmp_path / "src") as w:
        w.write_episode(steps)
    with pytest.raises(ConversionError, match="'discount' differs at step\\(s\\) \\[1\\]"):
        export_minari(tmp_path / "src", "seedrl/t-v0")


@pytest.mark.parametrize("data_format", FORMATS)
def test_lossy_import_is_refused_or_reported(tmp_path, minari_root, data_format):
    obs = spaces.Box(-1, 1, (1,), np.float32)
    buffers = [EpisodeBuffer(observations=np.zeros((4, 1), np.float32), actions=np.zeros((3, 1), np.float32),
                             rewards=np.ones(3), terminations=np.zeros(3, bool), truncations=np.array([0, 1, 1], bool))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers("xx/trunc-v0", buffers, observation_space=obs, action_space=obs,
                                           data_format=data_format, jpeg_encoding=False)
    with pytest.raises(ConversionError, match="'truncations': True before the last transition"):
        import_minari("xx/trunc-v0", tmp_path / "a")
    report = import_minari("xx/trunc-v0", tmp_path / "b", allow_lossy=True)
    assert len(report.changes) == 1 and "truncations" in report.changes[0]


def test_one_step_episodes(tmp_path):
    with DatasetWriter(tmp_path / "src") as w:
        w.write_episode(_steps(0, "dict", "discrete", False), {"seed": 0})
        w.write_episode(_steps(2, "dict", "discrete", True), {"seed": 1})
    with DatasetWriter(tmp_path / "box") as w:
        w.write_episode(_steps(0, "box", "box", False))
    with pytest.raises(ConversionError, match="one step.*only .arrow. with Discrete actions"):
        export_minari(tmp_path / "src", "seedrl/one-v0")
    with pytest.raises(ConversionError, match="one step"):
        export_minari(tmp_path / "box", "seedrl/one-v2", data_format="arrow")
    export_minari(tmp_path / "src", "seedrl/one-v1", data_format="arrow")
    assert [len(e) for e in minari.load_dataset("seedrl/one-v1").iterate_episodes()] == [0, 2]
    import_minari("seedrl/one-v1", tmp_path / "back")
    _same(open_dataset(tmp_path / "src"), open_dataset(tmp_path / "back"))


def test_env_spec_spaces_are_checked(tmp_path):
    def cartpole(dtype):
        return [{"observation": np.full(4, i, dtype), "action": np.int64(i % 2 if i < 2 else 0),
                 "reward": np.float64(1 if i < 2 else 0), "discount": np.float64(1 if i < 2 else 0),
                 "is_first": i == 0, "is_last": i == 2, "is_terminal": False} for i in range(3)]

    with DatasetWriter(tmp_path / "ok") as w:
        w.write_episode(cartpole(np.float32))
    export_minari(tmp_path / "ok", "cp/ok-v0", env_spec="CartPole-v1")
    md = minari.load_dataset("cp/ok-v0")
    assert md.env_spec.id == "CartPole-v1" and md.action_space == spaces.Discrete(2)
    with DatasetWriter(tmp_path / "bad") as w:
        w.write_episode(cartpole(np.float64))
    with pytest.raises(ConversionError, match="field 'observation'.*float32.*float64"):
        export_minari(tmp_path / "bad", "cp/bad-v0", env_spec="CartPole-v1")


def test_unsupported_fields_are_refused(tmp_path):
    steps = [dict(s, observation={"text": "hi", "x": np.zeros(2, np.float32)}) for s in _steps(2, "box", "discrete", True)]
    with DatasetWriter(tmp_path / "src") as w:
        w.write_episode(steps)
    with pytest.raises(ConversionError, match="field 'observation/text'"):
        export_minari(tmp_path / "src", "seedrl/text-v0")


# ------------------------------------------------------------- generated data
@st.composite
def episodes(draw):
    dtype = draw(st.sampled_from(["float16", "float32", "float64", "int8", "uint64", "bool"]))
    shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    nested = draw(st.booleans())
    out = []
    for _ in range(draw(st.integers(1, 3))):
        n, term = draw(st.integers(1, 4)), draw(st.booleans())
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        obs = [np.frombuffer(draw(st.binary(min_size=size, max_size=size)), dtype if dtype != "bool" else np.uint8).reshape(shape)
               for _ in range(n + 1)]
        obs = [(o & 1).astype(bool) if dtype == "bool" else o.copy() for o in obs]
        rewards = draw(st.lists(st.floats(width=32), min_size=n, max_size=n))
        steps = []
        for i in range(n + 1):
            last = i == n
            steps.append({"observation": {"a": {"b": obs[i]}} if nested else obs[i],
                          "action": np.int64(0 if last else draw(st.integers(-3, 3))),
                          "reward": np.float32(0 if last else rewards[i]),
                          "discount": np.float32(0 if last or (term and i == n - 1) else 1),
                          "is_first": i == 0, "is_last": last, "is_terminal": term and last})
        out.append(steps)
    return out


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(eps=episodes(), data_format=st.sampled_from(FORMATS))
def test_generated_round_trips(eps, data_format):
    with tempfile.TemporaryDirectory() as tmp:
        with DatasetWriter(os.path.join(tmp, "src")) as w:
            for k, steps in enumerate(eps):
                w.write_episode(steps, {"seed": k})
        assert export_minari(os.path.join(tmp, "src"), "gen/h-v0", root=os.path.join(tmp, "m"), data_format=data_format).lossless
        import_minari(os.path.join(tmp, "m", "gen/h-v0"), os.path.join(tmp, "back"))  # by directory
        _same(open_dataset(os.path.join(tmp, "src")), open_dataset(os.path.join(tmp, "back")))
