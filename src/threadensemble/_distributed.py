"""The dask.distributed backend: ``simulate_ensemble(..., client=client)``.

Imported only when a client is given (``distributed`` is the optional ``dask`` extra).  The
calling process, the dask client, validates the arguments, warms up and runs the completion
loop exactly as for local threads (`threadensemble._engine`); only where realizations run
differs.

* The run's context (its configuration: ``simulate``, ``args``, ``kwargs``, the master state,
  the seeds) travels in a worker plugin, `_RunPlugin`: pickled once here, kept by the scheduler
  for the run, unpickled once by every worker process, including workers that join later
  (job queues, adaptive clusters); never once per task.  Tasks carry only the run's name and a
  realization index, so the scheduler has no data locality to favour one worker with.
* Unpickling the plugin on a worker gives that process a lazy `PerThreadState` (each dask worker
  thread deep-copies the master on its first realization and keeps that copy) and a cancel
  event; its ``setup`` makes the shared arrays read-only there with ``protect_shared``.
* A task calls `compute`, as a local worker thread does, with the same seed streams, so the
  ensemble is bitwise identical.  Without ``output_dir`` it returns the `Computed` (the
  Dataset with its layout).  With one, it writes the file completely under a temporary name
  (holding its own process's `netcdf_lock`) and returns a `Written`; the completion loop
  checks the layout and commits the file (an atomic rename) or discards it, so that a
  realization file exists only once the run accepted it.
* Unregistering the plugin at the end (``teardown`` on every worker) sets the cancel event, so
  realizations still running when a run is interrupted see ``cancelled()`` turn True and write
  no file, and frees the workers' copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import threading
import time
import uuid
import warnings
from collections.abc import Collection
from typing import Any

import dask
from distributed import Client, Future, WorkerPlugin, get_worker

from ._config import RunConfig
from ._errors import WorkerInitError
from ._realize import Outcome, realize_and_write
from ._runtime import gil_enabled, is_free_threaded_build
from ._shared import make_read_only
from ._state import PerThreadState

__all__ = ["DaskBackend"]

_CAPACITY_REFRESH = 1.0  # seconds between asking the scheduler how many threads it has
_STATUS_POLL = 0.01  # seconds between looks at the futures' status while waiting


class _RunPlugin(WorkerPlugin):
    """One run's context on every worker: its configuration, per-thread state, cancel event.

    It pickles as its configuration and name only; unpickling (``__init__`` again) gives each
    worker process its own lazy per-thread state and cancel event.
    """

    def __init__(self, config: RunConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.cancel = threading.Event()
        self.per_thread = (
            PerThreadState(config.state, lazy=True, share=config.share_state)
            if config.inject is not None
            else None
        )

    def __reduce__(self) -> tuple[type[_RunPlugin], tuple[RunConfig, str]]:
        return (_RunPlugin, (self.config, self.name))

    def setup(self, worker: Any) -> None:
        """Protect this worker's copy of the shared context (``protect_shared``), for good."""
        if self.config.protect_shared:
            make_read_only(self.config.shared_roots())

    def teardown(self, worker: Any) -> None:
        """End of the run: realizations still running see cancelled() turn True."""
        self.cancel.set()


def _realize_on_worker(name: str, index: int) -> Outcome:
    """Compute realization ``index`` as a local thread would (a task); write it if asked."""
    run = get_worker().plugins.get(name)
    if not isinstance(run, _RunPlugin):
        raise RuntimeError(
            f"this dask worker has no context for run {name}: the run has ended, or the worker "
            "could not unpickle it when it joined (see the worker's log)"
        )
    return realize_and_write(run.config, run.per_thread, run.cancel, index)


