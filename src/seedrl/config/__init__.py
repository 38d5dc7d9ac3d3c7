"""Typed configuration: YAML files mapped onto dataclasses, with ``key.sub=value`` overrides.

Declare a config as an ordinary ``@dataclasses.dataclass`` with annotations;
give help and constraints through ``field(metadata={"help": ..., "min": ...,
"max": ..., "min_exclusive": ..., "max_exclusive": ..., "choices": [...]})``
and cross-field checks through an optional ``validate(self)`` method::

    cfg = load_config(TrainConfig, "configs/cartpole.yaml", ["learner.lr=3e-4"])
    save_config(cfg, run_dir / "config.yaml")

Unknown keys, wrong types, out-of-range values and missing required keys all
raise :class:`ConfigError` at load time, naming the full key path.
"""

from seedrl.config.help import format_config_help
from seedrl.config.loader import ConfigError, config_to_dict, load_config, save_config

__all__ = ["ConfigError", "config_to_dict", "format_config_help", "load_config", "save_config"]
