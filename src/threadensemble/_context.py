"""What a running realization may ask about itself: its index, and whether the run is cancelled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["CancelFlag", "cancelled", "current_realization", "realization_context"]


class CancelFlag(Protocol):
    """What tells a run's realizations that it is cancelled.

    A `threading.Event`, or a `multiprocessing` Event shared with worker processes.
    """

    def is_set(self) -> bool:
        """Return True once the run is cancelled."""
        ...


_local = threading.local()


def current_realization() -> int | None:
    """Return the index of the realization the calling thread is computing, or None."""
    index: int | None = getattr(_local, "index", None)
    return index


def cancelled() -> bool:
    """Return True when the run the calling thread works for has been cancelled.

    A long ``simulate`` may poll this (say once per time step) and return early; whatever it
    returns after cancellation is discarded, never written.  Outside a realization it is False.
    """
    event: CancelFlag | None = getattr(_local, "cancel", None)
    return event is not None and event.is_set()


@contextmanager
def realization_context(index: int, cancel: CancelFlag) -> Iterator[None]:
    """Mark the calling thread as computing realization ``index``; ``cancel`` cancels its run."""
    _local.index, _local.cancel = index, cancel
    try:
        yield
    finally:
        _local.index = _local.cancel = None
