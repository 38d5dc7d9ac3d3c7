"""Minari (Farama) <-> seedrl RLDS datasets.

A Minari episode of N transitions holds N+1 ``observations`` and N ``actions``,
``rewards``, ``terminations``, ``truncations`` (transition i: o_i --a_i--> r_i,
o_{i+1}) and optional per-observation ``infos``. An RLDS episode holds N+1
steps: step i carries (o_i, a_i, r_i, d_i), r_i and d_i following a_i, and the
last step (``is_last``) carries o_N. The mapping:

================================  ============================================
RLDS step i (0 <= i <= N)         Minari
================================  ============================================
observation o_i                   observations[i]
action a_i, reward r_i (i < N)    actions[i], rewards[i]
discount d_i (i < N)              terminations[i] = (d_i == 0) for i < N-1;
                                  import: d_i = 0 if terminations[i] else 1
is_terminal (on step N)           terminations[N-1]; truncations[N-1] = not
                                  is_terminal (is_last alone = truncated);
                                  truncations[i] = False for i < N-1
action/reward/discount of step N  not stored; import: zeros of their dtypes
other top-level step fields       infos[key], N+1 entries (nested dicts kept;
                                  flattened to "a/b" keys in arrow storage)
episode metadata                  ``seed`` / ``options`` when an int / a dict,
                                  and exactly, as JSON, ``seedrl_metadata``;
                                  the step spec goes to ``metadata.json``
================================  ============================================

So RLDS -> Minari is lossless iff every d_i (i < N) is exactly 0 or 1, d_{N-1}
is 0 exactly when the episode is terminal, and step N's action, reward and
discount are zero bits. Export checks this by converting each episode back in
memory and comparing bit for bit: a difference raises :class:`ConversionError`
naming the field and steps, unless ``allow_lossy=True``, which writes anyway
and lists every change in the returned :class:`ConversionReport`. Minari ->
RLDS is lossless unless an episode has a truncation before its last
transition, both or neither flag on its last transition, or infos that are not
one per observation: refused the same way (``allow_lossy`` reports them).

Spaces come from ``env_spec`` (checked against the data), else from an earlier
import's recorded spaces, else from the spec: int64 scalars -> ``Discrete``
over the data's range, other numbers -> ``Box`` over the dtype's full range,
dicts -> ``Dict``, tuples/lists -> ``Tuple``. Refused: str/bytes observations
or actions, varying shapes, bytes infos, and episodes without a transition
unless stored as arrow with Discrete actions (minari 0.5.4's storages fail on
them). Nothing is JPEG-encoded. Minari's arrow storage cannot read back scalar
infos, so they get a trailing unit axis there (undone on import).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from seedrl.data import metadata as meta
from seedrl.data.columns import object_column
from seedrl.data.episode import Episode, columns_equal
from seedrl.data.errors import ConversionError, DataError
from seedrl.data.reader import Dataset, open_dataset
from seedrl.data.spec import CORE_FIELDS, SEP, FieldSpec, StepSpec
from seedrl.data.writer import DatasetWriter

META_KEY, EP_META_KEY = "seedrl", "seedrl_metadata"
_ENV_LOCK = threading.Lock()


@dataclass
class ConversionReport:
    """What a conversion wrote, and every change it made (empty when lossless)."""

    source: str
    target: str
    episodes: int = 0
    changes: list[str] = field(default_factory=list)

    @property
    def lossless(self) -> bool:
        return not self.changes

    def __str__(self) -> str:
        head = f"{self.source} -> {self.target}: {self.episodes} episode(s), "
        if self.lossless:
            return head + "lossless"
        return head + f"{len(self.changes)} change(s):\n  " + "\n  ".join(self.changes)


def episodes_of(source: Any, chunk: int = 256) -> tuple[StepSpec, list[dict], Iterator[list[Episode]]]:
    """(spec, every episode's metadata, chunks of Episodes) of a Dataset, its path or a list of Episodes."""
    if isinstance(source, (str, os.PathLike)):
        source = open_dataset(source)
    if isinstance(source, Dataset):
        ds = source
        chunks = ([ds[i] for i in range(a, min(a + chunk, len(ds)))] for a in range(0, len(ds), chunk))
        return ds.spec, [dict(e.metadata) for e in ds.entries], chunks
    episodes = list(source)
    if not episodes:
        raise ConversionError("no episodes to convert (and so no step spec)")
    spec = episodes[0].spec
    for e in episodes:
        if e.spec != spec:
            raise ConversionError(f"episode {e.episode_id!r}: spec differs from the first one's: {spec.diff(e.spec)}")
    chunks = (episodes[a : a + chunk] for a in range(0, len(episodes), chunk))
    return spec, [dict(e.metadata) for e in episodes], chunks


def _name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike, Dataset)):
        return str(getattr(source, "root", source))
    return f"{type(source).__name__} of episodes"


