"""Whether a model can travel to dask workers or worker processes (`check_picklable`).

Local threads share the model as it is; the dask backend (`threadensemble._distributed`) and
the process backend (`threadensemble._processes`) pickle it.  The dask check needs cloudpickle
only (a dependency of dask), not distributed; the process backend checks with the pickler it
sends the model with (`model_pickler`).
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._shared import children

__all__ = [
    "DASK_ADVICE",
    "PROCESSES_ADVICE",
    "model_pickler",
    "raise_if_main_cannot_start_workers",
    "raise_if_not_for_dask",
    "raise_if_unpicklable",
]

PROCESSES_ADVICE = (
    'with backend="processes", simulate, args, kwargs and state are pickled and sent to every '
    "worker process; create such objects inside simulate (or give their class __getstate__ "
    'and __setstate__), or run on threads (backend="threads")'
)


DASK_ADVICE = (
    "on a dask cluster, simulate, args, kwargs and state are pickled and sent to every worker "
    "process; create such objects inside simulate (or give their class __getstate__ and "
    "__setstate__), or run on local threads (client=None)"
)


def raise_if_main_cannot_start_workers() -> None:
    """Raise RuntimeError if a new worker process could not load the calling program.

    A ``forkserver`` or ``spawn`` worker first runs the calling program's main module again
    (as ``__mp_main__``), found by its module name or its file; a program read from standard
    input (``python - < script.py``: ``__file__`` is ``'<stdin>'``) or a script deleted since
    it started cannot be, and the worker dies at start with a bare BrokenPipeError.  A worker
    that is running the main module again (one that starts the run when imported) is told so.
    """
    from multiprocessing import process

    if getattr(process.current_process(), "_inheriting", False):  # as multiprocessing checks
        raise RuntimeError(
            'backend="processes" was called while a worker process imports the main module '
            'again: start the run under `if __name__ == "__main__":`'
        )
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return  # run as a module (python -m): found by its name
    path = getattr(main, "__file__", None)
    if path is None:  # an interactive session or python -c: nothing to run again
        return
    started_in = getattr(process, "ORIGINAL_DIR", None) or os.getcwd()  # as multiprocessing
    full = os.path.join(started_in, path)
    if not os.path.isfile(full):
        raise RuntimeError(
            f'backend="processes" cannot start worker processes: each runs the main module '
            f"again, and its file {path!r} does not exist (a script read from standard "
            'input?); run the script from a file, or run on threads (backend="threads")'
        )


def raise_if_not_for_dask(roots: Mapping[str, Any]) -> None:
    """Raise TypeError naming what of ``roots`` dask cannot send (see `check_picklable`)."""
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(
            "check_picklable needs cloudpickle: pip install 'threadensemble[dask]'"
        ) from None
    raise_if_unpicklable(cloudpickle.dumps, roots, DASK_ADVICE)


_SHOWN = 100  # characters an error shows of each end of a long path


def _shown_path(steps: Sequence[str]) -> str:
    """Spell out a path (its root's name and steps) for an error: a long one by its two ends.

    ``args[0].next.next ... .next.lock (a path 100000 levels deep, 500,011 characters)``: the
    start and the end of the path, with what was left out said.
    """
    path = "".join(steps)
    if len(path) <= 3 * _SHOWN:
        return path
    return (
        f"{path[:_SHOWN]} ... {path[-_SHOWN:]} (a path {len(steps) - 1} levels deep, "
        f"{len(path):,} characters)"
    )


class _UnpicklingError(Exception):
    """An object pickled, but its pickle could not be loaded again (the cause is the arg)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


def model_pickler() -> Callable[[Any], bytes]:
    """Return how a model is pickled for worker processes: cloudpickle's dumps if installed.

    cloudpickle sends functions defined in ``__main__`` or inside other functions by value;
    without it, `pickle.dumps` sends every function by reference (its module must import).
    """
    try:
        import cloudpickle
    except ImportError:
        return functools.partial(pickle.dumps, protocol=5)
    return functools.partial(cloudpickle.dumps, protocol=5)


def raise_if_unpicklable(
    dumps: Callable[..., bytes], roots: Mapping[str, Any], advice: str
) -> None:
    """Raise TypeError naming the innermost object of ``roots`` that ``dumps`` cannot pickle.

    Each object is pickled and unpickled again (array data out of band: not copied), so that
    an object whose pickle cannot be loaded is found as well.  ``advice`` (why it must be
    picklable, and what to do) ends the message.
    """

    def pickling_error(obj: Any) -> Exception | None:
        buffers: list[pickle.PickleBuffer] = []
        try:
            data = dumps(obj, buffer_callback=buffers.append)
        except Exception as exc:
            return exc
        try:
            pickle.loads(data, buffers=buffers)
        except Exception as exc:
            return _UnpicklingError(exc)
        return None

    for name, root in roots.items():
        if (error := pickling_error(root)) is None:
            continue
        # Follow the children that fail on their own down to the innermost one (on failure
        # only; the chain keeps the objects alive, and cycles out).
        steps, chain = [name], [root]
        while True:
            for suffix, child in children(chain[-1]):
                if all(child is not seen for seen in chain) and (
                    child_error := pickling_error(child)
                ):
                    error = child_error
                    steps.append(suffix)
                    chain.append(child)
                    break
            else:
                break
        path = _shown_path(steps)
        if isinstance(error, _UnpicklingError):
            error = error.cause
            raise TypeError(
                f"{path} pickles, but its pickle cannot be loaded again "
                f"({type(error).__name__}: {error}): {advice}"
            ) from error
        raise TypeError(
            f"{path} cannot be pickled ({type(error).__name__}: {error}): {advice}"
        ) from error
