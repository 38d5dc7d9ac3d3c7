"""The YAML dialect of config files: PyYAML's safe loader, with ``3e-4`` read as a float.

PyYAML follows YAML 1.1, where ``3e-4`` (no dot) is a string; configs are full of
such learning rates, so :func:`load_yaml` resolves them as floats, and
:func:`dump_yaml` quotes every string that this loader would read as something else.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also resolves ``3e-4`` and ``1e5`` as floats."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper sharing :class:`_Loader`'s resolvers, so strings round-trip."""


_Loader.yaml_implicit_resolvers = {
    ch: [r for r in rs if r[0] != _FLOAT_TAG] for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))
_Dumper.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
_Dumper.add_representer(  # YAML folds these line breaks unless the string is double-quoted
    str,
    lambda dumper, data: dumper.represent_scalar(
        "tag:yaml.org,2002:str", data, style='"' if any(c in data for c in "\r\x85\u2028\u2029") else None
    ),
)

YAMLError = yaml.YAMLError


def load_yaml(text: str) -> Any:
    """Parse one YAML document (safe tags only)."""
    return yaml.load(text, Loader=_Loader)


def dump_yaml(data: Any) -> str:
    """Block-style YAML for plain data, keys in insertion order; :func:`load_yaml` reads it back equal."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
