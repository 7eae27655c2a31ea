"""The process backend: ``simulate_ensemble(..., backend="processes")``.

For standard (GIL) builds, where threads run pure-Python models one at a time.  Realizations
run in a `concurrent.futures.ProcessPoolExecutor` started with the ``forkserver`` method where
the platform has it (Linux), else ``spawn``; never by forking the calling process, which may
already run threads (the pool's own, the user's).  The calling process validates, warms up and
runs the completion loop exactly as for threads (`threadensemble._engine`); only where
realizations run differs, as for dask (`threadensemble._distributed`, the model of this module).

* The run's configuration (``simulate``, ``args``, ``kwargs``, the warmed-up master state, the
  seeds) is pickled once here (by cloudpickle when installed: functions of ``__main__`` travel
  by value) and sent to each worker process once, as its initializer's argument; tasks carry
  only realization indices.  Its buffers of a MiB or more (the model's large arrays) are not
  in that pickle: they are written once into a memory file whose descriptor the workers get,
  and map copy-on-write (`threadensemble._sharedbuffers`; Linux): one copy in memory, however
  many workers, each worker's arrays still its own.
* Each worker process unpickles it once and deep-copies the state once, as a worker thread
  does: one process computes one realization at a time, so its copy needs no lock.  A worker
  that cannot map the memory file, unpickle the configuration or copy the state answers every
  task with `WorkerInitError`, naming the cause; the run stops at the first.
* A task calls `compute` for each of its realizations, as a worker thread does, with the same
  seed streams: the ensemble is bitwise identical to the threads'.  Without ``output_dir`` it
  returns them as `Computed` (each Dataset with its layout, pickled back).  With one, it
  writes each file completely under a temporary name (`write_temporary`) and returns a
  `Written`; the completion loop commits it, or discards it.
* A task holds as many realizations as take the workers about ``_TASK_SECONDS`` (one at first,
  then doubling at most per finished task, from the time the workers took per realization):
  each task costs the pool about 0.3 ms here (pickling, pipes, waking this process), which
  for realizations of a millisecond would be a fifth of the run.  The completion loop still
  sees one future per realization (`_resolve` fills them when their task ends).
* The forkserver preloads this module, so that its workers start with numpy, xarray and
  threadensemble imported (`_preload_in_forkserver`).
* A realization's exception travels back to the calling process with its traceback (the
  text, as the ``__cause__``, as `ProcessPoolExecutor` sends it), where it fails that
  realization as on threads (`SystemExit` too; `KeyboardInterrupt` stops the run).  One that
  cannot be pickled, or unpickled (a class of the user's ``__main__``, which travelled by
  value), is replaced by a stand-in of the same name and message (`RemoteRealizationError`),
  its traceback kept.
* A worker that dies (killed, out of memory) breaks the pool: `WorkerInitError`, and the
  temporary files of this run's workers (their names hold the worker's pid) are removed.
* Workers exit at once when the calling process is gone (killed): each holds the reading end
  of a pipe that only the calling process writes to, and a thread that waits for its end of
  file; a realization also checks it before writing its file.  With them the forkserver goes
  too (the workers hold it alive).
* Workers ignore SIGINT (a Ctrl-C in a terminal reaches the whole process group): the calling
  process cancels them.  Pending tasks are cancelled; running ones see ``cancelled()`` turn True
  through a `multiprocessing` Event shared with the workers; files that workers finished after
  the cancellation are removed, never committed.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import connection, synchronize
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, TypeAlias

from ._config import RunConfig
from ._context import CancelFlag
from ._errors import WorkerInitError
from ._netcdf import TEMP_NAME
from ._picklable import PROCESSES_ADVICE, model_pickler, raise_if_unpicklable
from ._realize import Outcome, realize_and_write
from ._shared import make_read_only
from ._sharedbuffers import SharedBuffers, dumps_sharing
from ._state import PerThreadState

__all__ = ["ProcessBackend", "RemoteRealizationError", "start_method"]

# What a realization returns: the outcome, the worker's pid and its CPU time so far (for the
# report), the seconds its task took per realization and the task's size (for the next tasks).
_Result: TypeAlias = tuple[Outcome, int, float, float, int]
# What a task returns: per realization its outcome or exception (with its traceback's text),
# then the worker's pid, its CPU time so far, and the task's seconds per realization.
_TaskResult: TypeAlias = tuple[list["Outcome | tuple[BaseException, str]"], int, float, float]

_TASK_SECONDS = 0.05  # the work a task holds, once the realizations' time is known
_MAX_PER_TASK = 1024


def start_method() -> str:
    """Return how worker processes are started: ``forkserver`` where available, else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _preload_in_forkserver() -> None:
    """Have the forkserver import this module (numpy, xarray, threadensemble) before it forks.

    The forkserver is started once per process, on first use; with this module preloaded its
    workers start with the imports done: about 35 ms instead of an interpreter's imports, 0.7
    s here, for every later run.  The modules preloaded already (``__main__`` by default, or
    the user's ``set_forkserver_preload``) are kept; once the server runs, this changes nothing.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    preloaded = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if __name__ not in preloaded:
        forkserver.set_forkserver_preload([*preloaded, __name__])


class RemoteRealizationError(RuntimeError):
    """Stands in for a realization's exception that could not travel from its worker process.

    Its class has the name (and module) of the original's; its message is the original's; its
    ``__cause__`` holds the original's traceback, as for any exception of a worker process.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return _stand_in, (type(self).__module__, type(self).__qualname__, str(self))


