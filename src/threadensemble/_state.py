"""Per-thread copies of the mutable model state, sharing the large arrays nobody writes.

The engine hands the master state to `PerThreadState`; the thread pool's initializer makes one
deep copy per worker thread and keeps it in ``threading.local`` storage.  Threads that no
initializer of ours runs on (dask workers) make their copy on first use instead (``lazy=True``).
Each copy belongs to exactly one thread for the whole run, so reading and mutating it needs no
lock.  The master is only ever read (by ``copy.deepcopy``, possibly from several threads at once).

With ``share_state=True`` the large numpy arrays of the master (plain ``ndarray``,
`SHARE_MIN_NBYTES` and more, no Python objects inside, path not in ``private_state``) are made
read-only once, and every copy refers to their data instead of copying it: the deep copy starts
from a ``memo`` that maps each of them to a new view of it.  The view is the thread's own array
object (its shape, dtype and flags are its own: ``a.shape = ...`` changes one thread's view),
and it can never be made writeable, its base being read-only.  Everything around the arrays
(objects, dicts, lists, small arrays) is still copied, so rebinding an attribute on a thread's
copy changes that copy only.  An in-place write into a
shared array raises where it happens (numpy refuses to write a read-only array), so it can never
reach another thread; `PerThreadState.shared_write_error` turns that error into one that names
the array's path in the state and says how to keep it private.  The master is the run's own deep
copy of the user's state, so the user's arrays and their flags are never touched.
"""

from __future__ import annotations

import copy
import linecache
import re
import sys
import threading
import traceback
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SharedStateWriteError, WorkerInitError
from ._shared import children, reachable

__all__ = [
    "SHARE_MIN_NBYTES",
    "PerThreadState",
    "StateFootprint",
    "copy_state",
    "private_patterns",
    "worker_init_error",
]

SHARE_MIN_NBYTES = 64 * 1024  # smaller arrays are copied per thread: cheap, and never in the way
_ROOT = "state"  # the name paths in the state start with: state.stations[3].T_fitted
_PACKAGE = str(Path(__file__).parent)
_SEARCH_DEPTH = 4  # how far from a frame's locals a written array is looked for
_SEARCH_OBJECTS = 20_000


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


def private_patterns(share_state: bool, private_state: Collection[str]) -> tuple[str, ...] | None:
    """Validate ``share_state`` and ``private_state``; return the private paths, None if off.

    A pattern is a path as errors print it (``state.stations[3].buffer``), where ``*`` stands
    for any characters (``state.stations[*].buffer``, ``*.buffer``).
    """
    if not isinstance(share_state, bool):
        raise TypeError(f"share_state must be True or False, got {share_state!r}")
    if isinstance(private_state, str) or not all(isinstance(p, str) for p in private_state):
        raise TypeError(
            f"private_state must be a list of paths like 'state.buffer', got {private_state!r}"
        )
    patterns = tuple(private_state)
    if patterns and not share_state:
        raise ValueError(
            "private_state was given without share_state=True: without sharing, every array of "
            "the state is already private to each thread"
        )
    for pattern in patterns:
        if not pattern.startswith((_ROOT, "*")):
            raise ValueError(
                f"private_state path {pattern!r} must start with 'state' or '*' "
                "(as in 'state.stations[3].buffer' or '*.buffer')"
            )
    return patterns if share_state else None


