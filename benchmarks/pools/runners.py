"""The runners `benchmarks.pools` compares, and one timed run of one of them.

Each runner computes realizations ``0 .. n-1`` of an example with one seed and returns the
ensemble Dataset; the timed span starts once the model is built in the calling process (and
xarray warmed up there, see `Job`) and ends with the ensemble assembled there (so it includes
starting worker processes, moving the model and the results, and assembling).  One run per
process::

    python -m benchmarks.pools.runners fire "mp.Pool fork" --workers 2 --realizations 32 \
        --params '{"rows": 120}'

prints one JSON line: wall time, how the model reached the workers, a fingerprint of the
ensemble, and whether the GIL was enabled.
"""

from __future__ import annotations

import argparse
import copy
import gc
import hashlib
import io
import json
import math
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from importlib import import_module
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import cloudpickle
import numpy as np
import xarray as xr

import threadensemble as te
from benchmarks.pools.workers import (
    Inherited,
    Payload,
    Pickled,
    Rebuilt,
    initialize,
    mpire_init,
    mpire_realization,
    realization,
    realization_from,
    realization_in_thread,
    realization_in_worker,
    share_arrays,
    thread_state,
)

__all__ = ["OPTIONAL", "RUNNERS", "THREAD_RUNNERS", "Unavailable", "fingerprint", "main"]

SHARED_MIN_BYTES = 1 << 20  # arrays from 1 MB go to shared memory (joblib's memmap threshold)

Runner = Callable[["Job"], tuple[xr.Dataset, str]]


class Job:
    """One ensemble to compute: the example, its parameters and model, the run's size."""

    def __init__(self, example: str, params: dict[str, Any], n: int, workers: int, seed: int):
        self.example, self.params = example, params
        self.n, self.workers, self.seed = n, workers, seed
        factory = import_module(f"threadensemble.examples.{example}").build
        self.spec: te.ModelSpec = factory(**params)
        self._pickles: dict[str, bool] = {}
        # As in any script that has built a model: xarray's lazy imports done (its first
        # Dataset imports dask.array, 0.3 s) and the build's garbage collected.  Worker
        # processes start from scratch, as they do in real runs.
        xr.Dataset({"v": ("d", np.zeros(1))}, coords={"d": [0]})
        gc.collect()

    def pickles(self, pickler: str) -> bool:
        """Whether ``"pickle"`` or ``"cloudpickle"`` can take the model.

        Ask before timing: the first answer walks the whole model.
        """
        if pickler not in self._pickles:
            dump = {"pickle": pickle.dump, "cloudpickle": cloudpickle.dump}[pickler]
            self._pickles[pickler] = _pickles(dump, self.spec)
        return self._pickles[pickler]

    @property
    def chunksize(self) -> int:
        """Realizations per task: `multiprocessing.Pool.map`'s default, for every pool."""
        return max(1, math.ceil(self.n / (4 * self.workers)))

    def rebuilt(self) -> Rebuilt:
        """Return the payload that makes each worker build the model itself."""
        return Rebuilt(self.example, tuple(sorted(self.params.items())))

    def ensemble(self, datasets: Sequence[xr.Dataset]) -> xr.Dataset:
        """Assemble realizations ``0 .. n-1`` as a user of xarray would: pad, concatenate.

        With the options threadensemble documents (ragged dimensions padded at the end with
        missing values, realizations along a new leading dimension with its coordinate), so
        that every runner's ensemble can be compared with the serial loop's.
        """
        longest = {d: max(ds.sizes.get(d, 0) for ds in datasets) for d in self.spec.ragged}
        padded = []
        for ds in datasets:
            short = {d: (0, n - ds.sizes[d]) for d, n in longest.items() if ds.sizes.get(d, n) < n}
            padded.append(ds.pad(short) if short else ds)
        ensemble = xr.concat(
            padded, dim="realization", data_vars="all", coords="minimal", compat="equals",
            join="exact", combine_attrs="drop_conflicts",
        )  # fmt: skip
        return ensemble.assign_coords(realization=np.arange(len(datasets)))