def _require_minari():
    try:
        import h5py  # noqa: F401
        import minari
        import PIL  # noqa: F401  (minari 0.5.4's storage modules import it at load time)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"Minari interop needs: pip install seedrl[minari] (missing module {e.name!r})") from e
    return minari


# ----------------------------------------------------------------- structure
def _children(node: Any) -> list[tuple[str, Any]]:
    if "dict" in node:
        return list(node["dict"].items())
    return [(str(i), t) for i, t in enumerate(node["tuple" if "tuple" in node else "list"])]


def _nest(node: Any, prefix: str, columns: Mapping[str, Any], stop: int | None = None, dicts: bool = False) -> Any:
    """Columns of a subtree -> Minari's nesting: dicts, tuples (or dicts keyed '0', '1'.. if ``dicts``)."""
    if node is None:
        return columns[prefix][:stop]
    items = {k: _nest(t, f"{prefix}{SEP}{k}", columns, stop, dicts) for k, t in _children(node)}
    return items if "dict" in node or dicts else tuple(items.values())


def _flat(value: Any, prefix: str, out: dict) -> dict:
    """Minari's nesting -> {path: leaf}."""
    join = (lambda k: f"{prefix}{SEP}{k}") if prefix else str
    if isinstance(value, (Mapping, tuple)):
        for k, v in value.items() if isinstance(value, Mapping) else enumerate(value):
            _flat(v, join(k), out)
    elif isinstance(value, np.ndarray) and value.dtype == object and len(value) and isinstance(value[0], Mapping):
        for k in value[0]:  # minari 0.5.4's arrow storage reads nested infos back as per-step dicts
            _flat(np.stack([np.asarray(x[k]) for x in value]), join(k), out)
    else:
        out[prefix] = value
    return out


def _minari_leaf(f: FieldSpec) -> FieldSpec:
    if f.is_text or not f.is_fixed or np.dtype(f.dtype).kind == "c":
        raise ConversionError(f"field '{f.path}': Minari holds fixed-shape real numbers here, not {f.dtype} {f.shape}")
    return f


def _space(spaces: Any, node: Any, prefix: str, spec: StepSpec, ranges: Mapping[str, tuple[int, int]]) -> Any:
    if node is not None:
        subs = {k: _space(spaces, t, f"{prefix}{SEP}{k}", spec, ranges) for k, t in _children(node)}
        return spaces.Dict(subs) if "dict" in node else spaces.Tuple(list(subs.values()))
    f, dt = _minari_leaf(spec.field(prefix)), np.dtype(spec.field(prefix).dtype)
    if prefix in ranges:
        return spaces.Discrete(ranges[prefix][1] - ranges[prefix][0] + 1, start=ranges[prefix][0])
    if dt.kind in "fb":
        lo, hi = (-np.inf, np.inf) if dt.kind == "f" else (False, True)
    else:
        lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spaces.Box(low=np.full(f.shape, lo, dt), high=np.full(f.shape, hi, dt), dtype=dt)