def _stand_in(module: str, qualname: str, message: str) -> RemoteRealizationError:
    """Return a `RemoteRealizationError` named ``module.qualname`` (also: its unpickler)."""
    attributes = {"__module__": module, "__qualname__": qualname, "__doc__": None}
    cls: type[RemoteRealizationError] = type(
        qualname.rpartition(".")[2], (RemoteRealizationError,), attributes
    )
    return cls(message)


def _travelling(exc: BaseException) -> BaseException:
    """Return ``exc`` if the calling process can unpickle it as a failure, else its stand-in."""
    if not isinstance(exc, SystemExit):  # a failure of its realization, as on threads
        try:
            pickle.loads(ForkingPickler.dumps(exc))
        except Exception:
            pass
        else:
            return exc
    return _stand_in(type(exc).__module__, type(exc).__qualname__, str(exc))


class _CallerWatch:
    """The worker's cancel flag: set when the run is cancelled, or when its caller is gone.

    ``caller`` is the reading end of a pipe that the calling process holds open, and never
    writes to: it becomes readable (end of file) when that process has exited, or was killed.
    """

    def __init__(self, cancel: CancelFlag, caller: Connection) -> None:
        self.cancel = cancel
        self.caller = caller

    def is_set(self) -> bool:
        return self.cancel.is_set() or bool(connection.wait([self.caller], 0))

    def exit_with_the_caller(self) -> None:
        """Exit this worker process at once when the calling process is gone (a thread)."""
        connection.wait([self.caller])
        os._exit(1)  # nobody would commit what this process writes, or collect it


@dataclass
class _WorkerRun:
    """The run, as one worker process holds it (set once by `_initialize`)."""

    config: RunConfig | None
    per_thread: PerThreadState | None
    cancel: CancelFlag
    init_error: str | None = None


# This worker process's run: written once by the initializer, before any task, then only read
# (a worker process runs one task at a time, in its main thread).
_worker_run: _WorkerRun | None = None


def _initialize(
    payload: bytes,
    shared: SharedBuffers | None,
    run_cancel: CancelFlag,
    caller: Connection,
    started: synchronize.Event,
) -> None:
    """Set up a worker process (the pool's initializer): ignore Ctrl-C, unpickle, copy state."""
    global _worker_run
    started.set()  # it has imported the main module again: it did not die while starting
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the calling process cancels its workers
    cancel = _CallerWatch(run_cancel, caller)
    threading.Thread(target=cancel.exit_with_the_caller, daemon=True).start()
    try:
        buffers = None if shared is None else shared.views()
    except BaseException as exc:
        _worker_run = _WorkerRun(
            None,
            None,
            cancel,
            f"could not map the memory file of the model's large arrays: "
            f"{type(exc).__name__}: {exc}",
        )
        return
    try:
        config: RunConfig = pickle.loads(payload, buffers=buffers)
    except BaseException as exc:
        _worker_run = _WorkerRun(
            None,
            None,
            cancel,
            f"could not unpickle the run's model: {type(exc).__name__}: {exc} (can a new "
            "process import simulate's module and everything args, kwargs and state refer to?)",
        )
        return
    per_thread = config.per_thread_state()
    if per_thread is not None:
        try:
            per_thread.initialize()
        except BaseException as exc:
            _worker_run = _WorkerRun(
                None,
                None,
                cancel,
                f"could not deep-copy the state: {type(exc).__name__}: {exc}",
            )
            return
    if config.protect_shared:
        make_read_only(config.shared_roots())  # this process's own copy, for good
    _worker_run = _WorkerRun(config, per_thread, cancel)


def _realize_in_worker(indices: list[int]) -> _TaskResult:
    """Compute realizations ``indices`` as a worker thread would (a task); write them if asked.

    A realization's exception is returned in its place, with its traceback's text, and the
    task goes on; `KeyboardInterrupt` ends the task (it stops the run).
    """
    run = _worker_run
    assert run is not None, "the pool's initializer runs before any task"
    if run.config is None:
        raise WorkerInitError(f"worker process {os.getpid()} {run.init_error}")
    start = time.perf_counter()
    outcomes: list[Outcome | tuple[BaseException, str]] = []
    like = None  # the layout found last in this task: `layout_of` takes previews from it
    for index in indices:
        try:
            outcome = realize_and_write(run.config, run.per_thread, run.cancel, index, like)
            like = outcome.layout
            outcomes.append(outcome)
        except KeyboardInterrupt:
            raise  # not a failure of the realization: it stops the run
        except BaseException as exc:
            travelling = _travelling(exc)
            if travelling is not exc:
                travelling.__cause__ = exc  # the traceback sent back shows exc's too
            text = "".join(traceback.format_exception(travelling))
            travelling.__cause__ = None
            outcomes.append((travelling, text))
    seconds = (time.perf_counter() - start) / len(indices)
    return outcomes, os.getpid(), time.process_time(), seconds


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process: the ``__cause__`` it gets here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def _resolve(futures: list[Future[_Result]], task: Future[_TaskResult]) -> None:
    """Finish each realization's future from its task's (a done callback: any thread)."""
    if task.cancelled():
        for future in futures:
            future.cancel()
        return
    error = task.exception()
    if error is not None:  # WorkerInitError, a dead worker, KeyboardInterrupt: for each
        for future in futures:
            if not future.done():
                future.set_exception(error)
        return
    outcomes, pid, cpu, seconds = task.result()
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():  # cancelled by shutdown meanwhile: nobody collects it
            continue
        if isinstance(outcome, tuple):
            exc, text = outcome
            exc.__cause__ = _RemoteTraceback(f'\n"""\n{text}"""')
            future.set_exception(exc)
        else:
            future.set_result((outcome, pid, cpu, seconds, len(futures)))


