"""Why a run refused to start or stopped: one-line errors (``seedrl`` prints them without a traceback).

Every class is a :class:`RunError`; those that refuse to reuse a folder are also
:class:`FileExistsError`, so callers that caught that before still do.
"""

from __future__ import annotations

from pathlib import Path


class RunError(RuntimeError):
    """A run could not start, resume or go on; the message says what and what to do."""


class RunInUse(RunError):
    """Another live process holds the run folder's lock."""


class RunExists(RunError, FileExistsError):
    """The folder already holds a run and ``--resume`` was not given."""


class RunFinished(RunError, FileExistsError):
    """``--resume`` of a run that has already reached its end."""


class NothingToResume(RunError, FileNotFoundError):
    """``--resume`` of a folder that holds no run."""


class ResumeMismatch(RunError, ValueError):
    """The checkpoint does not fit this config (model shape, optimizer, length...)."""


class CheckpointError(RunError):
    """No checkpoint of a run could be used (all damaged, or unreadable)."""


class ActorsFailed(RunError):
    """The actors kept crashing; the learner's state was saved first."""


class InferenceFailed(RunError):
    """An inference server of a Ray run was lost; the learner's state was saved first."""


class InferenceLost(RuntimeError):
    """Raised by a run's serving thread when a Ray inference server died; the run saves a
    checkpoint and turns it into :class:`InferenceFailed`."""


class NonFiniteLoss(RunError, FloatingPointError):
    """A loss (or gradient norm) was NaN or infinite: the run stopped before applying it.

    ``checkpoint`` (filled in by :class:`~seedrl.runtime.run_dir.RunDir` on the way
    out) is the newest checkpoint, which this run did not touch."""

    def __init__(self, what: str, value: float, step: int):
        super().__init__(what, value, step)
        self.what, self.value, self.step = what, value, step
        self.checkpoint: Path | None = None

    def __str__(self) -> str:
        kept = (f"the newest checkpoint is still {self.checkpoint}" if self.checkpoint is not None
                else "the run has no checkpoint")
        return (f"{self.what} is {self.value} at update {self.step}: stopped before applying it, nothing saved; "
                f"{kept} (lower the learning rate or check the rewards, then --resume)")


def check_finite(value: float, what: str, step: int) -> None:
    """Raise :class:`NonFiniteLoss` when ``value`` (a float or one-element tensor) is NaN or infinite."""
    v = float(value.detach()) if hasattr(value, "detach") else float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise NonFiniteLoss(what, v, step)
