"""New datasets from parts of others: filter, select and merge (``seedrl data filter|select|merge``).

Sources are only read (a :class:`~seedrl.data.reader.Dataset` view never
writes); results are written as new datasets by :func:`write_dataset`.

- :func:`where_filter` keeps episodes by conditions such as ``return>100``,
  ``length<=50`` or ``agent_id==me`` (``return`` is the sum of every
  reward value of the episode, in float64; ``length`` its number of steps;
  any other name is an episode metadata key) and by ``key=value`` metadata
  matches;
- :func:`select_episodes` picks episodes by index ranges (``0:10,15,-3:``)
  and ids; :func:`keep_fields` narrows the steps to some fields, keeping the
  core RLDS fields the result needs;
- :func:`check_mergeable` refuses datasets whose specs differ (naming the
  first differing field), whose episode metadata differ, or that share an
  episode id.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any, Callable, Iterable, Sequence

from seedrl.data import metadata as meta
from seedrl.data.errors import DataError, DuplicateEpisodeError, MissingKeyError, SpecError
from seedrl.data.reader import Dataset
from seedrl.data.spec import CORE_FIELDS, SEP, StepSpec
from seedrl.data.stats import episode_return
from seedrl.data.writer import DatasetWriter

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt,
}
_CONDITION = re.compile(r"^\s*([\w./-]+)\s*(>=|<=|==|!=|>|<)\s*(.*?)\s*$")


def parse_value(text: str) -> Any:
    """``'100'`` -> 100, ``'true'`` -> True, ``'"x"'`` -> 'x'; anything else stays the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_condition(text: str) -> tuple[str, Callable[[Any, Any], bool], Any, str]:
    """``'return>100'`` -> (key, comparison, value, the text)."""
    m = _CONDITION.match(text)
    if not m or not m.group(3):
        raise DataError(f"--where {text!r}: expected KEY OP VALUE with OP one of {list(OPERATORS)}, e.g. 'return>100'")
    key, op, value = m.groups()
    return key, OPERATORS[op], parse_value(value), text


def _metadata_value(ds: Dataset, index: int, key: str, flag: str) -> Any:
    md = ds.entries[index].metadata
    if key not in md:
        raise MissingKeyError(f"{flag}: episode metadata has no key {key!r} (episode {ds.entries[index].episode_id!r}"
                              f" has {sorted(md)})")
    return md[key]


def where_filter(ds: Dataset, where: Sequence[str] = (), metadata: Sequence[str] = ()) -> Dataset:
    """The episodes of ``ds`` meeting every condition (``where``) and metadata match (``metadata``: ``key=value``)."""
    conditions = [parse_condition(w) for w in where]
    matches = []
    for text in metadata:
        key, eq, value = text.partition("=")
        if not eq or not key:
            raise DataError(f"--metadata {text!r}: expected KEY=VALUE, e.g. agent_id=expert")
        matches.append((key, value))
    rewards = None
    if any(c[0] == "return" for c in conditions):
        rewards = ds.select(["reward"])
        f = rewards.spec.fields[0]
        if f.is_text or not f.is_fixed or len(rewards.spec.fields) > 1:
            raise DataError(f"--where return: field 'reward' must be one fixed-shape number per step, "
                            f"not {f.dtype} {f.shape if len(rewards.spec.fields) == 1 else '(nested)'}")
    keep = []
    for i, entry in enumerate(ds.entries):
        ok = True
        for key, value in matches:
            got = _metadata_value(ds, i, key, f"--metadata {key}")
            ok = ok and (got == parse_value(value) or str(got) == value)
        for key, compare, value, text in conditions:
            if not ok:
                break
            if key == "length":
                got = entry.num_steps
            elif key == "return":
                got = episode_return(rewards[i].columns["reward"])
            else:
                got = _metadata_value(ds, i, key, f"--where {text!r}")
            try:
                ok = bool(compare(got, value))
            except TypeError:
                raise DataError(f"--where {text!r}: cannot compare {key} {got!r:.40} with {value!r:.40}") from None
        if ok:
            keep.append(i)
    return ds.take(keep)


def parse_ranges(text: str, n: int) -> list[int]:
    """``'0:10,15,-3:'`` over ``n`` episodes -> indices (Python slice rules; a plain index must exist)."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            bounds = [int(b) if b.strip() else None for b in part.split(":")]
        except ValueError:
            bounds = []
        if not 1 <= len(bounds) <= 3 or (len(bounds) == 1 and bounds[0] is None):
            raise DataError(f"--episodes {part!r}: expected an index or START:STOP[:STEP], e.g. 0:10,15")
        if len(bounds) == 1:
            if not -n <= bounds[0] < n:
                raise DataError(f"--episodes {part}: out of range for a dataset of {n} episodes")
            out.append(bounds[0] % n)
        elif bounds[2:] == [0]:
            raise DataError(f"--episodes {part!r}: a step of 0")
        else:
            out.extend(range(n)[slice(*bounds)])
    return out


def select_episodes(ds: Dataset, ranges: str | None = None, ids: Iterable[str] = ()) -> Dataset:
    """Episodes by index ranges and/or ids (ranges first, in the order given; no episode twice)."""
    picks = parse_ranges(ranges, len(ds)) if ranges else []
    picks += [ds.index_of(i) for i in ids]
    return ds.take(list(dict.fromkeys(picks)))


def keep_fields(ds: Dataset, fields: Sequence[str]) -> Dataset:
    """A view with ``fields`` (paths or prefixes) plus each core field none of them narrows."""
    named = [f for f in fields if f]
    keep = named + [c for c in CORE_FIELDS if not any(f == c or f.startswith(c + SEP) for f in named)]
    return ds.select(keep)


def check_mergeable(datasets: Sequence[Dataset], new_ids: bool = False) -> None:
    """Refuse (naming the first differing field, metadata key or repeated id) datasets that cannot be one."""
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.spec != first.spec:
            why = first.spec.diff(ds.spec).split("; ")[0]
            raise SpecError(f"{ds.root}: its steps differ from {first.root}'s at field {why}; only datasets with "
                            "equal specs merge")
    kinds = first.info.get("metadata_spec")
    for ds in datasets:
        for e in ds.entries:
            try:
                meta.check_metadata(e.metadata, kinds)
            except SpecError as err:
                raise SpecError(f"{ds.root}, episode {e.episode_id!r}: {err} (as in {first.root})") from None
    if new_ids:
        return
    seen: dict[str, Any] = {}
    for ds in datasets:
        for i in ds.episode_ids:
            if str(i) in seen:
                raise DuplicateEpisodeError(f"episode_id {i!r} is in both {seen[str(i)]} and {ds.root}; "
                                            "pass --new-ids to give the merged episodes fresh ids")
            seen[str(i)] = ds.root


def write_dataset(sources: Sequence[Dataset], out, new_ids: bool = False) -> int:
    """Write every episode of ``sources`` (views: their episodes and fields), in order, as a new dataset
    at ``out``; ``new_ids``: drop the episode ids so that the writer assigns fresh ones. Returns the count."""
    spec = sources[0].spec
    count = 0
    with DatasetWriter(out, StepSpec(spec.treedef, spec.fields), config={"made_from": [str(s.root) for s in sources]}) as w:
        for ds in sources:
            for ep in ds:
                md = {k: v for k, v in ep.metadata.items() if not (new_ids and k == "episode_id")}
                w.write_episode(ep.columns, md)
                count += 1
    return count


__all__ = ["check_mergeable", "keep_fields", "parse_condition", "parse_ranges", "select_episodes",
           "where_filter", "write_dataset"]