class ProcessBackend:
    """Realizations in worker processes (a `threadensemble._realize.Backend`)."""

    def __init__(self, config: RunConfig, n_processes: int) -> None:
        self.output_dir = config.output_dir
        self.n_processes = n_processes
        method = start_method()
        if method == "forkserver":
            _preload_in_forkserver()
        context: BaseContext = multiprocessing.get_context(method)
        # Set by the calling process only (shutdown); read by the workers' realizations.
        self.cancel = context.Event()
        # Set by the first worker process that reaches its initializer; read by the calling
        # thread when a worker has died, to tell a failed start from a later death.
        self._started = context.Event()
        # What the workers get: no warm-up (it ran here, and a warm-up function need not be
        # picklable); an absolute output_dir (spawned workers may start elsewhere).
        worker_config = dataclasses.replace(
            config,
            warmup=False,
            output_dir=None if config.output_dir is None else config.output_dir.absolute(),
        )
        payload, self._shared = _pickle_config(worker_config)
        # Held by the calling process only, never written to: the workers exit when it closes.
        caller, self._caller = context.Pipe(duplex=False)
        # Used by the calling thread only: the latest CPU time each worker process reported.
        self._worker_cpu: dict[int, float] = {}
        # Used by the calling thread only: the pids of every worker process this run started.
        self._worker_pids: set[int] = set()
        # Used by the calling thread only: realizations submitted, not yet sent in a task; how
        # many a task holds now (`_TASK_SECONDS`).
        self._unsent: list[tuple[int, Future[_Result]]] = []
        self._per_task = 1
        try:
            self.pool = ProcessPoolExecutor(
                max_workers=n_processes,
                mp_context=context,
                initializer=_initialize,
                initargs=(payload, self._shared, self.cancel, caller, self._started),
            )
        except BaseException:
            if self._shared is not None:
                self._shared.close()
            raise

    def describe(self) -> str:
        return f"{self.n_processes} processes"

    def capacity(self) -> int:
        return self.n_processes

    def per_task(self) -> int:
        return self._per_task

    def worker_cpu_seconds(self) -> float:
        """Return the CPU time the worker processes reported with their last realizations."""
        return sum(self._worker_cpu.values())

    def submit(self, index: int) -> Future[_Result]:
        future: Future[_Result] = Future()
        self._unsent.append((index, future))
        if len(self._unsent) >= self._per_task:
            self._send()
        return future

    def _send(self) -> None:
        """Send the realizations submitted since the last task as one task."""
        if not self._unsent:
            return
        unsent, self._unsent = self._unsent, []
        try:
            task = self.pool.submit(_realize_in_worker, [index for index, _ in unsent])
        except BrokenProcessPool as exc:  # a retry, after a worker died
            raise _worker_died(exc, self._started.is_set()) from exc
        self._worker_pids.update(list(self.pool._processes))  # started as tasks are submitted
        task.add_done_callback(functools.partial(_resolve, [future for _, future in unsent]))

    def wait(
        self, futures: Collection[Future[_Result]], timeout: float
    ) -> Collection[Future[_Result]]:
        self._send()  # the loop has submitted what it will for now
        return wait(futures, timeout, return_when=FIRST_COMPLETED).done

    def result(self, future: Future[_Result]) -> Outcome:
        try:
            outcome, pid, cpu, seconds, task_size = future.result()
        except BrokenProcessPool as exc:
            raise _worker_died(exc, self._started.is_set()) from exc
        self._worker_cpu[pid] = cpu
        # A task holds at most twice as many as the one that finished (the same for each of
        # its realizations), so that a few quick ones (failures) cannot put many slow
        # realizations in one task.
        fitting = int(_TASK_SECONDS / max(seconds, 1e-6))
        self._per_task = max(1, min(fitting, 2 * task_size, _MAX_PER_TASK))
        return outcome

    def shutdown(self, running: Collection[Future[Any]], cancel: bool) -> None:
        try:
            for _, future in self._unsent:
                future.cancel()
            self._unsent.clear()
            if cancel:
                # Cancel what has not started, tell running realizations (cancelled() turns
                # True), and wait for them: their results are discarded.
                self.cancel.set()
            self.pool.shutdown(wait=True, cancel_futures=cancel)
        finally:
            # Even when a second Ctrl-C interrupts the wait: nothing else would ever close
            # the memory file, which holds a copy of the model's large arrays.
            if self._shared is not None:  # no worker is started any more: no other needs it
                self._shared.close()
        self._caller.close()
        if self.output_dir is not None:
            # Every worker has exited, and every file committed: what temporaries of theirs
            # are left (finished after the cancellation, or cut short when a worker died) are
            # not the run's.
            _remove_temporaries(self.output_dir, self._worker_pids)


def _worker_died(exc: BrokenProcessPool, any_started: bool) -> WorkerInitError:
    if not any_started:
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        return WorkerInitError(
            f"a worker process died while starting, before it could load the model ({exc}); "
            f"worker processes import the main module{f' ({main})' if main else ''} again, "
            'so a script must start the run under `if __name__ == "__main__":`, as '
            "multiprocessing requires (the worker's own traceback, if any, is above)"
        )
    return WorkerInitError(
        f"a worker process died ({exc}): killed, out of memory, or crashed in an extension "
        "module; the run stops"
    )


def _remove_temporaries(directory: Path, pids: Collection[int]) -> None:
    """Remove the temporary files that the worker processes ``pids`` left in ``directory``."""
    for path in directory.iterdir():
        if TEMP_NAME.fullmatch(path.name) and int(path.name.split(".")[-3]) in pids:
            path.unlink(missing_ok=True)


def _pickle_config(config: RunConfig) -> tuple[bytes, SharedBuffers | None]:
    """Pickle the workers' configuration (`dumps_sharing`); TypeError naming what cannot be."""
    dumps = model_pickler()
    try:
        return dumps_sharing(dumps, config)
    except Exception:
        # The arguments were checked before the run; a warm-up may have put something that
        # cannot travel into the state since.
        raise_if_unpicklable(
            dumps,
            {"simulate": config.simulate, **config.shared_roots(), "state": config.state},
            PROCESSES_ADVICE,
        )
        raise
