"""Per-thread copies of the mutable model state.

The engine hands the master state to `PerThreadState`; the thread pool's initializer makes one
deep copy per worker thread and keeps it in ``threading.local`` storage.  Threads that no
initializer of ours runs on (dask workers) make their copy on first use instead (``lazy=True``).
Each copy belongs to exactly one thread for the whole run, so reading and mutating it needs no
lock.  The master is only ever read (by ``copy.deepcopy``, possibly from several threads at once).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from ._errors import WorkerInitError

__all__ = ["PerThreadState", "copy_state", "worker_init_error"]


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


def worker_init_error(cause: BaseException) -> WorkerInitError:
    """Return the error that stops a run whose worker thread could not copy the state."""
    return WorkerInitError(
        f"a worker thread could not deep-copy the state: {type(cause).__name__}: {cause}"
    )


class PerThreadState:
    """The master state of one run and its per-thread deep copies.

    Parameters
    ----------
    master : object
        The state to copy.  Not modified.
    lazy : bool, default False
        Make a thread's copy on its first `get` (for threads that run no initializer of ours)
        instead of in `initialize`.
    """

    def __init__(self, master: Any, lazy: bool = False) -> None:
        self._master = master
        self._lazy = lazy
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
        """Return the calling thread's copy (made now if lazy and this thread has none yet).

        Raises
        ------
        WorkerInitError
            Lazy, and the copy could not be made.
        """
        try:
            return self._local.copy
        except AttributeError:
            if not self._lazy:
                raise RuntimeError(
                    "this thread has no copy of the state: it is not a worker"
                ) from None
        try:
            self._local.copy = copy.deepcopy(self._master)
        except Exception as exc:
            raise worker_init_error(exc) from exc
        return self._local.copy
