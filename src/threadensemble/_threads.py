"""The local backend: worker threads that each copy the state once, then run realizations.

Its futures resolve to `Computed` realizations (each with the layout its thread found), which
the calling thread's completion loop checks and keeps or writes.  The threads only simulate;
they share nothing of the run but the read-only context and the master state, which only
``copy.deepcopy`` reads.

The threads are this module's own, not a `concurrent.futures.ThreadPoolExecutor`'s, for two
reasons.  The executor's threads are joined when the interpreter exits, so a second Ctrl-C
could not end a process whose realization never polls `threadensemble.cancelled`; ours are
daemon threads, joined by `ThreadBackend.shutdown` only (which a second Ctrl-C interrupts).
And a thread whose state copy fails answers every realization it takes with `WorkerInitError`,
whereas a broken executor raises a bare ``BrokenThreadPool`` from ``submit``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Collection
from concurrent.futures import Future

from ._config import RunConfig
from ._realize import Computed, compute
from ._runtime import gil_enabled
from ._state import worker_init_error

__all__ = ["ThreadBackend"]

_Task = tuple["Future[Computed]", int] | None  # None: the thread is to end


class ThreadBackend:
    """The local backend: threads that each make their state copy, then run realizations."""

    def __init__(self, config: RunConfig, n_threads: int) -> None:
        self.config = config
        self.n_threads = n_threads
        self.cancel = threading.Event()
        self.per_thread = config.per_thread_state()
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        # Written by the worker threads, read by the calling thread: each future once it is
        # finished (cheaper than `concurrent.futures.wait`, which installs and removes a
        # waiter on every running future each time the loop waits).
        self._finished: queue.SimpleQueue[Future[Computed]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []  # used by the calling thread only

    def describe(self) -> str:
        return f"{self.n_threads} workers, GIL {'on' if gil_enabled() else 'off'}"

    def capacity(self) -> int:
        return self.n_threads

    def per_task(self) -> int:
        return 1

    def worker_cpu_seconds(self) -> float:
        return 0.0  # the worker threads' CPU time is this process's

    def submit(self, index: int) -> Future[Computed]:
        future: Future[Computed] = Future()
        self._tasks.put((future, index))
        if len(self._threads) < self.n_threads:
            thread = threading.Thread(
                target=self._work,
                name=f"threadensemble_{len(self._threads)}",
                daemon=True,  # see the module docstring
            )
            thread.start()
            self._threads.append(thread)
        return future

    def _work(self) -> None:
        """One worker thread: copy the state, then run realizations until told to end."""
        init_error = None
        if self.per_thread is not None:
            try:
                self.per_thread.initialize()
            except BaseException as exc:
                init_error = worker_init_error(exc)
                init_error.__cause__ = exc
        like = None  # the layout this thread found last: `layout_of` takes previews from it
        while (task := self._tasks.get()) is not None:
            future, index = task
            if not future.set_running_or_notify_cancel():
                continue
            if init_error is not None:
                future.set_exception(init_error)
            else:
                try:
                    computed = compute(self.config, self.per_thread, self.cancel, index, like)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    like = computed.layout
                    future.set_result(computed)
                    del computed
            self._finished.put(future)
            del future, task  # keep no finished realization alive while waiting

    def wait(
        self, futures: Collection[Future[Computed]], timeout: float
    ) -> Collection[Future[Computed]]:
        # Every finished future is one of ``futures``: the loop collects each once.
        try:
            done = [self._finished.get(timeout=timeout)]
        except queue.Empty:
            return ()
        while not self._finished.empty():
            done.append(self._finished.get())  # only the calling thread takes from the queue
        return done

    def result(self, future: Future[Computed]) -> Computed:
        return future.result()

    def shutdown(self, running: Collection[Future[Computed]], cancel: bool) -> None:
        if cancel:
            # Tell running realizations (cancelled() turns True), cancel what has not started,
            # and wait for them: their results are discarded.
            self.cancel.set()
            for future in running:
                future.cancel()
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join()  # a second Ctrl-C interrupts this; the threads are daemons
