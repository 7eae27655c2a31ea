"""`check`: is a model safe to run on threads?  Finds the usual ways it is not, and says why.

A model that hides shared mutable state gives silently wrong answers under threads.  The check
runs a sample of realizations

1. once in order with one copy of the state, as ``n_workers=1`` would (the reference);
2. each twice more in a row on that same copy (state carried over between realizations, or a
   first run that differs from later ones);
3. on ``n_workers`` threads started together by a barrier, each with its own copy;

and compares the outputs bitwise.  Meanwhile the arrays of the shared context are read-only
(an in-place write raises where it happens), and the shared context, the module globals of
``simulate`` and the global ``numpy.random`` state are fingerprinted before and after, so that
any change to them is named.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import threading
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._config import RunConfig, make_config
from ._realize import realize, warm_up
from ._rng import SeedLike
from ._shared import changes, fingerprint, read_only_arrays
from ._state import PerThreadState, StateFootprint

__all__ = ["Cause", "CheckReport", "Difference", "Finding", "ThreadSafetyError", "check"]


class Cause(enum.Enum):
    """Why a model is not safe on threads."""

    SHARED_ARRAY_WRITE = "simulate writes into a shared array"
    SHARED_OBJECT_CHANGED = "simulate changes the shared context"
    MODULE_STATE_CHANGED = "simulate changes module-level state"
    GLOBAL_NUMPY_RANDOM = "simulate uses the global numpy.random functions"
    FIRST_RUN_DIFFERS = "the first run differs from later runs (lazy initialization)"
    STATE_CARRIED_OVER = "state is carried over between realizations"
    THREADS_DIFFER = "results differ between one worker and many threads"
    SIMULATE_RAISED = "simulate raised an exception"


_ADVICE = {
    Cause.SHARED_ARRAY_WRITE: "args and kwargs are shared by every thread and must not be written;"
    " keep arrays that simulate writes in the state (one copy per thread), or copy them first",
    Cause.SHARED_OBJECT_CHANGED: "args and kwargs are shared by every thread and must not be "
    "written; move what simulate changes into the state (one copy per thread)",
    Cause.MODULE_STATE_CHANGED: "module globals are shared by every thread: keep caches and "
    "counters in the state; replace a module-level generator with rng = threadensemble.rng",
    Cause.GLOBAL_NUMPY_RANDOM: "np.random.* functions share one hidden generator between all "
    "threads; draw from threadensemble.get_rng() (or assign rng = threadensemble.rng)",
    Cause.FIRST_RUN_DIFFERS: "every thread's first realization would differ and results would "
    "depend on the worker count; pass warmup=True (or a warm-up function) so that the lazy "
    "initialization happens once, before the per-thread copies are made",
    Cause.STATE_CARRIED_OVER: "simulate reads state left by the previous realization; reset "
    "(or overwrite) everything it reads from the state at the start of each realization",
    Cause.THREADS_DIFFER: "something shared is written concurrently; see the other findings, "
    "or look for shared objects beyond the depth the check walks",
    Cause.SIMULATE_RAISED: "fix the exception first; the check compares only realizations that ran",
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
    """The result of `check`.  ``ok`` is True when no finding was made."""

    simulate: str
    sample: tuple[int, ...]
    n_workers: int
    protected_arrays: int
    findings: tuple[Finding, ...]
    differences: tuple[Difference, ...]
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
        ]
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


def _compare(a: xr.Dataset, b: xr.Dataset, index: int, comparison: str) -> list[Difference]:
    found = []
    for name in sorted(set(a.data_vars) | set(b.data_vars), key=str):
        if name not in a or name not in b or a[name].shape != b[name].shape:
            found.append(Difference(index, str(name), comparison, float("inf"), 1.0))
            continue
        x, y = a[name].values, b[name].values
        if x.dtype.kind in "fc":
            unequal = ~((x == y) | (np.isnan(x) & np.isnan(y)))
        else:
            unequal = np.asarray(x != y)
        if unequal.any():
            big = (
                float(np.max(np.abs(x[unequal] - y[unequal])))
                if x.dtype.kind in "iufc"
                else float("nan")
            )
            found.append(Difference(index, str(name), comparison, big, float(unequal.mean())))
    return found


_SHARED_WRITES = {
    Cause.SHARED_ARRAY_WRITE,
    Cause.SHARED_OBJECT_CHANGED,
    Cause.MODULE_STATE_CHANGED,
    Cause.GLOBAL_NUMPY_RANDOM,
}


def _explained(findings: Sequence[Finding]) -> set[Cause]:
    """Return the symptoms that the other findings already explain (so they are not listed).

    A write to something shared makes repeated runs and threaded runs differ; a first run that
    differs makes every thread's first realization differ.  The differences stay in the report.
    """
    causes = {f.cause for f in findings}
    explained = set()
    if causes & _SHARED_WRITES:
        explained |= {Cause.STATE_CARRIED_OVER, Cause.THREADS_DIFFER}
    if Cause.FIRST_RUN_DIFFERS in causes:
        explained.add(Cause.THREADS_DIFFER)
    return explained


def _module_state(simulate: Callable[..., Any]) -> dict[str, Any]:
    """Return the module globals of ``simulate`` that could hold state (not code, not constants)."""
    function = inspect.unwrap(getattr(simulate, "__func__", simulate))
    namespace: Mapping[str, Any] = getattr(function, "__globals__", {})
    module = namespace.get("__name__", "?")
    return {
        f"{module}.{name}": value
        for name, value in namespace.items()
        if not name.startswith("__")
        and not callable(value)
        and not isinstance(value, types.ModuleType | type | str | bytes | int | float | bool)
    }


def _global_numpy_random_state() -> str:
    return hashlib.blake2b(repr(np.random.get_state(legacy=False)).encode()).hexdigest()


def _where(exc: BaseException) -> str:
    """Return 'file:line: code' of the innermost frame of ``exc`` outside numpy and this package."""
    package = str(Path(__file__).parent)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(package) and f"{Path('numpy')}" not in Path(f.filename).parts
    ]
    if not frames:
        return f"{type(exc).__name__}: {exc}"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"


class _Checker:
    """Runs the passes of one check and collects what they find (all in the calling thread)."""

    def __init__(self, config: RunConfig, sample: Sequence[int], n_workers: int) -> None:
        self.config = config
        self.sample = list(sample)
        self.n_workers = n_workers
        self.findings: list[Finding] = []
        self.differences: list[Difference] = []
        self.failed: set[int] = set()
        self.cancel = threading.Event()

    def note(self, cause: Cause, detail: str) -> None:
        if all(f.cause is not cause or f.detail != detail for f in self.findings):
            self.findings.append(Finding(cause, detail))

    def run(self, per_thread: PerThreadState | None, index: int) -> xr.Dataset | None:
        try:
            return realize(self.config, per_thread, self.cancel, index)
        except ValueError as exc:
            if "read-only" in str(exc) and self.config.protect_shared:
                self.note(Cause.SHARED_ARRAY_WRITE, _where(exc))
            else:
                self.note(
                    Cause.SIMULATE_RAISED, f"realization {index}: {type(exc).__name__}: {exc}"
                )
        except Exception as exc:
            self.note(Cause.SIMULATE_RAISED, f"realization {index}: {type(exc).__name__}: {exc}")
        self.failed.add(index)
        return None

    def _new_state(self) -> PerThreadState | None:
        if self.config.inject is None:
            return None
        per_thread = PerThreadState(self.config.state, share=self.config.share_state)
        per_thread.initialize()
        return per_thread

    def serial_and_repeats(self) -> dict[int, xr.Dataset]:
        per_thread = self._new_state()
        reference = {k: out for k in self.sample if (out := self.run(per_thread, k)) is not None}
        unstable, first_run = [], []
        for k in self.sample:
            runs = [self.run(per_thread, k), self.run(per_thread, k)]
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
                Cause.STATE_CARRIED_OVER,
                f"realizations {unstable} gave different results when run again on the same state",
            )
        elif first_run:
            self.note(
                Cause.FIRST_RUN_DIFFERS,
                f"realization {first_run[0]} differs between the first run on a fresh copy of the "
                "state and the runs after it, with the same seed",
            )
        return reference

    def threads(self, reference: Mapping[int, xr.Dataset]) -> None:
        barrier = threading.Barrier(self.n_workers)
        outputs: dict[int, xr.Dataset | None] = {}

        def worker(share: list[int]) -> None:
            per_thread = self._new_state()
            barrier.wait()
            for k in share:
                outputs[k] = self.run(per_thread, k)

        threads = [
            threading.Thread(
                target=worker, args=(self.sample[t :: self.n_workers],), name=f"check-{t}"
            )
            for t in range(self.n_workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        differing = []
        for k, ref in reference.items():
            out = outputs.get(k)
            if out is not None and (
                diff := _compare(ref, out, k, f"1 worker vs {self.n_workers} threads")
            ):
                differing.append(k)
                self.differences.extend(diff)
        if differing:
            self.note(
                Cause.THREADS_DIFFER,
                f"realizations {differing} differ between 1 worker and {self.n_workers} threads",
            )


def check(
    simulate: Callable[..., Any],
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    state: Any = None,
    inject: str | None = None,
    seed: SeedLike = 0,
    sample: int = 8,
    n_workers: int = 4,
    warmup: bool | Callable[..., Any] = False,
    ragged: Sequence[str] = (),
    protect_shared: bool = True,
    share_state: bool = False,
    private_state: Sequence[str] = (),
) -> CheckReport:
    """Check that ``simulate`` gives the same realizations on threads as on one worker.

    Runs realizations ``0 .. sample-1`` once in order on one copy of the state (the reference),
    twice more each on that copy, and on ``n_workers`` threads started together, comparing the
    outputs bitwise.  While it runs, the numpy arrays of the shared context are read-only (when
    ``protect_shared``), and the shared context, the module globals of ``simulate`` and the
    global ``numpy.random`` state are compared before and after.  The arguments are those of
    `simulate_ensemble`.

    Parameters
    ----------
    simulate, args, kwargs, state, inject, seed, warmup, ragged, share_state, private_state
        As for `simulate_ensemble`.
    sample : int, default 8
        How many realizations to run (each is run four times).
    n_workers : int, default 4
        Threads started together for the threaded pass.
    protect_shared : bool, default True
        Make the shared arrays read-only while the check runs.

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
    """
    config = make_config(
        simulate, sample, args=args, kwargs=kwargs, state=state, inject=inject,
        n_workers=n_workers, seed=seed, seed_for=None, output_dir=None, ragged=ragged,
        warmup=warmup, protect_shared=protect_shared, lazy=False, overwrite=False,
        progress=False, fail_fast=False, retries=0, client=None, share_state=share_state,
        private_state=private_state,
    )  # fmt: skip
    if config.n_workers < 2:
        raise ValueError(f"n_workers must be >= 2 for a thread-safety check, got {n_workers}")
    checker = _Checker(config, range(config.n_realizations), config.n_workers)
    shared, module = config.shared_roots(), _module_state(simulate)
    before = fingerprint(shared), fingerprint(module), _global_numpy_random_state()
    protect = read_only_arrays(shared) if config.protect_shared else nullcontext(0)
    with protect as protected:
        if config.warmup:
            warm_up(config)
            before = fingerprint(shared), fingerprint(module), _global_numpy_random_state()
        reference = checker.serial_and_repeats()
        checker.threads(reference)
    shared_changes = changes(before[0], fingerprint(shared))
    module_changes = changes(before[1], fingerprint(module))
    if shared_changes:
        checker.note(Cause.SHARED_OBJECT_CHANGED, "; ".join(shared_changes[:5]))
    generators = [c for c in module_changes if ": Generator state" in c]
    if generators:
        checker.note(
            Cause.GLOBAL_NUMPY_RANDOM,
            "a module-level Generator is shared: " + "; ".join(generators[:3]),
        )
    if others := [c for c in module_changes if c not in generators]:
        checker.note(Cause.MODULE_STATE_CHANGED, "; ".join(others[:3]))
    if _global_numpy_random_state() != before[2]:
        checker.note(
            Cause.GLOBAL_NUMPY_RANDOM, "the global numpy.random state changed during the runs"
        )
    order = list(Cause)
    findings = [f for f in checker.findings if f.cause not in _explained(checker.findings)]
    return CheckReport(
        simulate=getattr(simulate, "__qualname__", repr(simulate)),
        sample=tuple(checker.sample),
        n_workers=config.n_workers,
        protected_arrays=int(protected or 0),
        findings=tuple(sorted(findings, key=lambda f: order.index(f.cause))),
        differences=tuple(checker.differences),
        state=None
        if config.inject is None
        else PerThreadState(config.state, share=config.share_state).footprint(),
    )