def _check_space(space: Any, spaces: Any, node: Any, prefix: str, spec: StepSpec) -> None:
    """Raise naming the field if ``space`` does not describe the data's leaves."""
    if node is None:
        f = spec.field(prefix)
        if np.dtype(space.dtype).name != f.dtype or tuple(space.shape) != f.shape:
            raise ConversionError(f"field '{prefix}': the space {space} holds {np.dtype(space.dtype).name} "
                                  f"{space.shape}, the data {f.dtype} {f.shape}")
        return
    is_dict = "dict" in node
    keys = [k for k, _ in _children(node)]
    if not isinstance(space, spaces.Dict if is_dict else spaces.Tuple) or len(space.spaces) != len(keys) or (
            is_dict and set(space.spaces) != set(keys)):
        raise ConversionError(f"field '{prefix}': the space {space} does not match the data's keys {keys}")
    for k, t in _children(node):
        _check_space(space[k] if is_dict else space[int(k)], spaces, t, f"{prefix}{SEP}{k}", spec)


def _discrete_only(space: Any, spaces: Any) -> bool:
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        subs = space.spaces.values() if isinstance(space, spaces.Dict) else space.spaces
        return all(_discrete_only(s, spaces) for s in subs)
    return isinstance(space, spaces.Discrete)


# ------------------------------------------------------- episode <-> Minari
def to_minari(ep: Episode, arrow: bool = False) -> dict:
    """One RLDS episode -> the fields of a Minari ``EpisodeBuffer`` (the module's table)."""
    spec, cols, n = ep.spec, ep.columns, len(ep) - 1
    for name in ("reward", "discount"):
        f = spec.field(name)
        if f.shape != () or f.is_text:
            raise ConversionError(f"field '{name}': Minari needs a numeric scalar per step, not {f.dtype} {f.shape}")
    term = bool(cols["is_terminal"][-1])
    terminations = np.concatenate([cols["discount"][: max(n - 1, 0)] == 0, [term]])[:n].astype(bool)
    truncations = np.arange(n) == (n - 1 if not term else -1)
    infos: dict = {}
    for k in (k for k in spec.treedef["dict"] if k not in CORE_FIELDS):
        sub = {p: _info_column(spec.field(p), c, arrow) for p, c in cols.items() if p == k or p.startswith(k + SEP)}
        infos.update(sub if arrow else {k: _nest(spec.treedef["dict"][k], k, sub, dicts=True)})
    seed, options = ep.metadata.get("seed"), ep.metadata.get("options")
    return {
        "observations": _nest(spec.treedef["dict"]["observation"], "observation", cols),
        "actions": _nest(spec.treedef["dict"]["action"], "action", cols, n),
        "rewards": cols["reward"][:n], "terminations": terminations, "truncations": truncations, "infos": infos or None,
        "seed": seed if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)) else None,
        "options": options if isinstance(options, dict) else None,
    }


def _info_column(f: FieldSpec, col: np.ndarray, arrow: bool) -> Any:
    if f.dtype == "str":
        if any("\x00" in s for s in col):
            raise ConversionError(f"field '{f.path}': Minari string infos cannot hold NUL characters")
        return list(col)
    return col.reshape(len(col), 1) if arrow and _minari_leaf(f).shape == () else col


