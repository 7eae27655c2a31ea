"""`check`: is a model safe to run on threads?  Finds the usual ways it is not, and says why.

A model that hides shared mutable state gives silently wrong answers under threads.  The check
runs a sample of realizations

1. once in order with one copy of the state, as ``n_workers=1`` would (the reference);
2. each twice more in a row on that same copy (state carried over between realizations, or a
   first run that differs from later ones);
3. on ``n_workers`` threads started together by a barrier, each with its own copy; every
   sampled realization must run there, or the check fails saying which did not and why;

and compares the outputs bitwise (missing values in the same places are equal).  Meanwhile the
arrays of the shared context (``args``, ``kwargs``, what ``simulate``'s closure holds) and of
the watched modules are read-only (an in-place write raises where it happens), and all of it is
fingerprinted before and after, with the global ``numpy.random`` and ``random`` states, so that
each change is named with its own cause.  The watched modules are ``simulate``'s, those it
imports, those of the classes and functions reachable from the model, and their imports within
those packages (never the standard library's, threadensemble's or the big scientific
libraries').  The worker threads only compute; every finding is recorded in the calling thread.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import itertools
import random
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, Unpack

import numpy as np
import xarray as xr

from ._compare import differences
from ._config import CommonOptions, RunConfig, RunOptions, make_config
from ._model import Model, ModelParts, as_model
from ._realize import realize, warm_up
from ._shared import (
    MAX_BYTES,
    MAX_OBJECTS,
    PathTable,
    Protection,
    Walk,
    WalkPath,
    changes,
    is_generator_token,
    read_only_arrays,
    tokens,
    unprotected_message,
    walk_paths,
)
from ._state import PerThreadState, StateFootprint, worker_init_error

__all__ = [
    "Cause",
    "CheckKeywords",
    "CheckOptions",
    "CheckReport",
    "Difference",
    "Finding",
    "ThreadSafetyError",
    "check",
]


class Cause(enum.Enum):
    """Why a model is not safe on threads."""

    SHARED_ARRAY_WRITE = "simulate writes into a shared array"
    SHARED_OBJECT_CHANGED = "simulate changes the shared context"
    CLOSURE_CHANGED = "simulate changes what its closure holds"
    MODULE_STATE_CHANGED = "simulate changes module-level state"
    SHARED_GENERATOR = "a random generator is shared by the threads"
    LIBRARY_GENERATOR = "a library's random generator is not routed to the realization's streams"
    GLOBAL_NUMPY_RANDOM = "simulate uses the global numpy.random functions"
    RANDOM_MODULE = "simulate uses the random module's global functions"
    FIRST_RUN_DIFFERS = "the first run differs from later runs (lazy initialization)"
    STATE_CARRIED_OVER = "state is carried over between realizations"
    RUNS_DIFFER = "repeated runs of a realization differ, for a reason the check did not find"
    THREADS_DIFFER = "results differ between one worker and many threads"
    SIMULATE_RAISED = "simulate raised an exception"
    WORKER_INIT_FAILED = "a worker thread could not copy the state"
    NOT_RUN = "the threaded pass did not run every realization"
    NOT_FINGERPRINTED = "the check's budget was hit: part of the model was not watched"


_ADVICE = {
    Cause.SHARED_ARRAY_WRITE: "args, kwargs and closures are shared by every thread and must not"
    " be written; keep arrays that simulate writes in the state (one copy per thread), or copy "
    "them first",
    Cause.SHARED_OBJECT_CHANGED: "args and kwargs are shared by every thread and must not be "
    "written; move what simulate changes into the state (one copy per thread)",
    Cause.CLOSURE_CHANGED: "a closure is shared by every thread like args are: move what "
    "simulate changes into the state (one copy per thread), or create it inside simulate",
    Cause.MODULE_STATE_CHANGED: "module globals are shared by every thread: keep caches and "
    "counters in the state (one copy per thread), or fill caches before the run (warmup)",
    Cause.SHARED_GENERATOR: "one generator drawn from by every thread gives each realization "
    "numbers in scheduling order: replace it by rng = threadensemble.rng (module level) or draw "
    "from threadensemble.get_rng()",
    Cause.LIBRARY_GENERATOR: "route the library's generator to the realization's streams for "
    "the run: with threadensemble.route_rng(module): ... (or decorate simulate with "
    "@threadensemble.route_rng(module))",
    Cause.GLOBAL_NUMPY_RANDOM: "np.random.* functions share one hidden generator between all "
    "threads; draw from threadensemble.get_rng() (or assign rng = threadensemble.rng)",
    Cause.RANDOM_MODULE: "random.random(), random.gauss() ... share one hidden generator between"
    " all threads; draw from threadensemble.get_rng() (random() and normal() have the same "
    "distributions)",
    Cause.FIRST_RUN_DIFFERS: "every thread's first realization would differ and results would "
    "depend on the worker count; pass warmup=True (or a warm-up function) so that the lazy "
    "initialization happens once, before the per-thread copies are made",
    Cause.STATE_CARRIED_OVER: "simulate reads state left by the previous realization; reset "
    "(or overwrite) everything it reads from the state at the start of each realization",
    Cause.RUNS_DIFFER: "something the check does not watch changes between runs: a generator or"
    " cache in a module outside simulate's packages (route_rng for a library's generator), a "
    "C extension's state, or files",
    Cause.THREADS_DIFFER: "something shared is written concurrently; see the other findings, "
    "or look for state outside what the check watches (modules outside simulate's packages)",
    Cause.SIMULATE_RAISED: "fix the exception first; the check compares only realizations that ran",
    Cause.WORKER_INIT_FAILED: "simulate_ensemble would stop with this WorkerInitError: make the "
    "state deep-copyable from any thread (copy.deepcopy(state) must work in a new thread)",
    Cause.NOT_RUN: "the check cannot vouch for realizations it did not run on threads; fix what "
    "stopped them (see the other findings)",
    Cause.NOT_FINGERPRINTED: "writes to what was left out go unseen, so the check cannot vouch "
    "for the model: raise the budget (check(..., max_objects=..., max_bytes=...); each "
    "fingerprint hashes up to max_bytes of array data), or give simulate less to walk (large "
    "tables that simulate does not need, or many small objects)",
}


class ThreadSafetyError(AssertionError):
    """Raised by `CheckReport.raise_if_failed` when the check found a problem."""


@dataclass(frozen=True)
class Finding:
    """One problem the check found: its cause class, what was seen, and what to do."""

    cause: Cause
    detail: str

    @property
    def advice(self) -> str:
        """What to do about it."""
        return _ADVICE[self.cause]


@dataclass(frozen=True)
class Difference:
    """How one variable of one realization differs between two runs that should be identical."""

    realization: int
    variable: str
    comparison: str
    max_abs_diff: float
    fraction: float


@dataclass(frozen=True)
class CheckReport:
    """The result of `check`.  ``ok`` is True when no finding was made.

    ``walked_objects`` and ``walked_bytes`` say how much of the model and the watched modules
    were fingerprinted; ``budget_hit`` that the walk left some out (see `check`);
    ``unprotected`` names the shared arrays that could not be made read-only;
    ``unhashed_read_only`` the arrays over the hashing budget that were read-only while checked
    (a write to them raised: they need no fingerprint).
    """

    simulate: str
    sample: tuple[int, ...]
    n_workers: int
    protected_arrays: int
    findings: tuple[Finding, ...]
    differences: tuple[Difference, ...]
    walked_objects: int = 0
    walked_bytes: int = 0
    budget_hit: bool = False
    unprotected: tuple[str, ...] = ()
    unhashed_read_only: tuple[str, ...] = ()  # over max_bytes, but read-only while checked
    watched_modules: tuple[str, ...] = ()
    state: StateFootprint | None = None  # what each thread's copy of the state costs

    @property
    def ok(self) -> bool:
        """True when the model passed every part of the check."""
        return not self.findings

    @property
    def causes(self) -> set[Cause]:
        """The cause classes of the findings."""
        return {f.cause for f in self.findings}

    def raise_if_failed(self) -> None:
        """Raise ThreadSafetyError with this report when the check found a problem."""
        if not self.ok:
            raise ThreadSafetyError(str(self))

    def __str__(self) -> str:
        n = len(self.findings)
        verdict = "passed" if self.ok else f"FAILED ({n} finding{'s' if n > 1 else ''})"
        lines = [
            f"thread-safety check of {self.simulate}: {verdict}",
            f"  realizations {self.sample[0]}-{self.sample[-1]}, {self.n_workers} threads started"
            f" together, {self.protected_arrays} shared arrays made read-only",
            f"  fingerprinted {self.walked_objects} objects ({self.walked_bytes / 1e6:.1f} MB of "
            f"arrays) of the model and of {len(self.watched_modules)} modules",
        ]
        if self.unhashed_read_only:
            lines.append(
                f"  {len(self.unhashed_read_only)} arrays over max_bytes were not hashed "
                f"({_join(self.unhashed_read_only)}): they were read-only during the check, so "
                "a write to them was found all the same"
            )
        if self.unprotected:
            lines.append(f"  {unprotected_message(self.unprotected)}")
        if self.state is not None:
            lines.append(f"  state: {self.state}")
        for finding in self.findings:
            lines.append(f"  [{finding.cause.value}] {finding.detail}")
            lines.append(f"      -> {finding.advice}")
        if self.differences:
            lines.append("  differences:")
        for d in self.differences[:20]:
            lines.append(
                f"    realization {d.realization}, {d.variable!r}, {d.comparison}: "
                f"{d.fraction:.0%} of values differ, max abs difference {d.max_abs_diff:.3g}"
            )
        if len(self.differences) > 20:
            lines.append(f"    ... and {len(self.differences) - 20} more")
        return "\n".join(lines)


# -- comparing outputs: bitwise, missing values in the same places equal ---------------------


def _compare(a: xr.Dataset, b: xr.Dataset, index: int, comparison: str) -> list[Difference]:
    return [
        Difference(index, where, comparison, big, fraction)
        for where, big, fraction in differences(a, b)
    ]


# -- what is watched: the shared context and the modules reachable from simulate --------------

# Packages whose module globals are not watched: the standard library, this package, and the
# libraries every model uses whose globals are not model state (the global numpy.random state
# is compared on its own).
_NOT_WATCHED = frozenset(sys.stdlib_module_names) | {
    "numpy", "xarray", "pandas", "scipy", "dask", "distributed", "netCDF4",
    "cftime", "numba", "pytest", "_pytest", "pluggy", "tqdm", "cloudpickle", "matplotlib",
    "IPython", "ipykernel", "sklearn", "statsmodels", "numexpr", "bottleneck", "h5py",
    "tornado", "zmq", "psutil", "joblib", "builtins",
}  # fmt: skip
# Module globals that are code, not state.
_CODE = (
    types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
    types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType,
)  # fmt: skip


def _top(module: str) -> str:
    return module.partition(".")[0]


def _excluded(module: str) -> bool:
    """Whether a module's globals are not watched (threadensemble's own, but its examples are)."""
    if module == "threadensemble" or module.startswith("threadensemble._"):
        return True
    return _top(module) in _NOT_WATCHED


Namespaces: TypeAlias = "dict[str, dict[str, Any]]"  # module name -> its globals


def _function_of(simulate: Callable[..., Any]) -> Any:
    function = inspect.unwrap(getattr(simulate, "__func__", simulate))
    return getattr(function, "func", function)  # functools.partial


def _simulate_module(simulate: Callable[..., Any]) -> str:
    function = _function_of(simulate)
    namespace = getattr(function, "__globals__", None)
    if isinstance(namespace, dict) and isinstance(namespace.get("__name__"), str):
        return str(namespace["__name__"])
    return str(getattr(function, "__module__", None) or type(function).__module__)


def _defined_in(obj: Any) -> str | None:
    """Return the module that defines ``obj`` (a function, a class, or an instance's class)."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, types.FunctionType | type):
        module = getattr(obj, "__module__", None)
        return module if isinstance(module, str) else None
    return type(obj).__module__


def _imported(value: Any) -> str | None:
    """Return the module a module global comes from, when it is a module, function or class."""
    try:
        if isinstance(value, types.ModuleType | types.FunctionType | type):
            return _defined_in(value)
    except Exception:  # a lazy module proxy, say
        return None
    return None


def _namespace(module: str, known: Namespaces) -> dict[str, Any] | None:
    if module in known:
        return known[module]
    loaded = sys.modules.get(module)
    return vars(loaded) if isinstance(loaded, types.ModuleType) else None


def _watched_modules(simulate: Callable[..., Any], objects: Iterable[Any]) -> Namespaces:
    """Return the modules whose globals the check fingerprints (see the module docstring).

    ``objects``: everything reachable from the model.  A function's own globals stand for its
    module, which may not be imported (code run by ``exec``, a notebook's ``__main__``).
    """
    own = _simulate_module(simulate)
    known: Namespaces = {}
    function = _function_of(simulate)
    if isinstance(getattr(function, "__globals__", None), dict):
        known[own] = function.__globals__
    found = {own}
    for obj in objects:
        if isinstance(obj, types.FunctionType | types.MethodType | type) or not isinstance(
            obj, _CODE
        ):
            obj = getattr(obj, "__func__", obj)
            module = _defined_in(obj)
            if module is not None and not _excluded(module):
                found.add(module)
                if isinstance(obj, types.FunctionType):
                    known.setdefault(module, obj.__globals__)
    packages = {_top(m) for m in found if not _excluded(m)}
    own_globals = _namespace(own, known) or {}
    todo = list(found)
    todo += [m for v in list(own_globals.values()) if (m := _imported(v))]
    watched: Namespaces = {}
    while todo:
        name = todo.pop()
        namespace = _namespace(name, known)
        if namespace is None or name in watched or _excluded(name):
            continue
        watched[name] = namespace
        for value in list(namespace.values()):
            target = _imported(value)
            if target and target not in watched and _top(target) in packages:
                todo.append(target)
    for name in list(watched):  # the packages they are in (a library keeps its rng there)
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if not _excluded(parent) and (namespace := _namespace(parent, known)) is not None:
                watched.setdefault(parent, namespace)
    return {m: watched[m] for m in sorted(watched, key=lambda m: (m.count("."), m))}


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _module_roots(modules: Namespaces) -> dict[str, Any]:
    """Return ``module.name`` -> value for what the module's globals hold that can be state.

    Its variables; the closures, defaults and attributes of its functions (``cache`` of a
    function made by a factory); the class attributes of the classes it defines (a registry
    that every instance appends to).
    """
    roots: dict[str, Any] = {}
    for module, namespace in modules.items():
        for name, value in list(namespace.items()):
            if _dunder(name):
                continue
            if not isinstance(value, _CODE) or (
                isinstance(value, types.FunctionType)
                and (value.__closure__ or value.__defaults__ or value.__kwdefaults__ or vars(value))
            ):
                roots[f"{module}.{name}"] = value
            elif isinstance(value, type) and value.__module__ == module:
                for attribute, member in list(vars(value).items()):
                    if not _dunder(attribute) and not isinstance(
                        member, (*_CODE, staticmethod, classmethod, property)
                    ):
                        roots[f"{module}.{name}.{attribute}"] = member
    return roots


def _global_numpy_random_state() -> str:
    return hashlib.blake2b(repr(np.random.get_state(legacy=False)).encode()).hexdigest()


def _random_module_state() -> str:
    return hashlib.blake2b(repr(random.getstate()).encode()).hexdigest()


def _random_module_users(modules: Namespaces) -> list[str]:
    """Return where the watched modules refer to the random module's shared generator."""
    shared = getattr(random, "_inst", None)
    users = []
    for module, namespace in modules.items():
        for name, value in list(namespace.items()):
            if value is random:
                users.append(module if name == "random" else f"{module} (import random as {name})")
            elif shared is not None and getattr(value, "__self__", None) is shared:
                users.append(f"{module}.{name}")
    return users


def _where(exc: BaseException) -> str | None:
    """Return 'file:line: code' of the innermost frame of ``exc`` outside numpy and this package."""
    package = str(Path(__file__).parent)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(package) and f"{Path('numpy')}" not in Path(f.filename).parts
    ]
    if not frames:
        return None
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"


