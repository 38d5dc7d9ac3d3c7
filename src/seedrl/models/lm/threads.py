"""How many intra-op threads a decode step runs with: fixed, inherited, or measured (``"auto"``).

A decode step of a small model is ~90 short kernels (tiny GPT-2, 16 rows: 17 GEMMs of
a few hundred microseconds, the rest tens). Each kernel that goes parallel first wakes the
other OpenMP workers; with spinning workers (the OpenMP default) that is free, with
sleeping ones (``OMP_WAIT_POLICY=PASSIVE``, or a loaded machine that has descheduled them)
it costs more than the second core gives back: on 2 cores the tiny model decodes 1,275 -
1,628 tokens/s with 2 threads and ``PASSIVE`` against ~1,800 with 1, and ~2,900 with 2
spinning threads (docs/benchmarks.md, "Decode threads"). Which is faster depends on the
machine's state, not only on the model, so ``"auto"`` measures it.

``"auto"``: with ``N = torch.get_num_threads()`` of the calling thread, the candidates are
``N``, ``N // 2`` (when ``N >= 4``) and 1. The first ``ROUNDS * len(candidates)`` decode
steps take the candidates in turn (round robin: neighbouring steps have about the same
rows and attended length), and the candidate with the smallest median step time wins
until :data:`REPROBE_STEPS` steps later, when it is measured again (the machine's load
moves), or until ``N`` changes. The median drops the step that carries a prefill.

The choice changes speed, and numbers only in the last float bits: a product or a
reduction split over threads rounds in another order (the tiny test models' log-probs
differ by up to ~3e-6 between 1 and 2 threads; the benchmark's tiny GPT-2 not at all), so a
sampled token changes only where a CDF boundary falls within that, as with a change of batch
composition. Since what ``"auto"`` picks depends on timing, it is not the
:class:`~seedrl.models.lm.sampler.Sampler` default: runs that must repeat bit for bit keep
``threads=None`` (the caller's count) or a fixed int. The count is set with
``torch.set_num_threads`` for the duration of the step and restored after it. torch keeps
that count for the whole process (``torch.get_num_threads`` in another thread reads it
too): where a generation server's thread decodes beside a learner thread of the same
process, the learner's kernels that start during such a step also run with the step's
count. A server in its own process (the Ray backend's generation actors) has no such
neighbour.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

AUTO = "auto"
#: steps per candidate in one measurement
ROUNDS = 4
#: steps between measurements
REPROBE_STEPS = 2048


def check_threads(threads) -> int | str | None:
    """``threads`` as a :class:`DecodeThreads` setting, or a ``ValueError`` naming it."""
    if threads is None or threads == AUTO:
        return threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: expected a positive int, 'auto' or None")
    return threads


class DecodeThreads:
    """The intra-op thread count of each decode step (see the module docstring).

    Args:
        setting: ``None`` (leave the caller's count), a positive int (that count) or ``"auto"``.
        clock, get_threads, set_threads: injectable for tests (default: ``time.perf_counter``,
            ``torch.get_num_threads``, ``torch.set_num_threads``).
    """

    def __init__(self, setting: int | str | None = None, *, clock: Callable[[], float] = time.perf_counter,
                 get_threads: Callable[[], int] = torch.get_num_threads,
                 set_threads: Callable[[int], None] = torch.set_num_threads):
        self.setting = check_threads(setting)
        self._clock, self._get, self._set = clock, get_threads, set_threads
        self._base: int | None = None  # the caller's count the candidates were made from
        self._candidates: list[int] = []
        self._times: dict[int, list[float]] = {}
        self._probe_left = 0
        self._steps_since = 0
        self.chosen: int | None = None  #: the count "auto" settled on (None while measuring or not auto)
        self.measurements = 0  #: completed measurements ("auto")

    def _start_probe(self, base: int) -> None:
        self._base = base
        self._candidates = sorted({base, 1} | ({base // 2} if base >= 4 else set()), reverse=True)
        self._times = {c: [] for c in self._candidates}
        self._probe_left = ROUNDS * len(self._candidates)
        self.chosen = None

    def _next(self, base: int) -> tuple[int, bool]:
        """(threads for this step, whether its time is recorded)."""
        if self.setting is None:
            return base, False
        if self.setting != AUTO:
            return int(self.setting), False
        if base == 1:
            return 1, False
        if base != self._base or (self.chosen is not None and self._steps_since >= REPROBE_STEPS):
            self._start_probe(base)
        if self._probe_left > 0:
            k = len(self._candidates)
            return self._candidates[(ROUNDS * k - self._probe_left) % k], True
        return self.chosen, False  # type: ignore[return-value]

    def _record(self, threads: int, seconds: float) -> None:
        self._times[threads].append(seconds)
        self._probe_left -= 1
        if self._probe_left == 0:
            self.chosen = min(self._candidates, key=lambda c: statistics.median(self._times[c]))
            self._steps_since = 0
            self.measurements += 1

    @contextmanager
    def step(self) -> Iterator[int]:
        """Run the body (one decode step) with this step's thread count; yields it."""
        base = self._get()
        threads, timed = self._next(base)
        if threads != base:
            self._set(threads)
        start = self._clock()
        try:
            yield threads
        finally:
            if threads != base:
                self._set(base)
        if timed:
            self._record(threads, self._clock() - start)
        self._steps_since += 1
