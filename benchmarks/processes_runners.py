"""The runners `benchmarks.processes` compares, and one timed run of one of them.

Each runner computes realizations ``0 .. n-1`` of an example with one seed and returns the
ensemble Dataset; the timed span starts once the model is built in the calling process (and
xarray warmed up there, see `Job`) and ends with the ensemble assembled there (so it includes
starting worker processes, moving the model and the results, and assembling).  One run per
process::

    python -m benchmarks.processes_runners fire pool --workers 2 --realizations 32 \
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
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from importlib import import_module
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import cloudpickle
import joblib
import numpy as np
import xarray as xr

import threadensemble as te
from benchmarks.processes_workers import (
    Payload,
    Pickled,
    Rebuilt,
    initialize,
    realization,
    realization_from,
    realization_in_worker,
    share_arrays,
)
from threadensemble._results import assemble

__all__ = ["RUNNERS", "fingerprint", "main"]

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
        """Assemble realizations ``0 .. n-1`` as threadensemble does."""
        return assemble(datasets, list(range(self.n)), self.spec.ragged)


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


def run_pool(job: Job) -> tuple[xr.Dataset, str]:
    """`multiprocessing.Pool` (spawn), model loaded by the initializer, large arrays shared."""
    blocks: list[SharedMemory] = []
    if job.pickles("pickle"):
        payload: Payload
        payload, blocks = share_arrays(job.spec, SHARED_MIN_BYTES)
        transfer = "shared memory" if blocks else "pickled once per worker"
    else:
        payload, transfer = job.rebuilt(), "rebuilt per worker"
    context = multiprocessing.get_context("spawn")
    try:
        with context.Pool(job.workers, initializer=initialize, initargs=(payload,)) as pool:
            task = partial(realization_in_worker, job.seed)
            datasets = pool.map(task, range(job.n), chunksize=job.chunksize)
    finally:
        for block in blocks:
            block.close()
            block.unlink()
    return job.ensemble(datasets), transfer


def run_executor(job: Job) -> tuple[xr.Dataset, str]:
    """`ProcessPoolExecutor` (spawn): the model pickled with every task, or rebuilt per worker."""
    context = multiprocessing.get_context("spawn")
    if job.pickles("pickle"):
        executor = ProcessPoolExecutor(job.workers, mp_context=context)
        task = partial(realization_from, Pickled(job.spec), job.seed)
        transfer = "pickled per task"
    else:
        executor = ProcessPoolExecutor(
            job.workers, mp_context=context, initializer=initialize, initargs=(job.rebuilt(),)
        )
        task, transfer = partial(realization_in_worker, job.seed), "rebuilt per worker"
    with executor:  # map pickles the task (model included) once per chunk of realizations
        datasets = list(executor.map(task, range(job.n), chunksize=job.chunksize))
    return job.ensemble(datasets), transfer


def run_joblib(job: Job) -> tuple[xr.Dataset, str]:
    """joblib, loky backend: cloudpickle per batch (large arrays memmapped), or rebuilt."""
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


RUNNERS: dict[str, Runner] = {
    "serial": run_serial,
    "threadensemble": run_threads,
    "mp.Pool": run_pool,
    "ProcessPoolExecutor": run_executor,
    "joblib/loky": run_joblib,
}
"""Name -> runner, in the order of the report."""

PICKLER_OF = {"mp.Pool": "pickle", "ProcessPoolExecutor": "pickle", "joblib/loky": "cloudpickle"}
"""The pickler each process-based runner sends the model with."""


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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes_runners")
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
    ens, transfer = RUNNERS[args.runner](job)
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