# -- the passes --------------------------------------------------------------------------------

Outcome: TypeAlias = "xr.Dataset | Exception"
_BARRIER_TIMEOUT_S = 120.0  # the threads only deep-copy the state before they meet


class _Checker:
    """Runs the passes of one check.

    Worker threads only compute and return their outcomes; every finding is recorded by the
    calling thread (``findings``, ``failed`` and ``differences`` are its alone).
    """

    def __init__(self, config: RunConfig, sample: Sequence[int], n_workers: int) -> None:
        self.config = config
        self.sample = list(sample)
        self.n_workers = n_workers
        self.findings: dict[tuple[Cause, str], Finding] = {}
        self.differences: list[Difference] = []
        self.failed: set[int] = set()
        self.cancel = threading.Event()

    def note(self, cause: Cause, detail: str) -> None:
        self.findings.setdefault((cause, detail), Finding(cause, detail))

    def attempt(self, per_thread: PerThreadState | None, index: int) -> Outcome:
        """Compute realization ``index`` (in any thread); return its Dataset or its exception."""
        try:
            return realize(self.config, per_thread, self.cancel, index)
        except Exception as exc:
            return exc

    def record(self, index: int, outcome: Outcome) -> xr.Dataset | None:
        """Take an outcome in the calling thread: a Dataset back, or the finding of a failure."""
        if isinstance(outcome, xr.Dataset):
            return outcome
        if (
            isinstance(outcome, ValueError)
            and "read-only" in str(outcome)
            and self.config.protect_shared
        ):
            self.note(Cause.SHARED_ARRAY_WRITE, _where(outcome) or f"ValueError: {outcome}")
        else:
            where = _where(outcome)
            self.note(
                Cause.SIMULATE_RAISED,
                f"realization {index}: {type(outcome).__name__}: {outcome}"
                + (f" (at {where})" if where else ""),
            )
        self.failed.add(index)
        return None

    def new_state(self) -> PerThreadState | None:
        """Return this thread's copy of the state (raises what ``copy.deepcopy`` raised)."""
        per_thread = self.config.per_thread_state()
        if per_thread is not None:
            per_thread.initialize()
        return per_thread

    def note_init_failure(self, threads: Sequence[str], exc: BaseException) -> None:
        error = worker_init_error(exc)
        self.note(
            Cause.WORKER_INIT_FAILED, f"{', '.join(threads)}: {type(error).__name__}: {error}"
        )

    def serial_and_repeats(self) -> dict[int, xr.Dataset]:
        try:
            per_thread = self.new_state()
        except Exception as exc:
            self.note_init_failure(["the calling thread"], exc)
            return {}
        reference = {
            k: out
            for k in self.sample
            if (out := self.record(k, self.attempt(per_thread, k))) is not None
        }
        unstable, first_run = [], []
        for k in self.sample:
            runs = [self.record(k, self.attempt(per_thread, k)) for _ in range(2)]
            if k not in reference or runs[0] is None or runs[1] is None:
                continue
            repeat = _compare(runs[0], runs[1], k, "run twice in a row on the same state")
            if repeat:
                unstable.append(k)
                self.differences.extend(repeat)
            elif k == self.sample[0] and (
                first := _compare(reference[k], runs[0], k, "first run vs later runs")
            ):
                first_run.append(k)
                self.differences.extend(first)
        if unstable:
            self.note(
                Cause.STATE_CARRIED_OVER if self.config.inject is not None else Cause.RUNS_DIFFER,
                f"realizations {unstable} gave different results when run again"
                + (" on the same state" if self.config.inject is not None else ""),
            )
        elif first_run:
            self.note(
                Cause.FIRST_RUN_DIFFERS,
                f"realization {first_run[0]} differs between the first run on a fresh copy of the "
                "state and the runs after it, with the same seed",
            )
        return reference

    def threads(self, reference: Mapping[int, xr.Dataset]) -> None:
        n = self.n_workers
        barrier = threading.Barrier(n)
        shares = [self.sample[t::n] for t in range(n)]
        # Each worker thread writes only its own slot; the calling thread reads them after join.
        outcomes: list[list[tuple[int, Outcome]]] = [[] for _ in range(n)]
        init_errors: list[BaseException | None] = [None] * n
        stopped: list[BaseException | None] = [None] * n

        def worker(t: int) -> None:
            try:
                per_thread = self.new_state()
            except BaseException as exc:
                init_errors[t] = exc
                barrier.abort()  # the others run their share unsynchronized
                return
            with suppress(threading.BrokenBarrierError):  # another thread failed: run anyway
                barrier.wait(timeout=_BARRIER_TIMEOUT_S)
            try:
                for k in shares[t]:
                    outcomes[t].append((k, self.attempt(per_thread, k)))
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: recorded, not lost
                stopped[t] = exc

        threads = [
            threading.Thread(target=worker, args=(t,), name=f"threadensemble-check-{t}")
            for t in range(n)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reasons: list[str] = []
        failed_copies: dict[str, tuple[BaseException, list[int]]] = {}
        for t in range(n):
            if (exc := init_errors[t]) is not None:
                failed_copies.setdefault(f"{type(exc).__name__}: {exc}", (exc, []))[1].append(t)
                reasons.append(f"{threads[t].name} could not copy the state")
            if (exc := stopped[t]) is not None:
                reasons.append(f"{threads[t].name} stopped: {type(exc).__name__}: {exc}")
        for exc, failed in failed_copies.values():
            self.note_init_failure([threads[t].name for t in failed], exc)
        outputs = {k: self.record(k, out) for share in outcomes for k, out in share}
        if not_run := [k for k in self.sample if k not in outputs]:
            self.note(
                Cause.NOT_RUN,
                f"realizations {not_run} did not run on the check's threads ({'; '.join(reasons)})",
            )
        differing = []
        for k, ref in reference.items():
            out = outputs.get(k)
            if out is not None and (diff := _compare(ref, out, k, f"1 worker vs {n} threads")):
                differing.append(k)
                self.differences.extend(diff)
        if differing:
            self.note(
                Cause.THREADS_DIFFER,
                f"realizations {differing} differ between 1 worker and {n} threads",
            )


# -- naming what changed -------------------------------------------------------------------------

_SHARED_WRITES = {
    Cause.SHARED_ARRAY_WRITE,
    Cause.SHARED_OBJECT_CHANGED,
    Cause.CLOSURE_CHANGED,
    Cause.MODULE_STATE_CHANGED,
    Cause.SHARED_GENERATOR,
    Cause.LIBRARY_GENERATOR,
    Cause.GLOBAL_NUMPY_RANDOM,
    Cause.RANDOM_MODULE,
}


def _explained(causes: set[Cause]) -> set[Cause]:
    """Return the symptoms that the other findings already explain (so they are not listed).

    A write to something shared makes repeated runs and threaded runs differ; state carried
    over, or a first run that differs, makes threaded runs differ.  The differences stay in the
    report.
    """
    explained = set()
    if causes & _SHARED_WRITES:
        explained |= {
            Cause.STATE_CARRIED_OVER,
            Cause.RUNS_DIFFER,
            Cause.THREADS_DIFFER,
            Cause.FIRST_RUN_DIFFERS,
        }
    if causes & {Cause.FIRST_RUN_DIFFERS, Cause.STATE_CARRIED_OVER, Cause.RUNS_DIFFER}:
        explained.add(Cause.THREADS_DIFFER)
    return explained


def _join(found: Sequence[str], most: int = 3) -> str:
    more = f"; and {len(found) - most} more" if len(found) > most else ""
    return "; ".join(found[:most]) + more


def _shared_findings(found: Sequence[str]) -> Iterator[tuple[Cause, str]]:
    """Classify changes of the shared context (paths under args, kwargs and simulate)."""
    groups: dict[Cause, list[str]] = {}
    for change in found:
        path, _, tokens = change.partition(": ")
        if is_generator_token(tokens):
            cause = Cause.SHARED_GENERATOR
            change = f"{path} changed state: it is drawn from by every thread"
        elif tokens.startswith("array"):
            cause = Cause.SHARED_ARRAY_WRITE
            change = f"{path} was written ({tokens})"
        elif path.startswith("simulate") and ("<closure" in path or "defaults__" in path):
            cause = Cause.CLOSURE_CHANGED
        else:
            cause = Cause.SHARED_OBJECT_CHANGED
        groups.setdefault(cause, []).append(change)
    for cause, changed in groups.items():
        yield cause, _join(changed)


def _under(change: str, root: str) -> bool:
    """Whether a change (``path: old -> new``) is of ``root`` or of what it reaches."""
    return change.startswith((f"{root}:", f"{root}.", f"{root}["))


def _owner(path: str, modules: Namespaces) -> str:
    """Return the watched module a ``module.name...`` path starts with (the longest)."""
    return max((m for m in modules if path.startswith(m + ".")), key=len, default="?")


def _why_not_routable(name: str, namespace: Mapping[str, Any]) -> str | None:
    """Say why `route_rng` would not replace the generator at ``module.name`` (None: it would).

    It replaces the module's ``get_rng`` and the ``numpy.random.Generator`` objects that are
    module globals; not legacy generators, nor generators inside containers, objects or
    function defaults.
    """
    if "__defaults__" in name or "__kwdefaults__" in name:
        return "it is bound as a default argument of a function"
    if not name.isidentifier() or name not in namespace:
        return "it is held inside another object, not as a module global"
    value = namespace[name]
    if isinstance(value, np.random.Generator):
        return None
    module = type(value).__module__
    kind = f"{'numpy.random' if module.startswith('numpy.random') else module}."
    kind += type(value).__qualname__
    return f"it is a {kind}; route_rng replaces numpy.random.Generator globals only"


def _module_findings(
    found: Sequence[str], modules: Namespaces, own_package: str
) -> Iterator[tuple[Cause, str]]:
    """Classify changes of module globals: generators (the user's or a library's) or state."""
    state, shared, library = [], [], []
    for change in found:
        path, _, tokens = change.partition(": ")
        if not is_generator_token(tokens):
            state.append(change)
            continue
        module = _owner(path, modules)
        namespace = modules.get(module, {})
        if "get_rng" not in namespace and _top(module) == own_package:
            shared.append(f"the module-level generator {path} is drawn from by every thread")
            continue
        unroutable = _why_not_routable(path[len(module) + 1 :], namespace)
        if unroutable is None:
            library.append(
                f"{path} (of module {module}) changed state during the runs: nothing reseeds it "
                f"per realization; route it with threadensemble.route_rng({module})"
            )
        else:
            shared.append(
                f"{path} (of module {module}) changed state during the runs: nothing reseeds it "
                f"per realization, and route_rng cannot route it ({unroutable}); where it is "
                "drawn from, draw from threadensemble.get_rng() (or put threadensemble.rng in "
                "its place)"
            )
    if state:
        yield Cause.MODULE_STATE_CHANGED, _join(state)
    if shared:
        yield Cause.SHARED_GENERATOR, _join(shared)
    if library:
        yield Cause.LIBRARY_GENERATOR, _join(library)


_NOT_HASHED = "(not hashed: over the budget)"  # how a fingerprint shows an array left out


def _left_out(
    walks: Sequence[Walk],
    prints: Sequence[Mapping[str | WalkPath, str]],
    roots: Mapping[str, Any],
    protection: Protection | None,
    table: PathTable,
) -> tuple[bool, list[str], list[str]]:
    """Return what the check's walks left out: whether objects were, and the arrays not hashed.

    The arrays are split into those that were read-only during the check (a write to them
    raised, so it was found all the same) and the others, whose changes went unseen.
    ``prints`` are fingerprints with the paths of ``table``.
    """
    objects_hit = any(w.objects >= w.max_objects and w.budget_hit for w in walks)
    wanted = {p for found in prints for p, t in found.items() if t.endswith(_NOT_HASHED)}
    unhashed = sorted(wanted, key=str)
    if not unhashed or protection is None or not protection.arrays:
        return objects_hit, [str(p) for p in unhashed], []
    protected = {id(array) for array in protection.arrays}  # they are alive: protection has them
    budget = max(w.max_objects for w in walks)
    now = {p: obj for p, obj in walk_paths(roots, table, Walk(max_objects=budget)) if p in wanted}
    read_only = [p for p in unhashed if p in now and id(now[p]) in protected]
    unseen = [str(p) for p in unhashed if p not in read_only]
    return objects_hit, unseen, [str(p) for p in read_only]


def _budget_detail(objects_hit: bool, unhashed: Sequence[str], walks: Sequence[Walk]) -> str:
    """Say what the walks of the check left out: objects beyond the count, arrays not hashed."""
    parts = []
    if objects_hit:
        parts.append(f"the walk stopped at max_objects={walks[0].max_objects:,} objects")
    if unhashed:
        hashed = max(w.bytes for w in walks)
        parts.append(
            f"{len(unhashed)} writeable array{'s were' if len(unhashed) > 1 else ' was'} not "
            f"hashed ({_join(unhashed)}; {hashed / 1e6:.0f} MB hashed, "
            f"max_bytes={walks[0].max_bytes:,})"
        )
    return "; ".join(parts) + ": changes there go unseen"


class CheckOptions(CommonOptions, total=False):
    """The options of `check` and `ModelSpec.check`, as documented for `check`.

    ``seed``, ``seed_for``, ``sample``, ``n_workers``, ``protect_shared``, ``share_state``,
    ``private_state``, ``max_objects`` and ``max_bytes``: everything but the model.
    """

    sample: int
    max_objects: int
    max_bytes: int


class CheckKeywords(ModelParts, CheckOptions, total=False):
    """The keywords of `check`: the model's parts and the check's options.

    The parts (`ModelParts`) only when the model is given as ``simulate``, not as a `ModelSpec`;
    the options are `CheckOptions`.
    """


def check(model: Model | Callable[..., Any], **options: Unpack[CheckKeywords]) -> CheckReport:
    """Check that a model gives the same realizations on threads as on one worker.

    Runs realizations ``0 .. sample-1`` once in order on one copy of the state (the reference),
    twice more each on that copy, and on ``n_workers`` threads started together, comparing the
    outputs bit for bit, with their attributes and those of their variables (not threadensemble's
    own ``threadensemble_*``); NaN and NaT in the same places are equal; object arrays element
    by element, where a NaN equals only a NaN of the same type, never None.  While it runs,
    the numpy arrays of the shared context (``args``, ``kwargs``, ``simulate``'s closure) and
    of the watched modules are read-only (when ``protect_shared``),
    and all of them, the module globals of every module reachable from ``simulate`` (within its
    packages), the global ``numpy.random`` state and the ``random`` module's state are compared
    before and after.  Each kind of hidden sharing is reported with its own `Cause`, naming
    where it is (the line of an in-place write; the module and name of a global; the path of an
    attribute).  The check fails when its threaded pass could not run every realization.

    The walk of the objects visits each object once, at any depth, within a budget (a million
    objects, 1 GiB of array data hashed, by default); the report says how much it walked.  When
    the budget is hit, what was left out is not watched, and the check fails
    (`Cause.NOT_FINGERPRINTED`, naming what was left out), unless all that was left out are
    arrays that were read-only during the check (a write to them raises, and is found).  The
    caller's objects, array flags included, are as before afterwards.
    Shared arrays whose memory is an immutable ``bytes`` object (unpickled with protocol <= 4)
    cannot be made read-only and writeable again; they are left writeable, listed in
    ``report.unprotected``, and writes to them are still found by the fingerprint.

    Parameters
    ----------
    model : ModelSpec or callable
        As for `simulate_ensemble`: a `ModelSpec`, or ``simulate`` with the model's parts
        ``args``, ``kwargs``, ``state``, ``inject``, ``ragged`` and ``warmup`` as keywords
        (`ModelParts`), not both.
    seed_for, share_state, private_state
        As for `simulate_ensemble`.
    seed : int, sequence of int or SeedSequence, optional
        The run seed; default 0 (unless ``seed_for`` is given).
    sample : int, default 8
        How many realizations to run (each is run four times).
    n_workers : int, default 4
        Threads started together for the threaded pass.
    protect_shared : bool, default True
        Make the shared arrays read-only while the check runs.
    max_objects : int, default 1,000,000
        The most objects one walk of the model and the watched modules visits.
    max_bytes : int, default 1 GiB
        The most array bytes one fingerprint hashes; larger arrays beyond it are left out.

    Returns
    -------
    CheckReport
        ``report.ok`` is True when nothing was found; ``str(report)`` lists each finding with
        its cause class (`Cause`) and what to do; ``report.raise_if_failed()`` raises it.

    Examples
    --------
    >>> import threadensemble as te
    >>> def simulate(scale):
    ...     return {"x": scale * te.get_rng().standard_normal(3)}
    >>> te.check(simulate, args=(2.0,), sample=4, n_workers=2).ok
    True
    >>> te.check(simulate, args=(2.0,), seed_for=lambda k: 1000 * k, sample=4, n_workers=2).ok
    True
    """
    given = as_model(model, options, "check", CheckOptions.__optional_keys__)
    simulate = given.simulate
    seed, seed_for = options.get("seed"), options.get("seed_for")
    seed = 0 if seed is None and seed_for is None else seed
    sample = options.get("sample", 8)
    n_workers = options.get("n_workers", 4)
    max_objects = options.get("max_objects", MAX_OBJECTS)
    max_bytes = options.get("max_bytes", MAX_BYTES)
    rule = "sample must be an int >= 1 (how many realizations to check)"
    if isinstance(sample, bool) or not isinstance(sample, int):
        raise TypeError(f"{rule}, got {sample!r}")
    if sample < 1:
        raise ValueError(f"{rule}, got {sample!r}")
    for name, value in (("max_objects", max_objects), ("max_bytes", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= 1 (the check's budget), got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be an int >= 1 (the check's budget), got {value!r}")
    run: RunOptions = {
        "n_workers": n_workers,
        "seed": seed,
        "seed_for": seed_for,
        "protect_shared": options.get("protect_shared", True),
        "share_state": options.get("share_state", False),
        "private_state": options.get("private_state", ()),
        "progress": False,
    }
    config = make_config(given, sample, run)
    if config.n_workers < 2:
        raise ValueError(f"n_workers must be >= 2 for a thread-safety check, got {n_workers}")
    checker = _Checker(config, range(config.n_realizations), config.n_workers)
    shared = {**config.shared_roots(), "simulate": simulate}

    def new_walk() -> Walk:
        return Walk(max_objects=max_objects, max_bytes=max_bytes)

    # Paths of a PathTable: the fingerprints hold every object's path, linear in memory
    table = PathTable()
    walk = new_walk()  # one walk of the model finds the modules, fingerprints and protects it
    found = list(walk_paths(shared, table, walk))
    in_state = (obj for _, obj in walk_paths({"state": config.state}, PathTable()))
    modules = _watched_modules(simulate, itertools.chain((obj for _, obj in found), in_state))
    module_roots = _module_roots(modules)
    found += walk_paths(module_roots, table, walk)  # what args also reach is under args only

    def snapshot(walk: Walk) -> tuple[dict[str | WalkPath, str], str, str]:
        roots = {**shared, **_module_roots(modules)}  # read again: globals may be rebound
        prints = tokens(walk_paths(roots, table, walk), walk)
        return prints, _global_numpy_random_state(), _random_module_state()

    before = tokens(found, walk), _global_numpy_random_state(), _random_module_state()
    protect = (
        read_only_arrays({**shared, **module_roots}, warn=False, found=found)
        if config.protect_shared
        else nullcontext(None)
    )
    del found
    walk.seen.clear()
    with protect as protection:
        if config.warmup:
            warm_up(config)
            walk = new_walk()
            before = snapshot(walk)
            walk.seen.clear()
        reference = checker.serial_and_repeats()
        checker.threads(reference)
    after_walk = new_walk()
    after = snapshot(after_walk)
    walks = [walk, after_walk] + ([] if protection is None else [protection.walk])
    read_only: list[str] = []
    if any(w.budget_hit for w in walks):
        roots = {**shared, **_module_roots(modules)}
        objects_hit, unseen, read_only = _left_out(
            walks, [before[0], after[0]], roots, protection, table
        )
        if objects_hit or unseen:
            checker.note(Cause.NOT_FINGERPRINTED, _budget_detail(objects_hit, unseen, walks))
    changed = changes(before[0], after[0])
    in_shared = [c for c in changed if any(_under(c, root) for root in shared)]
    for cause, detail in _shared_findings(in_shared):
        checker.note(cause, detail)
    own_package = _top(_simulate_module(simulate))
    in_modules = [c for c in changed if c not in in_shared]
    for cause, detail in _module_findings(in_modules, modules, own_package):
        checker.note(cause, detail)
    if after[1] != before[1]:
        checker.note(
            Cause.GLOBAL_NUMPY_RANDOM, "the global numpy.random state changed during the runs"
        )
    if after[2] != before[2]:
        users = _random_module_users(modules)
        checker.note(
            Cause.RANDOM_MODULE,
            "random.getstate() changed during the runs"
            + (f"; the random module is used in {_join(users)}" if users else ""),
        )
    order = list(Cause)
    explained = _explained({cause for cause, _ in checker.findings})
    findings = [f for f in checker.findings.values() if f.cause not in explained]
    done: Protection | None = protection
    return CheckReport(
        simulate=getattr(simulate, "__qualname__", repr(simulate)),
        sample=tuple(checker.sample),
        n_workers=config.n_workers,
        protected_arrays=0 if done is None else len(done.arrays),
        findings=tuple(sorted(findings, key=lambda f: order.index(f.cause))),
        differences=tuple(checker.differences),
        walked_objects=walk.objects,
        walked_bytes=walk.bytes,
        budget_hit=any(w.budget_hit for w in walks),
        unprotected=() if done is None else tuple(done.unprotected),
        unhashed_read_only=tuple(read_only),
        watched_modules=tuple(modules),
        state=None if (copier := config.per_thread_state()) is None else copier.footprint(),
    )
