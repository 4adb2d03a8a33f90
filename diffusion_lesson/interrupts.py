"""Ctrl-C and ``kill``: where they may stop the course's code, and where they wait.

A training step's update (weights, EMA, step counter) and a file's write are all or nothing: an
interrupt that arrives during one is held until it ends (``interrupts_deferred``), so a run stays
resumable and a checkpoint is never half written. The command-line tools also let ``kill PID``
(SIGTERM) stop them as Ctrl-C does (``stop_on_sigterm``): a run started in the background, where
the shell makes it ignore Ctrl-C, still saves the step it reached. A notebook kernel keeps its own
handlers. Signals reach only the main thread; elsewhere nothing is held.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT), or a SIGTERM after ``stop_on_sigterm``, until the block ends, then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = [signal.SIGINT]
    if signal.getsignal(signal.SIGTERM) is _sigterm_as_interrupt:
        held.append(signal.SIGTERM)
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt
