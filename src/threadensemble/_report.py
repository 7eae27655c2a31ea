"""The parallelism report of a run: how much of the machine it used, and where the time went.

The engine's completion loop measures a run with a `RunClock` (wall time and CPU time of this
process from the start of the workers to the ensemble in hand, and the time the calling thread
spent writing, committing and assembling) and turns it into a `RunReport`, shown at the end of
the progress bar, stored in the manifest and kept for `last_run_report`.  On a GIL build, a
threads run whose parallelism stays near 1 warns once, naming the two ways out.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from ._runtime import gil_enabled, is_free_threaded_build

__all__ = ["RunClock", "RunReport", "last_run_report", "record_report", "warn_if_serialized"]


@dataclass(frozen=True)
class RunReport:
    """How a run used the machine: `threadensemble.last_run_report` returns one.

    Attributes
    ----------
    backend : str
        Where realizations ran: ``"threads"``, ``"processes"`` or ``"dask"``.
    n_workers : int
        Worker threads or processes started (dask: the cluster's threads at the end).
    n_computed : int
        Realizations computed by this run (not those resumed from files).
    wall_seconds : float
        From starting the workers to the ensemble in hand (assembled, or opened from files).
    cpu_seconds : float
        CPU time of this process, all its threads, over the same span.
    worker_cpu_seconds : float or None
        CPU time of the worker processes (``"processes"``: from their start, imports included);
        0.0 for threads (their time is this process's); None when unknown (dask).
    writing_seconds : float
        Time the calling thread spent writing or committing files and assembling the ensemble.
    gil_enabled : bool
        The GIL was enabled at the end of the run (always True on a standard build).
    free_threaded : bool
        The interpreter is a free-threaded build.
    """

    backend: str
    n_workers: int
    n_computed: int
    wall_seconds: float
    cpu_seconds: float
    worker_cpu_seconds: float | None
    writing_seconds: float
    gil_enabled: bool
    free_threaded: bool

    @property
    def parallelism(self) -> float | None:
        """Return CPU time over wall time: about ``n_workers`` at best, 1.0 for serial work."""
        if self.worker_cpu_seconds is None or self.wall_seconds <= 0:
            return None
        return (self.cpu_seconds + self.worker_cpu_seconds) / self.wall_seconds

    @property
    def writing_share(self) -> float:
        """Return the share of wall time the calling thread spent writing and assembling."""
        return self.writing_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def describe(self) -> str:
        """Return one line, e.g. ``parallelism 1.9x of 2 processes, wall 4.1 s, ...``."""
        unit = {"threads": "threads", "processes": "processes"}.get(self.backend, "dask threads")
        parallel = self.parallelism
        achieved = "parallelism unknown" if parallel is None else f"parallelism {parallel:.2f}x"
        gil = "GIL on" if self.gil_enabled else "GIL off"
        return (
            f"{achieved} of {self.n_workers} {unit}, wall {self.wall_seconds:.2f} s, "
            f"writing/assembling {self.writing_share:.0%}, {gil}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values (as stored in the manifest)."""
        return {**asdict(self), "parallelism": self.parallelism}


class RunClock:
    """Measures one run; used by the calling thread only (no lock)."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self.writing_seconds = 0.0

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Count the block as time the calling thread spent writing or assembling."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.writing_seconds += time.perf_counter() - start

    def report(
        self, backend: str, n_workers: int, n_computed: int, worker_cpu_seconds: float | None
    ) -> RunReport:
        """Return the report of the run so far."""
        return RunReport(
            backend=backend,
            n_workers=n_workers,
            n_computed=n_computed,
            wall_seconds=time.perf_counter() - self._wall,
            cpu_seconds=time.process_time() - self._cpu,
            worker_cpu_seconds=worker_cpu_seconds,
            writing_seconds=self.writing_seconds,
            gil_enabled=gil_enabled(),
            free_threaded=is_free_threaded_build(),
        )


# The report of the last run that finished in each thread: runs in other threads do not mix.
_last = threading.local()


def record_report(report: RunReport | None) -> None:
    """Keep ``report`` as the calling thread's last run report (None when a run starts)."""
    _last.report = report


def last_run_report() -> RunReport | None:
    """Return the parallelism report of the last ensemble run in the calling thread.

    Every `simulate_ensemble` call that runs to the end (or ends in `EnsembleError`) leaves
    one; a call that stops earlier (bad arguments, Ctrl-C) leaves None.  The same report ends
    the progress bar, is printed by the command line's ``run``, and is stored in the output
    directory's manifest (``"run_report"``).

    Returns
    -------
    RunReport or None

    Examples
    --------
    >>> import threadensemble as te
    >>> ens = te.simulate_ensemble(lambda: {"x": te.get_rng().random(3)}, 4, progress=False)
    >>> report = te.last_run_report()
    >>> report.n_computed, report.backend
    (4, 'threads')
    """
    report: RunReport | None = getattr(_last, "report", None)
    return report


# A run must last this long for its parallelism to say something about the model, not start-up.
_MIN_WALL_FOR_ADVICE = 1.0
_SERIAL = 1.3  # parallelism below this with 2 or more workers: realizations ran one at a time


def warn_if_serialized(report: RunReport, stacklevel: int) -> None:
    """Warn when threads ran one at a time because of the GIL, naming the two ways out."""
    parallel = report.parallelism
    if (
        report.backend != "threads"
        or report.n_workers < 2
        or not report.gil_enabled
        or report.wall_seconds < _MIN_WALL_FOR_ADVICE
        or parallel is None
        or parallel >= _SERIAL
    ):
        return
    warnings.warn(
        f"the realizations ran about one at a time (parallelism {parallel:.2f}x with "
        f"{report.n_workers} worker threads): the GIL is on, and the model's Python code holds "
        "it; for a parallel run use a free-threaded interpreter (python3.13t) with "
        'PYTHON_GIL=0, or simulate_ensemble(..., backend="processes")',
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
