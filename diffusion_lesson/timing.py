"""Honest wall-clock timing on any device (benchmarks and notebooks 02-06).

CUDA and MPS run kernels asynchronously: a Python timer around ``model(x)`` measures how long it
took to *queue* the work, not to do it. Every timer here waits for the device before reading the
clock, and ``best_of`` runs one untimed warm-up call first (the first call pays for memory
allocation, kernel selection and, with torch.compile, compilation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait until every kernel queued on ``device`` has finished (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Elapsed:
    """Seconds measured by ``stopwatch``; ``seconds`` is set when the block ends."""

    seconds: float = float("nan")


@contextmanager
def stopwatch(device: torch.device | str = "cpu") -> Iterator[Elapsed]:
    """``with stopwatch(device) as clock: ...`` then ``clock.seconds``: device work included."""
    elapsed = Elapsed()
    synchronize(device)
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        synchronize(device)
        elapsed.seconds = time.perf_counter() - start


def best_of(
    functions: Mapping[str, Callable[[], object]], device: torch.device | str = "cpu", repeats: int = 5
) -> dict[str, float]:
    """Best (least disturbed) seconds of each function over ``repeats`` timed calls, after one warm-up each.

    The functions take turns at every repeat, so a busy spell on a shared machine hits all alike.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in functions.values():
        fn()  # warm-up, untimed
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            with stopwatch(device) as clock:
                fn()
            times[name].append(clock.seconds)
    return {name: min(values) for name, values in times.items()}


class StepBudget:
    """How many steps fit in a wall-clock budget, measured on the run itself (``train(budget_s=...)``).

    Steps per second are measured from the run's own steps since ``skip`` steps after its start
    (the first ones pay start-up costs), so callbacks and checkpoint writes are counted; ``last_step``
    asks again every ``every`` steps, so a change in the machine's load moves the end a little. Once
    the budget is spent the answer is the current step: the run stops after at most one more step.
    """

    def __init__(
        self, seconds: float, first_step: int, skip: int = 3, every: int = 20, clock: Callable[[], float] | None = None
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"a time budget must be a positive number of seconds, got {seconds}")
        self.seconds, self.first_step, self.skip, self.every = seconds, first_step, skip, every
        self.clock = clock or time.perf_counter
        self.started = self.clock()
        self.timed_from: tuple[int, float] | None = None  # (step, time) where the measured stretch begins

    def last_step(self, step: int, device: torch.device | str = "cpu") -> int | None:
        """The step to end at, given that ``step`` steps are done; None while there is nothing to measure yet."""
        done = step - self.first_step
        if done == self.skip:
            synchronize(device)
            self.timed_from = (step, self.clock())
        if self.timed_from is None or done < self.skip + self.every or (done - self.skip) % self.every:
            return None
        synchronize(device)
        now = self.clock()
        if now - self.started >= self.seconds:
            return step
        timed_step, timed_at = self.timed_from
        rate = (step - timed_step) / max(now - timed_at, 1e-9)
        return max(step + 1, step + int(rate * (self.seconds - (now - self.started))))