def from_minari(ep: Any, spec: StepSpec | None, metadata: Mapping[str, Any], allow_lossy: bool = False,
                changes: list[str] | None = None) -> Episode:
    """A Minari episode (``EpisodeData``, or a dict of ``EpisodeBuffer`` fields) -> an RLDS Episode."""
    get = ep.__getitem__ if isinstance(ep, Mapping) else lambda k: getattr(ep, k)
    rewards = np.asarray(get("rewards"))
    n, where = len(rewards), f"episode {metadata.get('episode_id')!r}"
    term, trunc = np.asarray(get("terminations"), bool).reshape(n), np.asarray(get("truncations"), bool).reshape(n)
    problems = []
    if trunc[: n - 1].any():
        at = np.flatnonzero(trunc[: n - 1]).tolist()
        problems.append(f"field 'truncations': True before the last transition (at {at}); RLDS truncates at is_last")
    if n and term[-1] and trunc[-1]:
        problems.append("field 'truncations': both flags on the last transition; RLDS keeps only is_terminal")
    if n and not term[-1] and not trunc[-1]:
        problems.append("field 'truncations': no flag on the last transition; RLDS reads is_last alone as truncated")
    cols = {p: np.asarray(v) for p, v in _flat(get("observations"), "observation", {}).items()}
    for p, a in _flat(get("actions"), "action", {}).items():
        a = np.asarray(a)
        cols[p] = np.concatenate([a, np.zeros((1, *a.shape[1:]), a.dtype)])
    cols["reward"] = np.concatenate([rewards, np.zeros(1, rewards.dtype)])
    ddt = spec.field("discount").dtype if spec else rewards.dtype if rewards.dtype.kind == "f" else np.float32
    cols["discount"] = np.concatenate([np.where(term, 0, 1), [0]]).astype(ddt)
    cols["is_first"], cols["is_last"] = np.arange(n + 1) == 0, np.arange(n + 1) == n
    cols["is_terminal"] = cols["is_last"] & bool(n and term[-1])
    infos = []
    for p, v in _flat(get("infos") or {}, "", {}).items():
        if len(v) != n + 1:
            problems.append(f"infos '{p}': {len(v)} entries for {n + 1} observations; dropped")
        elif p in cols:
            raise ConversionError(f"{where}: infos '{p}' has the name of an RLDS core step field")
        else:
            infos.append(p)
            cols[p] = _from_info(v, spec.field(p) if spec and p in spec.paths else None)
    if problems:
        if not allow_lossy:
            raise ConversionError(f"{where}: " + "; ".join(problems) + "; pass allow_lossy=True to convert anyway")
        changes.extend(f"{where}: {p}" for p in problems)
    spec = spec or _spec_of(cols, get("observations"), get("actions"), infos)
    missing, extra = [p for p in spec.paths if p not in cols], [p for p in cols if p not in spec.paths]
    if missing or extra:
        raise ConversionError(f"{where}: fields differ from the step spec: missing {missing}, unexpected {extra}")
    return Episode.from_columns(spec, {p: cols[p] for p in spec.paths}, metadata)


def _from_info(v: Any, f: FieldSpec | None) -> np.ndarray:
    arr = np.asarray(v)
    if arr.dtype.kind in "OSU" or (f is not None and f.is_text):
        return object_column([x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr])
    if f is not None and arr.shape[1:] == f.shape + (1,):
        arr = arr.reshape(len(arr), *f.shape)  # the arrow storage's unit axis
    return arr


