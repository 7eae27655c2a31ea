"""Ctrl-C during a run: taken at a safe point of the completion loop, not wherever it lands.

Python raises KeyboardInterrupt in the main thread between any two bytecodes: in the middle of
writing a realization file, between renaming it into place and recording it in the manifest,
or inside `concurrent.futures`' own locking, where it can leave a lock held so that the pool's
shutdown then waits forever.  While a run's completion loop runs in the main thread, SIGINT
only sets a flag; the loop calls `Interrupt.check` between steps, which raises
KeyboardInterrupt there.  The first Ctrl-C also puts the previous handler back, so a second one
raises at once (for a ``simulate`` that never polls `threadensemble.cancelled`).

Only Python's own handler is replaced: SIGINT can be handled only in the main thread, and a
handler that the user installed is theirs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Interrupt", "deferred_keyboard_interrupt"]


class Interrupt:
    """Whether Ctrl-C was pressed during the block of `deferred_keyboard_interrupt`.

    Its flag is set by the signal handler and read by the same (main) thread: no lock.
    """

    def __init__(self) -> None:
        self.received = False

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed: call where the run may stop."""
        if self.received:
            raise KeyboardInterrupt


@contextmanager
def deferred_keyboard_interrupt() -> Iterator[Interrupt]:
    """Hold SIGINT back as a flag for the block (in the main thread, with Python's handler)."""
    interrupt = Interrupt()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield interrupt  # SIGINT cannot reach this block, or it is not ours to handle
        return

    def take(signum: int, frame: FrameType | None) -> None:
        interrupt.received = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, take)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
