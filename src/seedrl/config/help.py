"""Human-readable listing of every key of a config dataclass (``seedrl run --help-config``)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from seedrl.config.loader import _field_default, _plain, field_types, is_dataclass_type, strip_optional, type_name

_CONSTRAINTS = (("min", ">="), ("max", "<="), ("min_exclusive", ">"), ("max_exclusive", "<"))


def _default_text(f: dataclasses.Field, owner: Any = None) -> str:
    if owner is not None:
        value = getattr(owner, f.name)
    elif f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        try:
            value = f.default_factory()
        except Exception:
            return "<factory>"
    else:
        return "(required)"
    text = repr(_plain(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _help_text(f: dataclasses.Field, tp: Any) -> str:
    meta = f.metadata
    notes = [f"{sign} {meta[key]!r}" for key, sign in _CONSTRAINTS if key in meta]
    base, _ = strip_optional(tp)
    if "choices" in meta:
        notes.append(f"one of {list(meta['choices'])!r}")
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        notes.append(f"one of {[m.value for m in base]!r}")
    text = str(meta.get("help", ""))
    return f"{text} [{', '.join(notes)}]".strip() if notes else text


def _rows(cls: type, prefix: str, seen: tuple[type, ...], owner: Any = None) -> list[tuple[str, str, str, str]]:
    """Rows of ``cls``'s keys; ``owner`` is the instance whose values are the defaults (a section's
    defaults are its field's default instance, which may differ from the section class's)."""
    rows = []
    for f, tp in field_types(cls):
        key = prefix + f.name
        base, optional = strip_optional(tp)
        nested = is_dataclass_type(base) and base not in seen
        if not nested or optional:
            rows.append((key, type_name(tp), _default_text(f, owner), _help_text(f, tp)))
        if nested:
            inner = getattr(owner, f.name) if owner is not None else _field_default(f)
            rows.extend(_rows(base, key + ".", seen + (base,), inner if isinstance(inner, base) else None))
    return rows


def format_config_help(cls: type) -> str:
    """A table of every key path of dataclass ``cls`` with its type, default and help text.

    Nested dataclasses are expanded into dotted keys (the form overrides use);
    range and choice constraints from field metadata are appended to the help.
    """
    if not is_dataclass_type(cls):
        raise TypeError(f"format_config_help needs a dataclass type, got {cls!r}")
    unused = set(getattr(cls, "unused_keys", ()))  # shared keys this kind of run refuses
    rows = [("KEY", "TYPE", "DEFAULT", "HELP"), *(r for r in _rows(cls, "", (cls,)) if r[0] not in unused)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3] for row in rows]
    renames = getattr(cls, "renamed_keys", None) or {}
    if renames:
        lines += ["", "Old spellings still accepted (with a deprecation warning): "
                  + ", ".join(f"{old} -> {new}" for old, new in renames.items())]
    return "\n".join(line.rstrip() for line in lines)