def _spec_of(cols: Mapping[str, np.ndarray], obs: Any, actions: Any, infos: list[str]) -> StepSpec:
    """The spec of a Minari dataset written by others: its structure, dtypes and shapes."""
    def tree(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {"dict": {k: tree(v) for k, v in value.items()}}
        return {"tuple": [tree(v) for v in value]} if isinstance(value, tuple) else None

    top = {"observation": tree(obs), "action": tree(actions), "reward": None, "discount": None,
           "is_first": None, "is_last": None, "is_terminal": None}
    for p in infos:  # infos' nesting, from their (kept) paths
        *parents, last = p.split(SEP)
        node = top
        for k in parents:
            node = node.setdefault(k, {"dict": {}})["dict"]
        node[last] = None
    fields, stack = [], [("", {"dict": top})]
    while stack:
        prefix, node = stack.pop()
        if node is None:
            c = cols[prefix]
            text = c.dtype == object
            fields.append(FieldSpec(prefix, "str" if text else c.dtype.name, () if text else c.shape[1:]))
            continue
        stack.extend(reversed([(f"{prefix}{SEP}{k}" if prefix else k, t) for k, t in _children(node)]))
    return StepSpec({"dict": top}, tuple(fields))


def _diff(a: Episode, b: Episode) -> list[str]:
    out = []
    for path, col in a.columns.items():
        other = b.columns[path]
        if not columns_equal(col, other):
            steps = [i for i in range(len(col)) if not columns_equal(col[i : i + 1], other[i : i + 1])]
            more = "..." if len(steps) > 8 else ""
            out.append(f"episode {a.episode_id!r}: field '{path}' differs at step(s) {steps[:8]}{more} of {len(col)}: "
                       f"{col[steps[0]]!r:.40} -> {other[steps[0]]!r:.40}")
    return out


# -------------------------------------------------------------------- export
@contextlib.contextmanager
def _datasets_root(root: str | os.PathLike | None):
    """``$MINARI_DATASETS_PATH`` set to ``root`` for minari's path helpers (restored after)."""
    if root is None:
        yield
        return
    with _ENV_LOCK:
        old = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = str(root)
        try:
            yield
        finally:
            if old is None:
                del os.environ["MINARI_DATASETS_PATH"]
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def export_minari(dataset: Any, dataset_id: str, root: str | os.PathLike | None = None, data_format: str = "hdf5",
                  env_spec: Any = None, allow_lossy: bool = False, chunk_episodes: int = 64) -> ConversionReport:
    """Write a seedrl dataset (a Dataset, its path or Episodes) as the Minari dataset ``dataset_id``.

    ``root`` is the Minari datasets directory (default ``$MINARI_DATASETS_PATH``,
    else ``~/.minari/datasets``); the data lands in ``root/dataset_id/data``.
    ``env_spec``: a Gymnasium id or ``EnvSpec``, whose spaces must match the data.
    """
    minari = _require_minari()
    import gymnasium as gym
    from gymnasium import spaces
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.serialization import deserialize_space

    if data_format not in ("hdf5", "arrow"):
        raise DataError(f"data_format must be 'hdf5' or 'arrow', got {data_format!r}")
    spec, metas, chunks = episodes_of(dataset, chunk_episodes)
    info = open_dataset(dataset).info if isinstance(dataset, (str, os.PathLike)) else getattr(dataset, "info", {})
    recorded = (info.get("config") or {}).get("minari") or {}
    nodes = {k: spec.treedef["dict"][k] for k in ("observation", "action")}
    env_json = recorded.get("env_spec")
    if env_spec is not None:
        env_spec, env_json = gym.spec(env_spec) if isinstance(env_spec, str) else env_spec, None
        env = gym.make(env_spec)
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
    elif recorded.get("observation_space") and recorded.get("action_space"):
        obs_space, act_space = (deserialize_space(recorded[k]) for k in ("observation_space", "action_space"))
    else:
        ranges = _int_ranges(dataset, spec)
        obs_space, act_space = (_space(spaces, nodes[k], k, spec, ranges) for k in ("observation", "action"))
    for k, space in (("observation", obs_space), ("action", act_space)):
        _check_space(space, spaces, nodes[k], k, spec)
    report, arrow, created = ConversionReport(source=_name(dataset), target=dataset_id), data_format == "arrow", None
    for episodes in chunks:
        buffers = []
        for ep in episodes:
            if len(ep) == 1 and not (arrow and _discrete_only(act_space, spaces)):
                raise ConversionError(f"episode {ep.episode_id!r}: one step (no transition); of minari 0.5.4's storages"
                                      " only 'arrow' with Discrete actions holds an episode without a transition")
            buf = to_minari(ep, arrow)
            changes = _diff(ep, from_minari(buf, spec, ep.metadata, allow_lossy=True, changes=[]))
            if changes and not allow_lossy:
                raise ConversionError(changes[0] + "; Minari keeps discounts only as terminations (0 or 1) and of the "
                                      "last step only its observation; pass allow_lossy=True to drop the difference")
            report.changes.extend(changes)
            buffers.append(EpisodeBuffer(**buf))
        with warnings.catch_warnings(), _datasets_root(root):
            warnings.simplefilter("ignore")  # minari warns about every optional argument left out
            if created is None:
                created = minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=env_spec, observation_space=obs_space, action_space=act_space,
                    data_format=data_format, jpeg_encoding=False)
            else:
                created.update_dataset_from_buffer(buffers)
        report.episodes += len(buffers)
    if created is None:
        raise ConversionError("no episodes to export; a Minari dataset needs at least one")
    created.storage.update_episode_metadata([{EP_META_KEY: meta.dumps(m)} for m in metas], range(len(metas)))
    created.storage.update_metadata({META_KEY: {"step_spec": spec.to_json(), "name": info.get("name")},
                                     **({"env_spec": env_json} if env_json else {})})
    return report


