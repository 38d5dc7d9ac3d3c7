"""The config sections every run shares, under the same names for games and language models.

A run config (:class:`RunConfig` subclasses: ``TrainConfig`` for games, ``LMPGConfig`` /
``LMBondConfig``, ``SFTConfig``, ``BanditBondConfig``) has

- run identity at the top: ``algo``, ``name``, ``out_dir``, ``seed``;
- ``optim`` (:class:`OptimConfig`): optimiser, learning rate and its schedule, gradient clip;
- ``runtime``: actors and the backend (its fields depend on the kind of run);
- ``log`` (:class:`LogConfig`): metric rows, progress bar, TensorBoard, checkpoints;
- ``record`` (:class:`RecordConfig`): episodes / completions recorded as RLDS;

with the algorithm's own sections beside them (``agent``, ``pg``, ``bond``, ``data``...).
Each kind gives the shared sections its own defaults (``field(default_factory=...)``;
a YAML section that sets some keys keeps the kind's defaults for the others) and
names in ``unused_keys`` the shared keys it would ignore: ``validate`` refuses them away
from their default (:meth:`RunConfig.refuse_unused_keys`) and ``--help-config`` leaves them out.

Spellings of older releases are listed in a config class's ``renamed_keys`` (old dotted
key -> new one); the loader maps them with a :class:`ConfigDeprecationWarning`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from seedrl.config.loader import ConfigError, _field_default
from seedrl.errors import check_writable

__all__ = ["LogConfig", "OptimConfig", "RecordConfig", "RunConfig", "refuse_unused"]


@dataclass
class RunConfig:
    """Run identity, shared by every run: the run directory is ``<out_dir>/<name>``."""

    algo: str = field(default="", metadata={"help": "the trainer `seedrl run` dispatches on"})
    name: str = field(default="run", metadata={"help": "run name; the run directory is <out_dir>/<name>"})
    out_dir: Path = field(default=Path("runs"), metadata={"help": "parent of run directories"})
    seed: int = field(default=0, metadata={"help": "seed of models, sampling, data order and environments"})

    #: old dotted key -> new dotted key, still accepted with a deprecation warning
    renamed_keys: ClassVar[dict[str, str]] = {}
    #: dotted keys of the shared sections (``optim.warmup_steps``) this kind of run does not use
    unused_keys: ClassVar[tuple[str, ...]] = ()

    def refuse_unused_keys(self) -> None:
        """:class:`ConfigError` for a key of ``unused_keys`` set away from this kind's default (it would be ignored)."""
        defaults = {f.name: f for f in fields(self)}
        for key in self.unused_keys:
            section, name = key.split(".", 1)
            refuse_unused(getattr(self, section), _field_default(defaults[section]), (name,), section,
                          self.algo or type(self).__name__)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def check_inputs(self) -> None:
        """Start-up checks that look at the disk (``validate`` looks only at the config): ``out_dir``
        can be written; subclasses add their model folders and data files. ``seedrl run`` calls it
        before anything is written; each raises a :class:`~seedrl.errors.UserError` naming the key."""
        check_writable(self.out_dir, "out_dir")


@dataclass
class OptimConfig:
    """Optimiser of the learner: ``lr`` at update ``s`` of ``S`` is ``lr * lr_factor(s, S)``."""

    name: str = field(default="adam", metadata={"help": "adam, adamw (decoupled weight decay) or rmsprop",
                                                "choices": ["adam", "adamw", "rmsprop"]})
    lr: float = field(default=6e-4, metadata={"help": "peak learning rate", "min_exclusive": 0.0})
    eps: float = field(default=1e-8, metadata={"help": "optimizer epsilon (RMSProp in IMPALA: 0.01)", "min_exclusive": 0.0})
    rmsprop_alpha: float = field(default=0.99, metadata={"help": "RMSProp smoothing", "min": 0.0, "max": 1.0})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay (adamw: decoupled; adam/rmsprop: L2)", "min": 0.0})
    grad_clip: float | None = field(default=40.0, metadata={"help": "global grad-norm clip; null or 0 = none", "min": 0.0})
    lr_decay: str = field(default="linear", metadata={"help": "linear (to lr * min_lr_ratio at the end of the run) or none",
                                                      "choices": ["linear", "none"]})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up updates", "min": 0})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr / peak lr of the linear decay", "min": 0.0, "max": 1.0})

    @property
    def clip_norm(self) -> float | None:
        """The gradient-norm bound, or ``None`` when clipping is off (``grad_clip`` null or 0)."""
        return self.grad_clip or None


@dataclass
class LogConfig:
    """Metric rows, progress bar, TensorBoard and checkpoints."""

    every: int = field(default=10, metadata={"help": "updates between metric rows (language and bandit runs)", "min": 1})
    every_s: float = field(default=2.0, metadata={"help": "seconds between metric rows (game runs)", "min": 0.0})
    tensorboard: bool = field(default=True, metadata={"help": "also write TensorBoard events (if installed)"})
    checkpoint_every: int = field(default=500, metadata={"help": "learner updates between checkpoints", "min": 0})
    keep_checkpoints: int = field(default=3, metadata={"help": "newest checkpoints kept", "min": 1})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    solved_return: float | None = field(default=None, metadata={
        "help": "stop once the mean return of the last 100 episodes reaches this (game runs)"})


@dataclass
class RecordConfig:
    """Recording of episodes (games) or completions (language runs) into an RLDS store."""

    rate: float = field(default=0.0, metadata={"help": "fraction of episodes recorded (0 = off)", "min": 0.0, "max": 1.0})
    path: Path | None = field(default=None, metadata={"help": "dataset directory (default: <run>/episodes)"})


def refuse_unused(section: Any, default: Any, names: tuple[str, ...], path: str, kind: str) -> None:
    """Raise :class:`ConfigError` if ``section`` sets one of ``names`` away from ``default``'s value.

    For shared sections whose key a kind of run does not use: a value there would be ignored.
    """
    for name in names:
        value = getattr(section, name)
        if value != getattr(default, name):
            key = f"{path}.{name}"
            raise ConfigError(f"config error: '{key}' = {value!r} is not used by {kind} runs (leave it at "
                              f"{getattr(default, name)!r})", key)
