"""`simulate_ensemble`: realizations on a thread pool, completed in the calling thread.

Workers only simulate.  Each holds its own deep copy of the state (made by the pool's
initializer) and per-realization RNG streams, so the simulation path takes no lock.  Everything
shared by the run (progress bar, result collection, NetCDF writing, the manifest) lives in the
calling thread's completion loop, so it needs no lock either, except netCDF calls, which hold
the process-wide `netcdf_lock`.  At most ``2 * n_workers`` realizations are submitted and not yet
collected at any time: memory stays bounded and cancellation is quick.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from concurrent.futures.thread import BrokenThreadPool
from contextlib import nullcontext
from typing import Any

import xarray as xr

from ._config import RunConfig, make_config
from ._context import realization_context
from ._errors import EnsembleError, WorkerInitError
from ._progress import progress_bar
from ._results import Layout, assemble, check_layout, layout_of, to_dataset
from ._rng import SeedLike, named_seed_sequence, realization_streams
from ._runtime import warn_if_gil_reenabled
from ._shared import read_only_arrays
from ._state import PerThreadState
from ._store import EnsembleStore, open_ensemble

__all__ = ["realize", "simulate_ensemble", "warm_up"]


def simulate_ensemble(
    simulate: Callable[..., Any],
    n_realizations: int,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    state: Any = None,
    inject: str | None = None,
    n_workers: int | None = None,
    seed: SeedLike = None,
    seed_for: Callable[[int], SeedLike] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    ragged: Sequence[str] = (),
    warmup: bool | Callable[..., Any] = False,
    protect_shared: bool = False,
    lazy: bool = False,
    progress: bool = True,
    fail_fast: bool = False,
    retries: int = 0,
) -> xr.Dataset:
    """Run ``n_realizations`` realizations of ``simulate`` on threads; return the ensemble.

    Realization ``k`` calls ``simulate(*args, **kwargs, **{inject: state_copy})`` in a worker
    thread, with `get_rng` seeded for ``k``.  ``args`` and ``kwargs`` are shared by all threads
    as they are (never copied, never pickled, and never to be written to); ``state`` is
    deep-copied once per worker thread, and that copy is the one each realization on that thread
    receives.

    Parameters
    ----------
    simulate : callable
        Computes one realization.  Returns an `xarray.Dataset`, an `xarray.DataArray` or a dict
        of arrays; every realization must have the same variables, dims, shapes and dtypes.
    n_realizations : int
        Number of realizations, ``>= 1``.  Realizations are numbered ``0 .. n_realizations-1``.
    args : sequence, optional
        Shared read-only positional arguments (the expensive model).
    kwargs : mapping, optional
        Shared read-only keyword arguments.
    state : object, optional
        Mutable state; each worker thread gets its own ``copy.deepcopy`` of it.
    inject : str, optional
        Keyword under which ``simulate`` receives its thread's copy of ``state``.  Required
        with ``state``.
    n_workers : int, optional
        Worker threads (default: the CPUs this process may use).  ``1`` runs the same code
        path with one worker.
    seed : int, sequence of int or numpy.random.SeedSequence, optional
        Run seed.  Realization ``k`` gets ``SeedSequence(seed, spawn_key=(k,))``, so its
        numbers depend on ``seed`` and ``k`` only.  None draws fresh entropy (recorded in the
        output files and manifest, and reused when an interrupted run is resumed).
    seed_for : callable, optional
        A seed scheme instead of ``seed``: ``seed_for(k)`` is realization ``k``'s seed.
    output_dir : str or path-like, optional
        Write realization ``k`` to ``output_dir/real_0000k.nc`` (atomically) and a manifest.
        Realizations already there from the same configuration are not computed again.
        Without it, results are kept in memory.
    overwrite : bool, default False
        Replace the realization files and manifest of another run in ``output_dir`` (files
        that are not threadensemble's are never touched).
    ragged : sequence of str, optional
        Dimensions whose length may differ between realizations (e.g. an event catalogue);
        shorter realizations are padded at the end with missing values in the ensemble.
    warmup : bool or callable, default False
        Run ``simulate`` once (True), or this callable with the same arguments, on the master
        copy of the state before the per-thread copies are made, with a random stream of its
        own, and discard the result.  For models whose first run after construction differs
        from later ones (lazy initialization that draws random numbers or fills caches):
        without it every thread's first realization differs and results depend on the worker
        count.  `check` detects such models.
    protect_shared : bool, default False
        Make every numpy array reachable from ``args`` and ``kwargs`` read-only for the run
        (flags restored afterwards), so an in-place write into shared data raises at the
        offending line instead of silently corrupting other realizations.
    lazy : bool, default False
        With ``output_dir``, return the ensemble opened lazily with dask (`open_ensemble` with
        ``lazy=True``) instead of loading it into memory.
    progress : bool, default True
        Show a progress bar (with worker count and whether the GIL is enabled).
    fail_fast : bool, default False
        Stop at the first failed realization instead of finishing the others first.
    retries : int, default 0
        Run a failed realization again up to this many times (with the same seed).

    Returns
    -------
    xarray.Dataset
        All realizations along a leading ``realization`` dimension, in index order.  With
        ``output_dir`` this is `open_ensemble` of that directory (lazy with ``lazy=True``).

    Raises
    ------
    TypeError, ValueError, OutputDirError
        Bad arguments, before any thread starts or any file is touched.
    EnsembleError
        Some realizations failed; it lists each with its exception and traceback.  All the
        others were completed (and written, with ``output_dir``).
    WorkerInitError
        A worker thread could not copy ``state``.

    Examples
    --------
    >>> import numpy as np, threadensemble as te
    >>> def simulate(scale, *, counter):
    ...     counter["calls"] += 1  # this thread's own copy: no lock needed
    ...     return {"x": scale * te.get_rng().standard_normal(4)}
    >>> ens = te.simulate_ensemble(simulate, 6, args=(2.0,), state={"calls": 0},
    ...                            inject="counter", n_workers=3, seed=1, progress=False)
    >>> ens["x"].shape
    (6, 4)
    """
    config = make_config(
        simulate,
        n_realizations,
        args=args,
        kwargs=kwargs,
        state=state,
        inject=inject,
        n_workers=n_workers,
        seed=seed,
        seed_for=seed_for,
        output_dir=output_dir,
        ragged=ragged,
        warmup=warmup,
        protect_shared=protect_shared,
        lazy=lazy,
        overwrite=overwrite,
        progress=progress,
        fail_fast=fail_fast,
        retries=retries,
    )
    store = None
    if config.output_dir is not None:
        store = EnsembleStore.check(config.output_dir, config.identity, config.digest, overwrite)
    warn_if_gil_reenabled()
    with read_only_arrays(config.shared_roots()) if config.protect_shared else nullcontext():
        if config.warmup:
            warm_up(config)
        if store is not None:
            store.open(overwrite)
        run = _Run(config, store)
        run.execute()
    if store is not None:
        return open_ensemble(store.output_dir, lazy=config.lazy)
    return run.assemble()


def warm_up(config: RunConfig) -> None:
    """Run the warm-up on the master state in the calling thread, before any copy is made."""
    warm = config.simulate if config.warmup is True else config.warmup
    assert callable(warm)
    seq = named_seed_sequence(config.seeds[0], "threadensemble.warmup")
    with realization_streams(seq):
        warm(*config.args, **config.call_kwargs(config.state))


def realize(
    config: RunConfig, per_thread: PerThreadState | None, cancel: threading.Event, index: int
) -> xr.Dataset:
    """Compute realization ``index`` in a worker thread.  Takes no lock."""
    if cancel.is_set():
        raise CancelledError
    kwargs = config.call_kwargs(per_thread.get() if per_thread is not None else None)
    with realization_streams(config.seeds[index]), realization_context(index, cancel):
        output = config.simulate(*config.args, **kwargs)
    return to_dataset(output).assign_attrs(config.file_attrs(index))


class _Run:
    """One execution of a run configuration: the pool, and the completion loop's bookkeeping.

    All attributes are used by the calling thread only.
    """

    def __init__(self, config: RunConfig, store: EnsembleStore | None) -> None:
        self.config = config
        self.store = store
        self.results: dict[int, xr.Dataset] = {}
        self.completed: list[int] = []
        self.failures: dict[int, BaseException] = {}
        self.attempts: dict[int, int] = {}
        self.template: tuple[int, Layout] | None = None
        self.cancel = threading.Event()
        self.per_thread = PerThreadState(config.state) if config.inject is not None else None

    def execute(self) -> None:
        """Run every realization not yet done; raise EnsembleError listing any failures."""
        config = self.config
        done = self.store.completed if self.store is not None else set()
        todo = deque(k for k in range(config.n_realizations) if k not in done)
        pool = ThreadPoolExecutor(
            max_workers=min(config.n_workers, max(1, len(todo))),
            thread_name_prefix="threadensemble",
            initializer=self.per_thread.initialize if self.per_thread else None,
        )
        window = 2 * config.n_workers
        running: dict[Future[xr.Dataset], int] = {}
        bar = progress_bar(config.n_realizations, len(done), config.n_workers, config.progress)
        try:
            while todo or running:
                while todo and len(running) < window and not self._stopping():
                    k = todo.popleft()
                    running[pool.submit(realize, config, self.per_thread, self.cancel, k)] = k
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=running.__getitem__):
                    k = running.pop(future)
                    if self._collect(k, future):
                        bar.update(1)
                    elif k not in self.failures:
                        todo.appendleft(k)  # retry
                    bar.set_postfix(failed=len(self.failures), refresh=False)
        except BrokenThreadPool:
            pool.shutdown(wait=True, cancel_futures=True)
            errors = self.per_thread.init_errors if self.per_thread is not None else []
            if not errors:
                raise
            raise WorkerInitError(
                f"a worker thread could not deep-copy the state: {type(errors[0]).__name__}: "
                f"{errors[0]}"
            ) from errors[0]
        except BaseException:
            # KeyboardInterrupt or an error of ours: cancel what has not started, tell running
            # realizations (cancelled() turns True), wait for them, and discard their results.
            self.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            bar.close()
            if self.store is not None:
                self.store.flush(force=True)
        pool.shutdown(wait=True)
        if self.failures:
            raise EnsembleError(self.failures, sorted(self.completed)) from next(
                iter(self.failures.values())
            )

    def assemble(self) -> xr.Dataset:
        """Return the in-memory realizations as one ensemble."""
        return assemble(list(self.results.values()), list(self.results), self.config.ragged)

    def _stopping(self) -> bool:
        return self.config.fail_fast and bool(self.failures)

    def _collect(self, index: int, future: Future[xr.Dataset]) -> bool:
        """Take one finished realization; return False when it failed (and may be retried)."""
        try:
            ds = future.result()
        except BrokenThreadPool:
            raise  # a worker's initializer failed: the whole run stops (see execute)
        except Exception as exc:
            attempt = self.attempts.get(index, 0) + 1
            self.attempts[index] = attempt
            if attempt <= self.config.retries and not isinstance(exc, CancelledError):
                return False
            self._fail(index, exc)
            return False
        layout = layout_of(ds, self.config.ragged)
        if self.template is None:
            self.template = (index, layout)
        try:
            check_layout(layout, self.template[1], self.template[0])
        except ValueError as exc:
            self._fail(index, exc)
            return False
        if self.store is not None:
            self.store.write(index, ds)
        else:
            self.results[index] = ds
        self.completed.append(index)
        return True

    def _fail(self, index: int, exc: BaseException) -> None:
        self.failures[index] = exc
        if self.store is not None:
            self.store.mark_failed(index, exc)