def _int_ranges(dataset: Any, spec: StepSpec) -> dict[str, tuple[int, int]]:
    """Data range of each int64 scalar observation/action leaf: their spaces become ``Discrete``."""
    paths = [f.path for f in spec.fields
             if f.dtype == "int64" and f.shape == () and f.path.split(SEP)[0] in ("observation", "action")]
    ranges: dict[str, tuple[int, int]] = {}
    if paths:
        for eps in episodes_of(dataset.select(paths) if isinstance(dataset, Dataset) else dataset)[2]:
            for ep in eps:
                for p in paths:
                    col = ep.columns[p][: len(ep) - 1 if p.startswith("action") else None]
                    if len(col):
                        lo, hi = ranges.get(p, (int(col.min()), int(col.max())))
                        ranges[p] = (min(lo, int(col.min())), max(hi, int(col.max())))
    return {p: r for p, r in ranges.items() if r[1] - r[0] < 2**62}


# -------------------------------------------------------------------- import
def import_minari(dataset_id_or_path: Any, out_path: str | os.PathLike, root: str | os.PathLike | None = None,
                  allow_lossy: bool = False, name: str | None = None) -> ConversionReport:
    """Write a Minari dataset (a ``MinariDataset``, its id, or its directory) as a seedrl dataset.

    An id is looked up under ``root`` (default ``$MINARI_DATASETS_PATH``);
    nothing is downloaded. Datasets from :func:`export_minari` come back with
    their exact spec and metadata; others get ``episode_id`` (the Minari id),
    ``seed`` and, if any episode has them, ``options``. The spaces and env spec
    are kept in the dataset's config for a later export.
    """
    minari = _require_minari()
    from minari.serialization import serialize_space

    src = dataset_id_or_path
    if not isinstance(src, minari.MinariDataset):
        path = Path(src) / "data" if (Path(src) / "data").is_dir() else Path(src)
        if (path / "metadata.json").exists():
            src = minari.MinariDataset(path)
        elif root is not None:
            src = minari.MinariDataset(Path(root) / str(dataset_id_or_path) / "data")
        else:
            src = minari.load_dataset(str(dataset_id_or_path), download=False)
    raw = json.loads((Path(src.storage.data_path) / "metadata.json").read_text())
    recorded = raw.get(META_KEY) or {}
    spec = StepSpec.from_json(recorded["step_spec"]) if recorded.get("step_spec") else None
    config = {"minari": {"dataset_id": src.id, "observation_space": serialize_space(src.observation_space),
                         "action_space": serialize_space(src.action_space), "env_spec": raw.get("env_spec"),
                         "data_format": raw.get("data_format")}}
    report = ConversionReport(source=str(src.storage.data_path), target=str(out_path))
    metas = list(src.storage.get_episode_metadata(src.episode_indices))
    options = any(m.get("options") is not None for m in metas)
    with DatasetWriter(out_path, spec, name=name or recorded.get("name"), config=config) as writer:
        for ep, m in zip(src.iterate_episodes(), metas):
            if EP_META_KEY in m:
                metadata = meta.loads(m[EP_META_KEY])
            else:
                metadata = {"episode_id": int(ep.id), "seed": None if m.get("seed") is None else int(m["seed"])}
                metadata.update({"options": m.get("options")} if options else {})
            episode = from_minari(ep, spec, metadata, allow_lossy, report.changes)
            spec = spec or episode.spec
            writer.write_episode(episode)
            report.episodes += 1
    return report
