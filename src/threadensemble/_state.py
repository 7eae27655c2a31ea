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
the array's path in the state and says how to keep it private, after finding the array written
(the failing statement's target, evaluated in its frame) among the shared ones by memory overlap.
The master is the run's own deep copy of the user's state, so the user's arrays and their flags
are never touched.  A ``private_state`` pattern must match an array of the state
(`check_private_state`).
"""

from __future__ import annotations

import ast
import copy
import functools
import linecache
import re
import sys
import threading
import traceback
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from ._errors import SharedStateWriteError, WorkerInitError, str_tuple
from ._shared import children, reachable

__all__ = [
    "SHARE_MIN_NBYTES",
    "PerThreadState",
    "StateFootprint",
    "check_private_state",
    "copy_state",
    "private_patterns",
    "worker_init_error",
]

SHARE_MIN_NBYTES = 64 * 1024  # smaller arrays are copied per thread: cheap, and never in the way
_ROOT = "state"  # the name paths in the state start with: state.stations[3].T_fitted
_PACKAGE = str(Path(__file__).parent)


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


def private_patterns(share_state: bool, private_state: Sequence[str]) -> tuple[str, ...] | None:
    """Validate ``share_state`` and ``private_state``; return the private paths, None if off.

    A pattern is a path as errors print it (``state.stations[3].buffer``), where ``*`` stands
    for any characters (``state.stations[*].buffer``, ``*.buffer``).
    """
    if not isinstance(share_state, bool):
        raise TypeError(f"share_state must be True or False, got {share_state!r}")
    patterns = str_tuple(
        private_state,
        "private_state must be a list of paths like 'state.buffer' (a tuple or list of str)",
    )
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


def _array_paths(master: Any) -> dict[int, tuple[np.ndarray, list[str]]]:
    """Return id -> (array, every path it is held by) for the numpy arrays of ``master``.

    An array held twice (``state.alias is state.big``) has both paths: a write names the one
    the code used, and a private_state pattern matching either keeps it private.
    """
    found: dict[int, tuple[np.ndarray, list[str]]] = {}
    parents = []
    for path, obj in reachable({_ROOT: master}):
        if isinstance(obj, np.ndarray):
            found[id(obj)] = (obj, [path])
        if not isinstance(obj, np.ndarray) or obj.dtype.hasobject:
            parents.append((path, obj))
    for path, obj in parents:  # the walk lists each object once: add the other holders
        for suffix, child in children(obj):
            # found holds its arrays alive, so a temporary child cannot reuse their ids
            if isinstance(child, np.ndarray) and id(child) in found:
                paths = found[id(child)][1]
                if path + suffix not in paths:
                    paths.append(path + suffix)
    return found


def _shareable(master: Any, private: Collection[str]) -> dict[int, tuple[list[str], np.ndarray]]:
    """Return id -> (paths, array) of the master's arrays that copies may share."""
    keep = _matcher(private)
    return {
        key: (paths, obj)
        for key, (obj, paths) in _array_paths(master).items()
        if _large_plain(obj) and not (keep is not None and any(map(keep.fullmatch, paths)))
    }


def _large_plain(array: np.ndarray) -> bool:
    """Whether ``array`` is one that copies may share (if no private_state pattern keeps it)."""
    return (
        type(array) is np.ndarray  # a subclass may hold more (a mask) than its data
        and array.nbytes >= SHARE_MIN_NBYTES
        and not array.dtype.hasobject  # the objects inside would be shared, and mutable
    )


def check_private_state(state: Any, patterns: Collection[str]) -> None:
    """Raise ValueError naming a ``private_state`` pattern that matches no array of ``state``.

    A pattern that matches nothing is a typo or a stale path: the array it meant would be
    shared after all.  The engine checks the state as given, or after the warm-up if there is one
    (a warm-up may create the arrays).
    """
    if not patterns:
        return
    arrays = _array_paths(state).values()
    paths = [path for _, held in arrays for path in held]
    for pattern in patterns:
        keep = _matcher([pattern])
        assert keep is not None
        if not any(keep.fullmatch(path) for path in paths):
            large = [held[0] for array, held in arrays if _large_plain(array)]
            shown = ", ".join(large[:5]) + (" ..." if len(large) > 5 else "")
            raise ValueError(
                f"private_state pattern {pattern!r} matches no array of the state (the "
                f"arrays that would be shared are {shown or 'none'}); '*' stands for any "
                "characters, as in 'state.stations[*].buffer'"
            )


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
        # id -> (paths, array); read-only from here on, and only read by the threads.
        self._shared = {} if share is None else _shareable(master, share)
        for _, array in self._shared.values():
            array.flags.writeable = False

    def _memo(self) -> dict[int, Any]:
        """Return the deep copy's start: master array id -> a new view of it, for each shared."""
        return {key: array.view() for key, (_, array) in self._shared.items()}

    def _copy(self) -> Any:
        """Deep-copy the master for the calling thread, sharing the shared arrays' data."""
        return copy.deepcopy(self._master, self._memo())

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
        memo = self._memo()
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
        refused.  The frames the error passed through are searched, innermost first, for the
        array written: the target of the failing statement (``a[...] =``, ``a +=``,
        ``out=a``, ``a.sort()``), evaluated in the frame when it is names, attributes and
        subscripts only (no call).  A shared array is one whose memory overlaps one of the
        shared arrays.  A refused write into another read-only array (``protect_shared``, the
        caller's own) is left as it is; when the array cannot be told, ``exc`` gets a note.
        """
        if not self._shared or not _refused_write(exc):
            return None
        written = self._written(exc)
        if written is None:
            shared = sorted(path for paths, _ in self._shared.values() for path in paths)
            exc.add_note(
                "share_state=True made these arrays of the state read-only: "
                + ", ".join(shared[:5])
                + (" ..." if len(shared) > 5 else "")
                + "; if simulate wrote into one of them, keep it private with "
                "private_state=['state.<its path>']"
            )
            return None
        if not written:
            return None
        hints = list(dict.fromkeys(re.sub(r"\[\d+\]", "[*]", path) for path in written))
        what = written[0] if len(written) == 1 else "one of " + ", ".join(written[:5])
        return SharedStateWriteError(
            f"simulate wrote into {what}, an array of the state that the worker threads share "
            "(share_state=True), so the write was refused and nothing was changed.  "
            f"Keep it private to each thread with private_state={hints[:3]!r}"
        )

    def _written(self, exc: BaseException) -> list[str] | None:
        """Return the paths of the shared array written; [] if another array; None: unknown."""
        for frame, lineno in _frames(exc):
            if frame.f_code.co_filename.startswith(_PACKAGE):
                continue
            statements = _statements(frame, lineno)
            if statements is None:
                return None  # no source: what this frame wrote cannot be told
            for exact, group in _write_targets(statements):
                arrays = [
                    (text, array)
                    for text in group
                    if (array := _evaluate(text, frame)) is not None and not array.flags.writeable
                ]
                if not arrays:
                    continue
                paths = [self._shared_paths(array, text) for text, array in arrays]
                if all(paths):
                    return list(dict.fromkeys(path for found in paths for path in found))
                return [] if exact and not any(paths) else None
        return None

    def _shared_paths(self, array: np.ndarray, text: str) -> list[str]:
        """Return the paths of the shared arrays whose memory ``array`` overlaps.

        Of an array's several paths (aliases), those ending like ``text`` (the expression
        written, ``st.alias``) win.
        """
        paths = [
            path
            for held, shared in self._shared.values()
            if np.may_share_memory(array, shared)  # the shared arrays overlap nothing else
            for path in held
        ]
        written = text.replace(" ", "").replace('"', "'")
        best = max((_on_line(path, written) for path in paths), default=0)
        return [path for path in paths if _on_line(path, written) == best]


_READ_ONLY = ("read-only", "destination is a view")  # numpy's messages; xarray's


def _refused_write(exc: BaseException) -> bool:
    return any(text in str(exc) for text in _READ_ONLY)


def _frames(exc: BaseException) -> list[tuple[FrameType, int]]:
    """Return the frames ``exc`` passed through, innermost first.

    The frames of the error it was raised from come first: xarray replaces numpy's error by its
    own, raised where it caught numpy's (``array[key] = value``).
    """
    frames: list[tuple[FrameType, int]] = []
    context = exc.__context__
    if isinstance(context, ValueError) and _refused_write(context):
        frames.extend(reversed(list(traceback.walk_tb(context.__traceback__))))
    frames.extend(reversed(list(traceback.walk_tb(exc.__traceback__))))
    return frames


# Held around every ast.parse and compile of an AST: CPython 3.11's AST validation keeps its
# recursion depth in interpreter-wide state, so parsing in two threads at once can fail
# ("AST constructor recursion depth mismatch").
_AST_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _parse(source: str) -> ast.Module | None:
    try:
        with _AST_LOCK:
            return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


_COMPOUND = (
    ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match,
    ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
)  # fmt: skip


def _statements(frame: FrameType, lineno: int) -> list[ast.stmt] | None:
    """Return the simple statements of ``frame``'s code on line ``lineno``; None: no source.

    A function that cloudpickle sent by value has ``<dynamic-code>`` as its file name; its
    module's ``__file__`` is read instead, if the function is found there at that line.
    """
    code = frame.f_code
    for filename in (code.co_filename, frame.f_globals.get("__file__")):
        if not isinstance(filename, str) or not (lines := linecache.getlines(filename)):
            continue
        tree = _parse("".join(lines))
        if tree is None:
            continue
        scopes: list[ast.AST] = [tree]
        if not code.co_name.startswith("<"):  # <module>, <lambda>, <listcomp>: not checked
            scopes = [
                node
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name == code.co_name
                and node.lineno <= lineno <= (node.end_lineno or node.lineno)
            ]
        found = [
            node
            for scope in scopes
            for node in ast.walk(scope)
            if isinstance(node, ast.stmt)
            and not isinstance(node, _COMPOUND)
            and node.lineno <= lineno <= (node.end_lineno or node.lineno)
        ]
        if found:
            return found
    return None


def _write_targets(statements: list[ast.stmt]) -> Iterator[tuple[bool, list[str]]]:
    """Yield (exact, expressions) that the statements may write, the surest first.

    Exact: the target of an assignment (``a`` of ``a[i] = x``; ``a[i]`` of ``a[i] += x``,
    itself an array when it is one, else ``a``), or ``out=``.  Not exact: the objects and
    positional arguments of the calls (``a`` of ``a.sort()``, of ``np.copyto(a, b)``).
    """
    targets: list[ast.expr] = []
    for statement in statements:
        if isinstance(statement, ast.Assign):
            targets.extend(statement.targets)
        elif isinstance(statement, ast.AugAssign | ast.AnnAssign):
            targets.append(statement.target)
    exact: list[str] = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Subscript):
                exact.append(ast.unparse(node.value))
    for statement in statements:
        if isinstance(statement, ast.AugAssign):  # `a[i:j] += 1` writes into a[i:j]
            exact.insert(0, ast.unparse(statement.target))
    calls = [node for s in statements for node in ast.walk(s) if isinstance(node, ast.Call)]
    exact += [ast.unparse(k.value) for call in calls for k in call.keywords if k.arg == "out"]
    yield True, exact
    arguments = []
    for call in calls:
        if isinstance(call.func, ast.Attribute):
            arguments.append(ast.unparse(call.func.value))
        arguments += [ast.unparse(a) for a in call.args if not isinstance(a, ast.Starred)]
    yield False, arguments


_PURE = (
    ast.Expression, ast.Name, ast.Constant, ast.Attribute, ast.Subscript, ast.Slice, ast.Tuple,
    ast.Dict, ast.UnaryOp, ast.BinOp, ast.expr_context, ast.operator, ast.unaryop,
)  # fmt: skip


def _evaluate(text: str, frame: FrameType) -> np.ndarray | None:
    """Return the array ``text`` names in ``frame``, if it is names, attributes, subscripts."""
    try:
        with _AST_LOCK:
            expression = ast.parse(text, mode="eval")
            pure = all(isinstance(node, _PURE) for node in ast.walk(expression))
            code = compile(expression, "<target>", "eval") if pure else None
    except (SyntaxError, ValueError):
        return None
    if code is None:
        return None  # a call, a walrus, a comprehension: never run again
    try:
        value = eval(code, frame.f_globals, frame.f_locals)
    except Exception:
        return None
    if isinstance(value, np.flatiter):
        value = value.base
    return value if isinstance(value, np.ndarray) else None


def _on_line(path: str, line: str) -> int:
    """Return how many last steps of ``path`` (``.name``, ``[2]``) appear together on ``line``."""
    steps = re.findall(r"\.\w+|\[[^\]]*\]", path)
    return max((n for n in range(1, len(steps) + 1) if "".join(steps[-n:]) in line), default=0)


def _distinct_nbytes(shared: Collection[tuple[list[str], np.ndarray]]) -> int:
    """Return the bytes of ``shared``, counting a view of another of them once (as its base)."""
    ids = {id(array) for _, array in shared}
    return sum(array.nbytes for _, array in shared if not any(id(b) in ids for b in _bases(array)))


def worker_init_error(cause: BaseException) -> WorkerInitError:
    """Return the error that stops a run whose worker thread could not copy the state."""
    return WorkerInitError(
        f"a worker thread could not deep-copy the state: {type(cause).__name__}: {cause}"
    )
