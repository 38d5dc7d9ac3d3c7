"""Configs of a training run: the runtime's own knobs and the whole job."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from seedrl.agents.appo import AppoConfig
from seedrl.agents.impala import ImpalaConfig
from seedrl.agents.r2d2 import R2D2Config
from seedrl.config import ConfigError
from seedrl.config.sections import LogConfig, OptimConfig, RecordConfig, RunConfig
from seedrl.envs.checks import check_discrete_actions
from seedrl.envs.config import EnvConfig
from seedrl.models.config import ModelConfig

__all__ = ["AppoTrainConfig", "LogConfig", "OptimConfig", "R2D2TrainConfig", "RayClusterConfig", "RayConfig", "RecordConfig", "RuntimeConfig", "TrainConfig"]


@dataclass
class RayClusterConfig:
    """The cluster a Ray run joins (or starts) and how its Ray actors are placed: what game and language runs share."""

    address: str | None = field(default=None, metadata={"help": "join an existing Ray cluster ('auto' or 'host:port'); absent: start a local Ray instance for the run and stop it at the end"})
    num_cpus: float | None = field(default=None, metadata={"help": "logical CPUs of the local instance (default: what the run's Ray actors request, at least 1); ignored with address", "min_exclusive": 0.0})
    actor_cpus: float = field(default=1.0, metadata={"help": "CPUs each actor group (one Ray actor) requests", "min_exclusive": 0.0})
    object_store_mb: int = field(default=200, metadata={"help": "object store of the local instance, MB (Ray's minimum is 75); ignored with address", "min": 75})
    scheduling: str = field(default="spread", metadata={"help": "placement of actor groups on the cluster's nodes without a placement group (placement: none): spread (one node after another) or default (Ray packs them)", "choices": ["spread", "default"]})


@dataclass
class RayConfig(RayClusterConfig):
    """Where the Ray backend (``runtime.backend: ray``) runs a game run's roles and what each asks for."""

    inference_servers: int = field(default=1, metadata={"help": "central inference servers, each owning a shard of the actor groups: 1 = a thread of the driver (as embedded); K >= 2 = K Ray actors, the learner publishing every weight version to each", "min": 1})
    server_cpus: float = field(default=1.0, metadata={"help": "CPUs each inference server's Ray actor requests (inference_servers >= 2)", "min_exclusive": 0.0})
    server_gpus: float = field(default=0.0, metadata={"help": "GPUs each inference server's Ray actor requests (inference_servers >= 2); a reservation only: game models still run on the CPU", "min": 0.0})
    placement: str = field(default="none", metadata={"help": "a Ray placement group for the actor groups and inference servers: pack (few nodes), spread (across nodes) or none (each actor placed by scheduling)", "choices": ["none", "pack", "spread"]})


def check_ray_installed(backend: str) -> None:
    """``runtime.backend: ray`` without Ray installed: a one-line :class:`ConfigError` naming the extra."""
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("config error: 'runtime.backend' = 'ray' needs Ray, which is not installed: "
                          "pip install 'seedrl[ray]'", "runtime.backend")


@dataclass
class RuntimeConfig:
    """How actors, central inference and the learner are laid out."""

    backend: str = field(default="processes", metadata={"help": "processes (embedded: shared memory on this machine), threads (one process, for debugging) or ray (actor groups as Ray actors; needs the ray extra)", "choices": ["processes", "threads", "ray"]})
    num_actors: int | Literal["auto"] = field(default=2, metadata={"help": "actor processes; auto = chosen at start from cores and measured costs (seedrl.runtime.layout)", "min": 1})
    unroll_length: int = field(default=20, metadata={"help": "T: transitions learned per unroll (impala: unrolls overlap by one step; r2d2: L, sequences hold agent.burn_in + L + 1 entries)", "min": 1})
    batch_size: int = field(default=16, metadata={"help": "environments' unrolls per learner batch (actor unrolls are split or joined to make it)", "min": 1})
    batch_timeout_ms: float | Literal["auto"] = field(default=0.0, metadata={"help": "how long an inference batch waits for more actors; auto = chosen at start (seedrl.runtime.layout)", "min": 0.0})
    queue_unrolls: int | Literal["auto"] = field(default=8, metadata={"help": "bound of the inference->learner queue, in actor unrolls; auto = about 8 learner updates of data (seedrl.runtime.layout)", "min": 1})
    inference: str = field(default="central", metadata={"help": "where the policy acts: central (one batched inference thread in the learner process, SEED RL) or actors (each actor process runs its own copy on its environments: for policies cheaper than the environment, processes backend, impala/appo); auto = chosen at start (seedrl.runtime.layout)", "choices": ["central", "actors", "auto"]})
    torch_threads: int = field(default=1, metadata={"help": "torch intra-op threads of the learner process (1 is fastest on a small shared machine: OpenMP threads spin)", "min": 1})
    max_restarts: int = field(default=20, metadata={"help": "actor crashes tolerated before the run fails", "min": 0})
    ray: RayConfig = field(default_factory=RayConfig)
    replay_compression: str = field(default="none", metadata={"help": "r2d2: codec of the replay's observation frames (lz4 for Atari: ~95 bytes per step instead of 28 KB)", "choices": ["none", "zlib", "lz4"]})


