"""Typed configuration: YAML files mapped onto dataclasses, with ``key.sub=value`` overrides.

Declare a config as an ordinary ``@dataclasses.dataclass`` with annotations;
give help and constraints through ``field(metadata={"help": ..., "min": ...,
"max": ..., "min_exclusive": ..., "max_exclusive": ..., "choices": [...]})``
and cross-field checks through an optional ``validate(self)`` method::

    cfg = load_config(TrainConfig, "configs/cartpole_impala.yaml", ["optim.lr=3e-4"])
    save_config(cfg, run_dir / "config.yaml")

Unknown keys, wrong types, out-of-range values and missing required keys all
raise :class:`ConfigError` at load time, naming the full key path. A section given
as a mapping keeps its field's default instance for the keys it leaves out. A class's
``renamed_keys`` (old dotted key -> new) keeps old spellings loading, in files and in
overrides, with a :class:`ConfigDeprecationWarning`; giving both spellings is an error.
The sections every run shares are in :mod:`seedrl.config.sections`.
"""

from seedrl.config.help import format_config_help
from seedrl.config.loader import ConfigDeprecationWarning, ConfigError, config_to_dict, load_config, save_config

__all__ = ["ConfigDeprecationWarning", "ConfigError", "config_to_dict", "format_config_help", "load_config", "save_config"]