def _profiler_unsafe() -> bool:
    """Return whether dask's profiler reads frames of threads without a GIL (run on a worker).

    It reads other threads' frames through ``sys._current_frames()``; on a free-threaded build
    with the GIL off that is a use-after-free while those threads run, and the process crashes.
    """
    enabled = dask.config.get("distributed.worker.profile.enabled")
    return bool(enabled) and is_free_threaded_build() and not gil_enabled()


class DaskBackend:
    """Realizations on a dask cluster: the client's side (a `threadensemble._engine.Backend`)."""

    def __init__(self, config: RunConfig, client: Client) -> None:
        self.client = client
        self.name = f"threadensemble-{uuid.uuid4().hex}"
        self._registered = False
        self._submissions = itertools.count()  # a retry is a new task: keys are never reused
        self._threads, self._counted_at = 0, -math.inf
        # What the workers get: no client; no warm-up (it ran here, and a warm-up function need
        # not be picklable); an absolute output_dir (workers have other working directories).
        self._worker_config = dataclasses.replace(
            config,
            client=None,
            warmup=False,
            output_dir=None if config.output_dir is None else config.output_dir.absolute(),
        )

    def describe(self) -> str:
        return f"dask, {self.capacity()} threads"

    def capacity(self) -> int:
        now = time.monotonic()
        if now - self._counted_at >= _CAPACITY_REFRESH:
            # Clusters grow and shrink (job queues, adaptive scaling): ask now and then.
            self._threads = sum(self.client.nthreads().values())
            self._counted_at = now
        return self._threads

    def per_task(self) -> int:
        return 1

    def worker_cpu_seconds(self) -> None:
        return None  # not measured on the cluster

    def submit(self, index: int) -> Future[Outcome]:
        if not self._registered:  # on first use: a run with nothing to do sends nothing
            self._registered = True  # the scheduler keeps it even if a worker fails below
            try:
                # Returns once every current worker has unpickled the context.
                self.client.register_plugin(_RunPlugin(self._worker_config, self.name), self.name)
            except Exception as exc:
                raise WorkerInitError(
                    f"the dask workers could not set up the run: {type(exc).__name__}: {exc} "
                    "(can they import simulate's module and everything args, kwargs and state "
                    "refer to, in the same versions?)"
                ) from exc
            self._warn_if_profiler_unsafe()
        future: Future[Outcome] = self.client.submit(
            _realize_on_worker,
            self.name,
            index,
            key=f"{self.name}-{next(self._submissions)}-realization-{index}",
        )
        return future

    def _warn_if_profiler_unsafe(self) -> None:
        unsafe = sorted(w for w, bad in self.client.run(_profiler_unsafe).items() if bad)
        if unsafe:
            warnings.warn(
                f"dask workers {', '.join(unsafe)} run free-threaded with the GIL off and with "
                "dask's sampling profiler on, which reads running threads' frames: unsafe there, "
                "it crashes workers; start them with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"
                "=False (see the threadensemble docs, Running on a dask cluster)",
                RuntimeWarning,
                stacklevel=2,
            )

    def wait(
        self, futures: Collection[Future[Outcome]], timeout: float
    ) -> Collection[Future[Outcome]]:
        # Not distributed.wait: on a timeout it raises an exception whose traceback holds the
        # futures in a reference cycle, so that every result stays on the cluster until the
        # garbage collector runs.  A future's status is a local attribute: polling is cheap.
        deadline = time.monotonic() + timeout
        while not (done := [f for f in futures if f.done()]) and time.monotonic() < deadline:
            time.sleep(_STATUS_POLL)
        return done

    def result(self, future: Future[Outcome]) -> Outcome:
        return future.result()

    def shutdown(self, running: Collection[Future[Outcome]], cancel: bool) -> None:
        if cancel:
            self.client.cancel(list(running))  # pending ones; running ones see the teardown
        if self._registered:
            # KeyError: a worker that could not set the run up has nothing to tear down (the
            # scheduler has forgotten the plugin all the same).
            with contextlib.suppress(KeyError):
                self.client.unregister_worker_plugin(self.name)