@dataclass
class TrainConfig(RunConfig):
    """A whole IMPALA training job (``configs/*_impala.yaml``)."""

    algo: str = field(default="impala", metadata={"help": "impala (V-trace actor-critic on games)", "choices": ["impala"]})
    total_frames: int = field(default=1_000_000, metadata={"help": "environment frames to train for", "min": 1})
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: ImpalaConfig = field(default_factory=ImpalaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    record: RecordConfig = field(default_factory=RecordConfig)

    # game runs log by time and schedule the learning rate by frames
    unused_keys: ClassVar[tuple[str, ...]] = ("log.every", "optim.warmup_steps", "optim.min_lr_ratio",
                                              "runtime.replay_compression")

    def validate(self) -> None:
        self.refuse_unused_keys()
        if self.log.checkpoint_every < 1:
            raise ConfigError(f"config error: 'log.checkpoint_every' = {self.log.checkpoint_every} is below the "
                              "minimum 1 for impala runs", "log.checkpoint_every")
        check_ray_installed(self.runtime.backend)
        servers, actors = self.runtime.ray.inference_servers, self.runtime.num_actors
        if self.runtime.backend == "ray" and isinstance(actors, int) and servers > actors:
            raise ConfigError(f"config error: 'runtime.ray.inference_servers' = {servers} is above the {actors} actor "
                              "groups (runtime.num_actors): each server owns at least one group",
                              "runtime.ray.inference_servers")
        if self.runtime.inference == "actors" and not _acts_on_actors(self.algo):
            raise ConfigError(f"config error: 'runtime.inference' = 'actors' runs a policy that samples its actions in "
                              f"the actor processes; algo {self.algo!r} acts with central inference "
                              "(runtime.inference: central)", "runtime.inference")
        if self.runtime.inference == "actors" and self.runtime.backend != "processes":
            raise ConfigError(f"config error: 'runtime.inference' = 'actors' runs the policy in actor processes; "
                              f"'runtime.backend' = {self.runtime.backend!r} does not have them: use 'processes' or "
                              "runtime.inference: central", "runtime.inference")
        if self.env.kind == "gym":  # Atari games always have discrete actions and image observations
            check_discrete_actions(self.env, self.algo)


def _acts_on_actors(algo: str) -> bool:
    from seedrl.runtime.algorithms import game_algo  # it imports this module's config classes lazily too

    return game_algo(algo).acts_on_actors


@dataclass
class AppoTrainConfig(TrainConfig):
    """A whole APPO training job (``configs/*_appo.yaml``): the ``agent`` section is
    :class:`~seedrl.agents.appo.AppoConfig`; each batch of ``runtime.batch_size`` environments
    is learned from ``agent.epochs`` times in ``agent.minibatches`` gradient steps."""

    algo: str = field(default="appo", metadata={"help": "appo (V-trace targets, PPO's clipped surrogate, several passes per batch)", "choices": ["appo"]})
    agent: AppoConfig = field(default_factory=AppoConfig)

    def validate(self) -> None:
        super().validate()
        self.agent.validate_batch(self.runtime.batch_size, self.runtime.unroll_length)


@dataclass
class R2D2TrainConfig(TrainConfig):
    """A whole R2D2 training job (``configs/*_r2d2.yaml``): the ``agent`` section is
    :class:`~seedrl.agents.r2d2.R2D2Config`; ``runtime.unroll_length`` is L, the learned part
    of each replayed sequence of ``agent.burn_in + L + 1`` entries; ``runtime.batch_size`` is
    the number of sequences per learner update."""

    algo: str = field(default="r2d2", metadata={"help": "r2d2 (recurrent Q-learning with prioritized sequence replay)", "choices": ["r2d2"]})
    agent: R2D2Config = field(default_factory=R2D2Config)

    unused_keys: ClassVar[tuple[str, ...]] = ("log.every", "optim.warmup_steps", "optim.min_lr_ratio")

    def validate(self) -> None:
        super().validate()
        self.agent.validate()
        actors, per_actor = self.runtime.num_actors, self.env.num_envs
        envs = actors * per_actor if isinstance(actors, int) and isinstance(per_actor, int) else 0  # 'auto': checked once chosen
        if envs and self.agent.eval_envs >= envs:
            raise ConfigError(f"config error: 'agent.eval_envs' = {self.agent.eval_envs} leaves no training environment "
                              f"of the {envs} (runtime.num_actors x env.num_envs)", "agent.eval_envs")
        if self.agent.replay_capacity < envs:
            raise ConfigError(f"config error: 'agent.replay_capacity' = {self.agent.replay_capacity} is below the "
                              f"{envs} environments (runtime.num_actors x env.num_envs) one insert round adds",
                              "agent.replay_capacity")
