"""Prioritized sequence replay for R2D2: a sum-tree, per-stream step storage with frames stored once,
optional compression, checkpointing, and seeding from an RLDS dataset."""

from seedrl.runtime.replay.sequence_replay import SequenceReplay
from seedrl.runtime.replay.sum_tree import SumTree

__all__ = ["SequenceReplay", "SumTree"]
