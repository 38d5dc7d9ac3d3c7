"""Configs of a training run: the runtime's own knobs and the whole job."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seedrl.agents.impala import ImpalaConfig
from seedrl.envs.config import EnvConfig
from seedrl.models.config import ModelConfig
from seedrl.runtime.learner import OptimConfig


@dataclass
class RuntimeConfig:
    """How actors, central inference and the learner are laid out."""

    backend: str = field(default="processes", metadata={"help": "processes (embedded, shared memory) or threads (one process, for debugging)", "choices": ["processes", "threads"]})
    num_actors: int = field(default=2, metadata={"help": "actor processes", "min": 1})
    unroll_length: int = field(default=20, metadata={"help": "T: transitions per unroll (unrolls overlap by one step)", "min": 1})
    batch_size: int = field(default=16, metadata={"help": "environments' unrolls per learner batch (actor unrolls are split or joined to make it)", "min": 1})
    batch_timeout_ms: float = field(default=0.0, metadata={"help": "how long an inference batch waits for more actors", "min": 0.0})
    queue_unrolls: int = field(default=8, metadata={"help": "bound of the inference->learner queue, in actor unrolls", "min": 1})
    torch_threads: int = field(default=1, metadata={"help": "torch intra-op threads of the learner process (1 is fastest on a small shared machine: OpenMP threads spin)", "min": 1})
    max_restarts: int = field(default=20, metadata={"help": "actor crashes tolerated before the run fails", "min": 0})


@dataclass
class LogConfig:
    """Metrics, progress and checkpoints."""

    every_s: float = field(default=2.0, metadata={"help": "seconds between metric rows", "min": 0.0})
    tensorboard: bool = field(default=True, metadata={"help": "also write TensorBoard events (if installed)"})
    checkpoint_every: int = field(default=500, metadata={"help": "learner updates between checkpoints", "min": 1})
    keep_checkpoints: int = field(default=3, metadata={"help": "newest checkpoints kept", "min": 1})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    solved_return: float | None = field(default=None, metadata={"help": "stop once the mean return of the last 100 episodes reaches this"})


@dataclass
class RecordConfig:
    """Recording of the actors' episodes into an RLDS store."""

    rate: float = field(default=0.0, metadata={"help": "fraction of episodes recorded (0 = off)", "min": 0.0, "max": 1.0})
    path: Path | None = field(default=None, metadata={"help": "dataset directory (default: <run>/episodes)"})


@dataclass
class TrainConfig:
    """A whole IMPALA training job (``configs/*_impala.yaml``)."""

    algo: str = field(default="impala", metadata={"help": "impala (V-trace actor-critic on games)", "choices": ["impala"]})
    name: str = field(default="run", metadata={"help": "run name; the run directory is <out_dir>/<name>"})
    out_dir: Path = field(default=Path("runs"), metadata={"help": "parent of run directories"})
    seed: int = field(default=0, metadata={"help": "seed of models, samplers and environments"})
    total_frames: int = field(default=1_000_000, metadata={"help": "environment frames to train for", "min": 1})
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: ImpalaConfig = field(default_factory=ImpalaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name
