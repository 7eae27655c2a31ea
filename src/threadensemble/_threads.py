"""The local backend: a `ThreadPoolExecutor` whose initializer gives each thread its state copy.

Its futures resolve to Datasets, which the calling thread's completion loop writes.  The pool's
threads only simulate; they share nothing of the run but the read-only context and the master
state, which only ``copy.deepcopy`` reads.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures.thread import BrokenThreadPool

import xarray as xr

from ._config import RunConfig
from ._realize import Outcome, realize
from ._runtime import gil_enabled
from ._state import PerThreadState, worker_init_error

__all__ = ["ThreadBackend"]


class ThreadBackend:
    """The local backend: a thread pool whose initializer gives each thread its state copy."""

    def __init__(self, config: RunConfig, n_threads: int) -> None:
        self.config = config
        self.cancel = threading.Event()
        self.per_thread = PerThreadState(config.state) if config.inject is not None else None
        self.pool = ThreadPoolExecutor(
            max_workers=n_threads,
            thread_name_prefix="threadensemble",
            initializer=self.per_thread.initialize if self.per_thread else None,
        )

    def describe(self) -> str:
        return f"{self.config.n_workers} workers, GIL {'on' if gil_enabled() else 'off'}"

    def capacity(self) -> int:
        return self.config.n_workers

    def worker_cpu_seconds(self) -> float:
        return 0.0  # the worker threads' CPU time is this process's

    def submit(self, index: int) -> Future[xr.Dataset]:
        return self.pool.submit(realize, self.config, self.per_thread, self.cancel, index)

    def wait(
        self, futures: Collection[Future[xr.Dataset]], timeout: float
    ) -> Collection[Future[xr.Dataset]]:
        return wait(futures, timeout, return_when=FIRST_COMPLETED).done

    def result(self, future: Future[xr.Dataset]) -> Outcome:
        try:
            return future.result()
        except BrokenThreadPool:
            # Only a failing initializer breaks the pool, and it records why: report that.
            assert self.per_thread is not None and self.per_thread.init_errors
            cause = self.per_thread.init_errors[0]
            raise worker_init_error(cause) from cause

    def shutdown(self, running: Collection[Future[xr.Dataset]], cancel: bool) -> None:
        if cancel:
            # Cancel what has not started, tell running realizations (cancelled() turns True),
            # and wait for them: their results are discarded.
            self.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=cancel)
