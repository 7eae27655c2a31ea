"""Per-thread copies of the mutable model state.

The engine hands the master state to `PerThreadState`; the thread pool's initializer makes one
deep copy per worker thread and keeps it in ``threading.local`` storage.  Each copy belongs to
exactly one thread for the whole run, so reading and mutating it needs no lock.  The master is
only ever read (by ``copy.deepcopy``, possibly from several initializers at once).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

__all__ = ["PerThreadState", "copy_state"]


def copy_state(state: Any) -> Any:
    """Return a deep copy of ``state``; raise TypeError naming the cause when there is none.

    The engine works from this copy (the master of the run), never from the user's object, and
    makes it before any thread starts, so an uncopyable state is reported first.
    """
    try:
        return copy.deepcopy(state)
    except Exception as exc:
        raise TypeError(
            f"state must be deep-copyable (each worker thread gets its own copy), but "
            f"copy.deepcopy failed on {type(state).__name__}: {type(exc).__name__}: {exc}"
        ) from exc


class PerThreadState:
    """The master state of one run and its per-thread deep copies.

    Parameters
    ----------
    master : object
        The state to copy.  Not modified.
    """

    def __init__(self, master: Any) -> None:
        self._master = master
        self._local = threading.local()
        # Filled by initializers that failed.  list.append is atomic on both builds (the
        # free-threaded build locks the list object), so no lock of ours is needed.
        self.init_errors: list[BaseException] = []

    def initialize(self) -> None:
        """Deep-copy the master into the calling thread's storage (a pool initializer)."""
        try:
            self._local.copy = copy.deepcopy(self._master)
        except BaseException as exc:
            self.init_errors.append(exc)
            raise

    def get(self) -> Any:
        """Return the calling thread's copy."""
        try:
            return self._local.copy
        except AttributeError:
            raise RuntimeError("this thread has no copy of the state: it is not a worker") from None