class _Discard(io.RawIOBase):
    """A file that forgets what is written to it: probing a pickler costs no memory."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def _pickles(dump: Callable[[Any, Any], None], spec: te.ModelSpec) -> bool:
    try:
        dump(spec, _Discard())
    except Exception:  # each pickler fails in its own way on what it cannot handle
        return False
    return True


def run_serial(job: Job) -> tuple[xr.Dataset, str]:
    """A plain loop in this process."""
    state = copy.deepcopy(job.spec.state)
    return job.ensemble([realization(job.spec, state, job.seed, k) for k in range(job.n)]), ""


def run_threads(job: Job) -> tuple[xr.Dataset, str]:
    """threadensemble: the model shared by the worker threads as it is."""
    ens = job.spec.run(job.n, n_workers=job.workers, seed=job.seed, progress=False)
    return ens, "shared (threads)"


class Unavailable(Exception):
    """This runner cannot run this model (the report says why)."""


def run_te_processes(job: Job) -> tuple[xr.Dataset, str]:
    """threadensemble, backend="processes": forkserver workers, model pickled once per worker."""
    if not job.pickles("cloudpickle"):
        raise Unavailable("the model does not pickle (it has no rebuild-per-worker option)")
    ens = job.spec.run(
        job.n, n_workers=job.workers, seed=job.seed, progress=False, backend="processes"
    )
    # Where memory files exist, arrays of a MiB or more travel in one, mapped by every worker.
    shared = " (arrays >= 1 MiB: one shared memory file)" if hasattr(os, "memfd_create") else ""
    return ens, f"pickled once per worker{shared}"


def run_thread_pool(job: Job) -> tuple[xr.Dataset, str]:
    """A hand-rolled `ThreadPoolExecutor`, each thread's state copied by its initializer.

    The design threadensemble implements, without the library: its own overhead is the gap.
    """
    initializer = partial(thread_state, job.spec)
    with ThreadPoolExecutor(job.workers, initializer=initializer) as pool:
        task = partial(realization_in_thread, job.spec, job.seed)
        datasets = list(pool.map(task, range(job.n)))
    return job.ensemble(datasets), "shared (threads)"


def _payload(job: Job, pickler: str) -> tuple[Payload, list[SharedMemory], str]:
    """The model for spawned workers: large arrays in shared memory, or rebuilt per worker."""
    if job.pickles(pickler):
        payload, blocks = share_arrays(job.spec, SHARED_MIN_BYTES)
        return payload, blocks, "shared memory" if blocks else "pickled once per worker"
    return job.rebuilt(), [], "rebuilt per worker"


def _run_pool(job: Job, method: str, payload: Payload) -> list[xr.Dataset]:
    context = multiprocessing.get_context(method)
    with context.Pool(job.workers, initializer=initialize, initargs=(payload,)) as pool:
        task = partial(realization_in_worker, job.seed)
        return pool.map(task, range(job.n), chunksize=job.chunksize)


def run_fork_pool(job: Job) -> tuple[xr.Dataset, str]:
    """`multiprocessing.Pool` (fork): the workers inherit the model, copy the state once."""
    return job.ensemble(_run_pool(job, "fork", Inherited(job.spec))), "inherited (fork)"


def run_spawn_pool(job: Job) -> tuple[xr.Dataset, str]:
    """`multiprocessing.Pool` (spawn), model loaded by the initializer, large arrays shared."""
    payload, blocks, transfer = _payload(job, "pickle")
    try:
        datasets = _run_pool(job, "spawn", payload)
    finally:
        for block in blocks:
            block.close()
            block.unlink()
    return job.ensemble(datasets), transfer


def run_executor(job: Job) -> tuple[xr.Dataset, str]:
    """`ProcessPoolExecutor` (spawn): the model pickled once per worker, for its initializer."""
    context = multiprocessing.get_context("spawn")
    if job.pickles("pickle"):
        payload: Payload = Pickled(job.spec)
        transfer = "pickled once per worker"
    else:
        payload, transfer = job.rebuilt(), "rebuilt per worker"
    with ProcessPoolExecutor(
        job.workers, mp_context=context, initializer=initialize, initargs=(payload,)
    ) as executor:
        task = partial(realization_in_worker, job.seed)
        datasets = list(executor.map(task, range(job.n), chunksize=job.chunksize))
    return job.ensemble(datasets), transfer


def run_joblib_threads(job: Job) -> tuple[xr.Dataset, str]:
    """joblib, threading backend: each thread copies the state on its first realization."""
    import joblib

    parallel = joblib.Parallel(n_jobs=job.workers, backend="threading", batch_size=job.chunksize)
    datasets = parallel(
        joblib.delayed(realization_in_thread)(job.spec, job.seed, k) for k in range(job.n)
    )
    return job.ensemble(datasets), "shared (threads)"


def run_joblib(job: Job) -> tuple[xr.Dataset, str]:
    """joblib, loky backend: cloudpickle per batch (large arrays memmapped), or rebuilt."""
    import joblib

    if job.pickles("cloudpickle"):
        payload: Payload = Pickled(job.spec)
        transfer = "cloudpickled per task (arrays >= 1 MB memmapped)"
    else:
        payload, transfer = job.rebuilt(), "rebuilt per worker"
    parallel = joblib.Parallel(n_jobs=job.workers, backend="loky", batch_size=job.chunksize)
    datasets = parallel(
        joblib.delayed(realization_from)(payload, job.seed, k) for k in range(job.n)
    )
    return job.ensemble(datasets), transfer


def _run_mpire(job: Job, method: str) -> list[xr.Dataset]:
    from mpire import WorkerPool  # only in the benchmark environment (see noxfile.py)

    shared = (job.spec, job.seed)  # fork: inherited; threading: shared as it is
    with WorkerPool(
        job.workers, shared_objects=shared, use_worker_state=True, start_method=method
    ) as pool:
        datasets: list[xr.Dataset] = pool.map(
            mpire_realization, range(job.n), worker_init=mpire_init, chunk_size=job.chunksize
        )
    return datasets


def run_mpire_threads(job: Job) -> tuple[xr.Dataset, str]:
    """mpire, threading start method, the state copied once per worker (worker state)."""
    return job.ensemble(_run_mpire(job, "threading")), "shared (threads)"


def run_mpire_fork(job: Job) -> tuple[xr.Dataset, str]:
    """mpire, fork start method: the model inherited, the state copied once per worker."""
    return job.ensemble(_run_mpire(job, "fork")), "inherited (fork)"


RUNNERS: dict[str, Runner] = {
    "serial": run_serial,
    "threadensemble": run_threads,
    "threadensemble processes": run_te_processes,
    "ThreadPoolExecutor + local copy": run_thread_pool,
    "joblib threads": run_joblib_threads,
    "mpire threading": run_mpire_threads,
    "mp.Pool fork": run_fork_pool,
    "mp.Pool spawn": run_spawn_pool,
    "ProcessPoolExecutor": run_executor,
    "joblib loky": run_joblib,
    "mpire fork": run_mpire_fork,
}
"""Name -> runner, in the order of the report."""

THREAD_RUNNERS = ("threadensemble", "ThreadPoolExecutor + local copy", "joblib threads",
                  "mpire threading")  # fmt: skip
"""The runners whose workers are threads of one process."""

OPTIONAL = {
    "joblib threads": "joblib",
    "joblib loky": "joblib",
    "mpire threading": "mpire",
    "mpire fork": "mpire",
}
"""Runner -> the module it needs that may not be installed (the report says it was skipped)."""

PICKLER_OF = {
    "threadensemble processes": "cloudpickle",
    "mp.Pool spawn": "pickle",
    "ProcessPoolExecutor": "pickle",
    "joblib loky": "cloudpickle",
}
"""The pickler each spawning runner sends the model with."""


def fingerprint(ens: xr.Dataset) -> str:
    """Return a hash of the values, dims and dtypes of every variable (not the attributes)."""
    digest = hashlib.sha256()
    for name in sorted(map(str, ens.variables)):
        var = ens[name].variable
        digest.update(f"{name}{var.dims}{var.dtype.str}".encode())
        values = var.values
        digest.update(
            repr(values.tolist()).encode() if values.dtype.hasobject else values.tobytes()
        )
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pools.runners")
    parser.add_argument("example")
    parser.add_argument("runner", choices=list(RUNNERS))
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--realizations", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--params", type=json.loads, default={})
    args = parser.parse_args(argv)
    job = Job(args.example, args.params, args.realizations, args.workers, args.seed)
    if args.runner in PICKLER_OF:  # decided before timing, and only where needed
        job.pickles(PICKLER_OF[args.runner])
    start = time.perf_counter()
    try:
        ens, transfer = RUNNERS[args.runner](job)
    except Unavailable as exc:
        print(json.dumps({"unavailable": str(exc)}))
        return
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "transfer": transfer,
        "fingerprint": fingerprint(ens),
        "gil_enabled": te.gil_enabled(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
