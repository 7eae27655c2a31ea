"""`simulate_ensemble`: realizations on a backend, completed in the calling thread.

A backend (`threadensemble._realize.Backend`) runs realizations: the local thread pool
(`threadensemble._threads.ThreadBackend`), or a dask cluster
(`threadensemble._distributed.DaskBackend`, with ``client=``).  Workers only simulate.  Each
worker thread holds its own deep copy of the state and per-realization RNG streams, so the
simulation path takes no lock.  Everything shared by the run (progress bar, result collection,
the layout check, NetCDF writing or committing, the manifest, retries) lives in the calling
thread's one completion loop (`_Run.execute`), whatever the backend, so it needs no lock either,
except netCDF calls, which hold the process-wide `netcdf_lock`.  At most twice as many
realizations as there are worker threads are submitted and not yet collected at any time:
memory stays bounded and cancellation is quick.  Ctrl-C is taken between the loop's steps
(`threadensemble._interrupt`), never in the middle of writing or recording a realization.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from contextlib import nullcontext
from typing import Any, Unpack

import xarray as xr

from ._config import RunConfig, RunOptions, make_config, with_recorded_seed
from ._errors import EnsembleError, OutputWriteError, UnstorableOutputError, WorkerInitError
from ._interrupt import deferred_keyboard_interrupt
from ._model import Model, ModelParts, as_model
from ._progress import progress_bar
from ._realize import Backend, Written, warm_up
from ._report import RunClock, RunReport, record_report, warn_if_serialized
from ._results import Layout, assemble, check_layout
from ._runtime import warn_if_gil_reenabled
from ._shared import read_only_arrays
from ._store import EnsembleStore, open_realizations
from ._threads import ThreadBackend
from ._verify import verify_resumed

__all__ = ["EnsembleKeywords", "simulate_ensemble"]


class EnsembleKeywords(ModelParts, RunOptions, total=False):
    """The keywords of `simulate_ensemble`: the model's parts and the run options.

    The parts (`ModelParts`) only when the model is given as ``simulate``, not as a `ModelSpec`;
    the run options are `RunOptions`.
    """


def simulate_ensemble(
    model: Model | Callable[..., Any],
    n_realizations: int,
    **options: Unpack[EnsembleKeywords],
) -> xr.Dataset:
    """Run ``n_realizations`` realizations of a model on threads; return the ensemble.

    Realization ``k`` calls ``simulate(*args, **kwargs, **{inject: state_copy})`` in a worker
    thread, with `get_rng` seeded for ``k``.  ``args`` and ``kwargs`` are shared by all threads
    as they are (never copied, never pickled, and never to be written to); ``state`` is
    deep-copied once per worker thread, and that copy is the one each realization on that thread
    receives.

    The model is either a `ModelSpec` (``simulate_ensemble(spec, n, seed=1)``, as
    ``spec.run(n, seed=1)``), which holds ``simulate``, ``args``, ``kwargs``, ``state``,
    ``inject``, ``ragged`` and ``warmup``, or ``simulate`` itself with those parts as keywords
    (`ModelParts`); both give the same ensemble.  A `ModelSpec` together with one of those
    keywords is a TypeError.  The other keywords are the run options (`RunOptions`).

    Parameters
    ----------
    model : ModelSpec or callable
        The model, or ``simulate``: computes one realization.  Returns an `xarray.Dataset`, an
        `xarray.DataArray` or a dict of arrays; every realization must have the same variables,
        dims, shapes and dtypes.
    n_realizations : int
        Number of realizations, ``>= 1``.  Realizations are numbered ``0 .. n_realizations-1``.
        With ``output_dir`` it is not part of the run's identity: a larger number extends the
        ensemble there (only the new realizations are computed), a smaller one returns the
        first ``n_realizations`` (computing those that are missing).
    args : sequence, optional
        Shared read-only positional arguments (the expensive model).  This and ``kwargs``,
        ``state``, ``inject``, ``ragged`` and ``warmup`` are the model's parts: keywords only
        when ``model`` is ``simulate``, else the `ModelSpec`'s fields.
    kwargs : mapping, optional
        Shared read-only keyword arguments.
    state : object, optional
        Mutable state; each worker thread gets its own ``copy.deepcopy`` of it (sharing its
        large arrays with ``share_state``).
    inject : str, optional
        Keyword under which ``simulate`` receives its thread's copy of ``state``.  Required
        with ``state``.
    n_workers : int, optional
        Worker threads, or worker processes with ``backend="processes"`` (default: the CPUs
        this process may use).  ``1`` runs the same code path with one worker.
    seed : int, sequence of int or numpy.random.SeedSequence, optional
        Run seed.  Realization ``k`` gets ``SeedSequence(seed, spawn_key=(k,))``, so its
        numbers depend on ``seed`` and ``k`` only.  None draws fresh entropy (recorded in the
        output files and manifest, and reused when an interrupted run is resumed).
    seed_for : callable, optional
        A seed scheme instead of ``seed``: ``seed_for(k)`` is realization ``k``'s seed.
    output_dir : str or path-like, optional
        Write realization ``k`` to ``output_dir/real_0000k.nc`` (atomically) and a manifest.
        Realizations already there from the same run identity are not computed again.  The
        identity is a content fingerprint of ``simulate`` (its compiled code, closure and
        defaults, and the functions, classes and module-level values of your own modules that
        it uses; installed packages by version), ``args``, ``kwargs``, ``state``, ``seed_for``
        and ``warmup``, plus the seed, ``inject`` and ``ragged``; a directory of another
        identity is refused before anything is computed, naming what changed (``args[0]: 1.0
        there, 1000.0 here``).  Before it resumes, a run also recomputes the lowest realization
        there and compares it bitwise with its file (a change the fingerprint cannot see is
        refused too).  The library version is recorded, not compared.  Without it, results are
        kept in memory (and no fingerprint is computed).
    overwrite : bool, default False
        Replace the realization files and manifest of another run in ``output_dir`` (files
        that are not threadensemble's are never touched).
    ragged : tuple or list of str, optional
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
        ``lazy=True``) instead of loading it into memory: the way to run an ensemble larger
        than memory to disk and get it back without loading it.
    progress : bool, default True
        Show a progress bar (with worker count and whether the GIL is enabled).
    fail_fast : bool, default False
        Stop at the first failed realization instead of finishing the others first.
    retries : int, default 0
        Run a failed realization again up to this many times (with the same seed).
    client : distributed.Client, optional
        Run the realizations on this dask cluster instead of local threads (needs the ``dask``
        extra).  ``simulate``, ``args``, ``kwargs`` and ``state`` must then be picklable (see
        `check_picklable`); they are sent to each worker process once, and each worker thread
        deep-copies the state on first use.  Realizations are bitwise identical to local
        threads.  ``output_dir`` must be on a filesystem shared by the workers and this process,
        at the same path: workers write the files, this process commits and records them.
        ``n_workers`` must not be given: the cluster's threads are the workers.
    share_state : bool, default False
        Let the threads' copies of ``state`` share its large numpy arrays (64 KiB and more,
        without Python objects inside) instead of copying them: for a fitted model whose
        ``simulate`` only reads its fitted arrays, each thread then copies only the objects
        around them and the small arrays.  The shared arrays are read-only for the run (in
        the run's own copy: ``state`` is not touched), so a write into one raises
        `SharedStateWriteError`, naming its path, where it happens; it never reaches another
        thread.  Rebinding an attribute (``self.sim = ...``) works as without sharing.
        Results are bitwise identical.  `check` reports how much each thread copies.
    private_state : tuple or list of str, optional
        With ``share_state``, arrays to copy per thread all the same, by path as errors print
        it; ``*`` stands for any characters: ``["state.stations[*].buffer"]``, ``["*.buffer"]``.
        A pattern that matches no array of the state (after the warm-up, if any) is a
        ValueError.
    backend : {"threads", "processes"}, default "threads"
        Where realizations run without a client.  ``"threads"``: worker threads of this
        process, sharing ``args`` and ``kwargs`` as they are (parallel on a free-threaded
        build, and for models that release the GIL).  ``"processes"``: ``n_workers`` worker
        processes (started by ``forkserver``, or ``spawn`` where there is none; never forked),
        for pure-Python models on a standard (GIL) build.  The model is then pickled (see
        `check_picklable`), sent to each process once and copied there (its memory per
        worker), and each process deep-copies the state once; realizations are bitwise
        identical to threads', and failures, retries, resume, progress and Ctrl-C behave the
        same.  A script that uses it must start the run under ``if __name__ == "__main__":``
        (worker processes import the main module).
    run_id : str, optional
        With ``output_dir``: the name of this model's version, used as its identity instead of
        the content fingerprint (which is then not computed).  Needed when the model holds
        content that cannot be fingerprinted (an open file, an extension object that cannot
        be pickled): a TypeError names it.  A re-run with another ``run_id`` is refused;
        changing the model without changing ``run_id`` is your responsibility.

    Returns
    -------
    xarray.Dataset
        All realizations along a leading ``realization`` dimension, in index order.  With
        ``output_dir`` this is `open_ensemble` of that directory (lazy with ``lazy=True``).

    Raises
    ------
    TypeError, ValueError, OutputDirError
        Bad arguments (a bad model part, a `ModelSpec` and model keywords, an unknown keyword,
        an unpicklable model with ``client``, content that cannot be fingerprinted without
        ``run_id``, a directory of another run), before any thread starts or any file is
        touched.
    OutputDirError
        Also: another run is writing into ``output_dir`` (the message names its pid and host),
        or a realization file there that this run would replace is not threadensemble's;
        raised before anything is computed or removed.
    EnsembleError
        Some realizations failed; it lists each with its exception and traceback.  All the
        others were completed (and written, with ``output_dir``), except, with ``fail_fast``,
        those not started after the first failure (its ``not_run``).  A realization whose
        layout (variables, dims, shapes, dtypes, coordinate values) differs from the first
        accepted one, recorded in the manifest, is a failed realization.  So is one whose
        ``simulate`` raised ``SystemExit`` (or any other exception but KeyboardInterrupt,
        which stops the run).
    UnstorableOutputError
        With ``output_dir``: a realization holds what a netCDF4 file cannot (complex or
        float16 data, a None attribute, a name netCDF-C refuses, ...); the run stops before
        that realization is written.  The manifest records the error (``stopped``).
    OutputWriteError
        With ``output_dir``: a file could not be written (a full disk); the run stops, the
        files already written stay complete, and re-running the call resumes.  The manifest
        records the error (``stopped``).
    WorkerInitError
        A worker thread could not copy ``state``; a worker process could not unpickle the
        model or copy ``state``, or died.

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
    given = as_model(model, options, "simulate_ensemble", RunOptions.__optional_keys__)
    config = make_config(given, n_realizations, options)
    store = None
    if (directory := config.output_dir) is not None:
        if config.fresh_seed and not config.overwrite:  # seed=None resumes with the recorded seed
            recorded = EnsembleStore.recorded_seed(directory)
            config = config if recorded is None else with_recorded_seed(config, recorded)
        store = EnsembleStore.check(
            directory, config.identity, config.digest, config.overwrite, config.n_realizations
        )
    if config.client is None:  # on dask, the workers' interpreters compute
        warn_if_gil_reenabled()
    if store is not None:
        store.open(config.overwrite)  # locks the directory before anything is computed or removed
    try:
        with read_only_arrays(config.shared_roots()) if config.protect_shared else nullcontext():
            if config.warmup:
                warm_up(config)
            if store is not None:
                verify_resumed(config, store)  # the files must be what this model computes
            run = _Run(config, store)
            run.execute()
        with run.clock.writing():
            if store is not None:
                ensemble = open_realizations(store, config.n_realizations, lazy=config.lazy)
            else:
                ensemble = run.assemble()
        run.finish(stacklevel=2)
    finally:
        if store is not None:
            store.close()
    return ensemble


_POLL_S = 0.2  # longest wait for a realization before the loop looks for a Ctrl-C again


class _Run:
    """One execution of a run configuration: the completion loop's bookkeeping.

    All attributes are used by the calling thread only.
    """

    def __init__(self, config: RunConfig, store: EnsembleStore | None) -> None:
        self.config = config
        self.store = store
        self.results: dict[int, xr.Dataset] = {}
        self.completed: list[int] = []
        self.failures: dict[int, BaseException] = {}
        self.attempts: dict[int, int] = {}
        # Every realization is checked against this one: recorded by an earlier run, if any.
        self.template: tuple[int, Layout] | None = store.layout if store is not None else None
        self.clock = RunClock()
        self.backend: Backend[Any] | None = None
        self.bar: Any = None
        record_report(None)

    def _backend(self, n_todo: int) -> Backend[Any]:
        n_workers = min(self.config.n_workers, max(1, n_todo))
        if self.config.client is None and self.config.backend == "processes":
            from ._processes import ProcessBackend  # multiprocessing, only when asked for

            return ProcessBackend(self.config, n_workers)
        if self.config.client is None:
            return ThreadBackend(self.config, n_workers)
        from ._distributed import DaskBackend  # distributed is an optional dependency

        return DaskBackend(self.config, self.config.client)

    def execute(self) -> None:
        """Run every realization not yet done; raise EnsembleError listing any failures."""
        config = self.config
        done = set()
        if self.store is not None:  # an extended directory holds realizations beyond this run
            done = {k for k in self.store.completed if k < config.n_realizations}
        todo = deque(k for k in range(config.n_realizations) if k not in done)
        self.backend = backend = self._backend(len(todo))
        running: dict[Any, int] = {}  # future -> realization
        self.bar = bar = progress_bar(
            config.n_realizations, len(done), backend.describe(), config.progress
        )
        with deferred_keyboard_interrupt() as interrupt:
            try:
                while todo or running:
                    interrupt.check()
                    window = 2 * max(1, backend.capacity()) * backend.per_task()
                    while todo and len(running) < window and not self._stopping():
                        k = todo.popleft()
                        running[backend.submit(k)] = k
                    if not running:
                        break
                    for future in sorted(backend.wait(running, _POLL_S), key=running.__getitem__):
                        try:
                            interrupt.check()
                            k = running.pop(future)
                            failed = len(self.failures)
                            if self._collect(k, backend, future):
                                bar.update(1)
                            elif k not in self.failures:
                                todo.appendleft(k)  # retry
                            if len(self.failures) != failed:
                                bar.set_postfix(failed=len(self.failures), refresh=False)
                        finally:
                            # The tracebacks of realizations' exceptions, and of an interrupt,
                            # keep this frame alive, and a dask future keeps its result on the
                            # cluster while anything refers to it.
                            future = None
                interrupt.check()
            except BaseException:
                # KeyboardInterrupt, WorkerInitError or an error of ours: stop the workers.
                backend.shutdown(running, cancel=True)
                running.clear()  # see above: the traceback keeps this frame
                bar.close()
                raise
            finally:
                if self.store is not None:
                    self._flush_at_end()
        backend.shutdown((), cancel=False)
        if self.failures:
            self.finish(stacklevel=3)
            raise EnsembleError(self.failures, sorted(self.completed), list(todo)) from next(
                iter(self.failures.values())
            )

    def _flush_at_end(self) -> None:
        """Write the final manifest; if the run is failing already, do not hide why."""
        error = sys.exc_info()[1]
        if error is not None:
            self._store().mark_stopped(error)
        try:
            self._store().flush(force=True)
        except OutputWriteError:
            if error is None:
                raise  # (else the previous manifest stays: complete, only older)

    def finish(self, stacklevel: int) -> RunReport:
        """Report the run: on the progress bar, in the manifest, for `last_run_report`."""
        assert self.backend is not None, "execute has run"
        backend = "dask" if self.config.client is not None else self.config.backend
        report = self.clock.report(
            backend, self.backend.capacity(), len(self.completed), self.backend.worker_cpu_seconds()
        )
        self.bar.set_postfix_str(report.describe(), refresh=False)
        self.bar.close()
        if self.store is not None:
            self.store.run_report = report.to_dict()
            self.store.flush(force=True)
        record_report(report)
        warn_if_serialized(report, stacklevel + 1)
        return report

    def assemble(self) -> xr.Dataset:
        """Return the in-memory realizations as one ensemble."""
        # Each was checked against the template (`_collect`), which is the first's layout.
        return assemble(
            list(self.results.values()), list(self.results), self.config.ragged, checked_coords=True
        )

    def _stopping(self) -> bool:
        return self.config.fail_fast and bool(self.failures)

    def _collect(self, index: int, backend: Backend[Any], future: Any) -> bool:
        """Take one finished realization; return False when it failed (and may be retried).

        A realization that netCDF cannot store, or a file that cannot be written (a full disk),
        stops the run: every other realization would fail the same way.
        """
        try:
            outcome = backend.result(future)
        except WorkerInitError:
            raise  # a worker thread has no state copy: the whole run stops (see execute)
        except (UnstorableOutputError, OutputWriteError) as exc:  # raised by a worker
            raise _stopped_at(index, exc) from exc
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from simulate too: that realization failed
            attempt = self.attempts.get(index, 0) + 1
            self.attempts[index] = attempt
            if attempt <= self.config.retries and not isinstance(exc, CancelledError):
                return False
            self._fail(index, exc)
            return False
        finally:
            del future  # the failures' tracebacks keep this frame (see execute)
        layout = outcome.layout  # found by the worker
        if self.template is None:
            self.template = (index, layout)
            if self.store is not None:
                self.store.record_layout(index, layout)
        try:
            check_layout(layout, self.template[1], self.template[0])
        except ValueError as exc:
            if isinstance(outcome, Written):
                self._store().discard(outcome.temporary_name)
            self._fail(index, exc)
            return False
        try:
            with self.clock.writing():
                if isinstance(outcome, Written):
                    self._store().commit(index, outcome.temporary_name)  # a worker wrote the file
                elif self.store is not None:
                    self.store.write(index, outcome.dataset)  # this thread writes the file
                else:
                    self.results[index] = outcome.dataset
        except OutputWriteError as exc:
            raise _stopped_at(index, exc) from exc
        self.completed.append(index)
        return True

    def _store(self) -> EnsembleStore:
        assert self.store is not None, "workers write files only when there is an output_dir"
        return self.store

    def _fail(self, index: int, exc: BaseException) -> None:
        self.failures[index] = exc
        if self.store is not None:
            self.store.mark_failed(index, exc)


def _stopped_at(index: int, exc: UnstorableOutputError | OutputWriteError) -> Exception:
    """Return the error that stops a run at realization ``index`` (same type as ``exc``)."""
    return type(exc)(f"realization {index}: {exc}")