def _matcher(patterns: Collection[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(re.escape(p).replace(r"\*", ".*") for p in patterns))


def _shareable(master: Any, private: Collection[str]) -> dict[int, tuple[str, np.ndarray]]:
    """Return id -> (path, array) of the master's arrays that copies may share."""
    keep = _matcher(private)
    return {
        id(obj): (path, obj)
        for path, obj in reachable({_ROOT: master})
        if type(obj) is np.ndarray  # a subclass may hold more (a mask) than its data
        and obj.nbytes >= SHARE_MIN_NBYTES
        and not obj.dtype.hasobject  # the objects inside would be shared, and mutable
        and not (keep is not None and keep.fullmatch(path))
    }


def _bases(array: np.ndarray) -> Iterator[Any]:
    base = array.base
    while base is not None:
        yield base
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else None


@dataclass(frozen=True)
class StateFootprint:
    """What one thread's copy of the state costs, and what it shares with the other threads.

    Attributes
    ----------
    copied_bytes : int
        Bytes each thread's copy allocates (array data, plus the shallow size of every copied
        Python object).
    shared_bytes : int
        Bytes of array data that every thread shares instead of copying (0 without sharing).
    shared_arrays : int
        How many arrays are shared.
    shareable_bytes : int
        Bytes that ``share_state=True`` shares (equal to ``shared_bytes`` when it is on).
    """

    copied_bytes: int
    shared_bytes: int
    shared_arrays: int
    shareable_bytes: int

    def __str__(self) -> str:
        text = f"each thread copies {_mib(self.copied_bytes)} of the state"
        if self.shared_arrays:
            return f"{text} and shares {_mib(self.shared_bytes)} ({self.shared_arrays} arrays)"
        if self.shareable_bytes:
            return f"{text} (share_state=True would share {_mib(self.shareable_bytes)} of it)"
        return text


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


class PerThreadState:
    """The master state of one run and its per-thread deep copies.

    Parameters
    ----------
    master : object
        The state to copy: the run's own object.  With ``share``, its shared arrays are made
        read-only for good; nothing else of it is modified.
    lazy : bool, default False
        Make a thread's copy on its first `get` (for threads that run no initializer of ours)
        instead of in `initialize`.
    share : tuple of str, optional
        Share the master's large arrays between the copies, except those whose path matches
        one of these patterns (see `private_patterns`).  None: copy everything.
    """

    def __init__(
        self, master: Any, lazy: bool = False, share: tuple[str, ...] | None = None
    ) -> None:
        self._master = master
        self._lazy = lazy
        self._local = threading.local()
        # Filled by initializers that failed.  list.append is atomic on both builds (the
        # free-threaded build locks the list object), so no lock of ours is needed.
        self.init_errors: list[BaseException] = []
        self._private = () if share is None else share
        # id -> (path, array); read-only from here on, and only read by the threads.
        self._shared = {} if share is None else _shareable(master, share)
        for _, array in self._shared.values():
            array.flags.writeable = False

    def _views(self) -> dict[int, tuple[str, np.ndarray]]:
        """Return master array id -> (path, a new view of it) for every shared array."""
        return {key: (path, array.view()) for key, (path, array) in self._shared.items()}

    def _copy(self) -> Any:
        """Deep-copy the master for the calling thread; remember which views it shares."""
        views = self._views()
        copied = copy.deepcopy(self._master, {key: view for key, (_, view) in views.items()})
        # This thread's view id -> (path, view): the views are kept, so the ids stay theirs.
        self._local.views = {id(view): (path, view) for path, view in views.values()}
        return copied

    def initialize(self) -> None:
        """Deep-copy the master into the calling thread's storage (a pool initializer)."""
        try:
            self._local.copy = self._copy()
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
            self._local.copy = self._copy()
        except Exception as exc:
            raise worker_init_error(exc) from exc
        return self._local.copy

    def footprint(self) -> StateFootprint:
        """Make one throwaway copy and measure what it copied and what it shared."""
        memo: dict[int, Any] = {key: view for key, (_, view) in self._views().items()}
        copy.deepcopy(self._master, memo)
        copied = sum(
            sys.getsizeof(obj)  # an array that owns its data counts its data
            for key, obj in memo.items()
            if key != id(memo) and key not in self._shared  # memo[id(memo)]: deepcopy's own
        )
        shareable = (
            self._shared if self._shared else _shareable(self._master, self._private)
        ).values()
        return StateFootprint(
            copied_bytes=copied,
            shared_bytes=_distinct_nbytes(self._shared.values()),
            shared_arrays=len(self._shared),
            shareable_bytes=_distinct_nbytes(shareable),
        )

    def shared_write_error(self, exc: ValueError) -> SharedStateWriteError | None:
        """Return the error to raise instead of ``exc`` if it is a write into a shared array.

        numpy's message (``assignment destination is read-only``) does not say which array it
        refused; the arrays are found in the locals of the frames the error passed through,
        by the names on the failing line.  When none is found there, ``exc`` gets a note instead.
        """
        if not self._shared or "read-only" not in str(exc):
            return None
        paths = self._written(exc)
        if not paths:
            exc.add_note(
                "share_state=True makes the state's arrays of 64 KiB and more read-only: if this "
                "array is one of them, keep it private with private_state=['state.<its path>']"
            )
            return None
        hint = re.sub(r"\[\d+\]", "[*]", paths[0])
        what = paths[0] if len(paths) == 1 else "one of " + ", ".join(paths[:5])
        return SharedStateWriteError(
            f"simulate wrote into {what}, an array of the state that the worker threads share "
            "(share_state=True), so the write was refused and nothing was changed.  "
            f"Keep it private to each thread with private_state=[{hint!r}]"
        )

    def _written(self, exc: BaseException) -> list[str]:
        """Return the paths of the shared arrays that the failing line probably wrote."""
        for frame, lineno in reversed(list(traceback.walk_tb(exc.__traceback__))):
            filename = frame.f_code.co_filename
            if filename.startswith(_PACKAGE) or "numpy" in Path(filename).parts:
                continue
            line = linecache.getline(filename, lineno).replace('"', "'").replace(" ", "")
            best = self._named_in(frame.f_locals, line)
            if best:
                return best
        return []

    def _named_in(self, local_vars: dict[str, Any], line: str) -> list[str]:
        """Return the paths of the shared arrays reachable from ``local_vars`` named on ``line``.

        The nearest ones win; among those, the ones with the longest end of their path in the
        line's write target (left of ``=``, after ``out=``), then in the whole line
        (``stations[2].T_fitted`` rather than ``stations[0].T_fitted``).
        """
        names = set(re.findall(r"[A-Za-z_]\w*", line))
        target = _write_target(line)
        found: dict[str, tuple[int, int, int]] = {}
        seen: set[int] = set()
        level = [(name, value) for name, value in local_vars.items()]
        for depth in range(_SEARCH_DEPTH + 1):
            following = []
            for label, obj in level:
                if id(obj) in seen or len(seen) > _SEARCH_OBJECTS:
                    continue
                seen.add(id(obj))
                if isinstance(obj, np.ndarray):
                    path = self._shared_path(obj)
                    if path is not None and label in names:
                        rank = (depth, -_on_line(path, target), -_on_line(path, line))
                        found.setdefault(path, rank)
                    continue
                for suffix, child in children(obj):
                    following.append((suffix.strip(".[]'\""), child))
            level = following
        if not found:
            return []
        best = min(found.values())
        return sorted(path for path, rank in found.items() if rank == best)

    def _shared_path(self, array: np.ndarray) -> str | None:
        """Return the path of ``array``, or of the shared array it is a view of, if shared."""
        views: dict[int, tuple[str, np.ndarray]] = getattr(self._local, "views", {})
        for candidate in (array, *_bases(array)):
            for known in (views, self._shared):
                if id(candidate) in known:
                    return known[id(candidate)][0]
        return None


def _write_target(line: str) -> str:
    """Return the part of ``line`` (spaces removed) that names what it writes, if it can tell."""
    if "out=" in line:
        return line.split("out=", 1)[1]
    assignment = re.match(r"([^=<>!]*?)(?:\*\*|//|<<|>>|[-+*/%&|^@])?=(?!=)", line)
    return assignment.group(1) if assignment else line


def _on_line(path: str, line: str) -> int:
    """Return how many last steps of ``path`` (``.name``, ``[2]``) appear together on ``line``."""
    steps = re.findall(r"\.\w+|\[[^\]]*\]", path)
    return max((n for n in range(1, len(steps) + 1) if "".join(steps[-n:]) in line), default=0)


def _distinct_nbytes(shared: Collection[tuple[str, np.ndarray]]) -> int:
    """Return the bytes of ``shared``, counting a view of another of them once (as its base)."""
    ids = {id(array) for _, array in shared}
    return sum(array.nbytes for _, array in shared if not any(id(b) in ids for b in _bases(array)))


def worker_init_error(cause: BaseException) -> WorkerInitError:
    """Return the error that stops a run whose worker thread could not copy the state."""
    return WorkerInitError(
        f"a worker thread could not deep-copy the state: {type(cause).__name__}: {cause}"
    )
