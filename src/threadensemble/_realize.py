"""The per-realization path, shared by every backend: `realize`, `warm_up`, and what they return.

Layer: below the engine (`_engine`), the backends (`_threads`, `_processes`, `_distributed`)
and the check (`_check`), which all import it; it imports only the run configuration and the
helpers a realization uses (seed streams, its context, output normalisation), never a backend.
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar

import xarray as xr

from ._config import RunConfig
from ._context import CancelFlag, realization_context
from ._encoding import netcdf_ready
from ._netcdf import realization_path, write_temporary
from ._results import Layout, layout_of, to_dataset
from ._rng import named_seed_sequence, realization_streams
from ._routing import applied_routes
from ._state import PerThreadState, check_private_state

__all__ = [
    "Backend",
    "Computed",
    "Outcome",
    "Written",
    "compute",
    "realize",
    "realize_and_write",
    "warm_up",
]


def warm_up(config: RunConfig) -> None:
    """Run the warm-up on the master state in the calling thread, before any copy is made.

    Then check the ``private_state`` patterns against the warmed-up state (`check_private_state`).
    """
    warm = config.simulate if config.warmup is True else config.warmup
    assert callable(warm)
    seq = named_seed_sequence(config.seeds.fresh(0), "threadensemble.warmup")
    with realization_streams(seq):
        warm(*config.args, **config.call_kwargs(config.state))
    if config.share_state:
        check_private_state(config.state, config.share_state)


def realize(
    config: RunConfig, per_thread: PerThreadState | None, cancel: CancelFlag, index: int
) -> xr.Dataset:
    """Compute realization ``index`` in a worker thread, with the attributes of its file.

    The Dataset is a new one (its variables too, not their data), even if ``simulate``
    returns one it changes again in its next realization.  Takes no lock.
    """
    if cancel.is_set():
        raise CancelledError
    kwargs = config.call_kwargs(per_thread.get() if per_thread is not None else None)
    seeds = config.seeds.fresh(index)  # this attempt's own: spawn() inside is repeatable
    with realization_streams(seeds), realization_context(index, cancel):
        try:
            output = config.simulate(*config.args, **kwargs)
        except ValueError as exc:
            if per_thread is not None and (named := per_thread.shared_write_error(exc)):
                raise named from exc
            raise
    return to_dataset(output).assign_attrs(config.file_attrs(index))


@dataclass(frozen=True)
class Computed:
    """A realization computed in memory, with its layout, which the worker that computed it found.

    ``dataset`` is `realize`'s (with the attributes of its file); with an output_dir, what
    `netcdf_ready` made of it.  The completion loop checks the layout against the run's
    template; that check is a comparison, the layout's hashing and formatting are done by the
    workers.
    """

    dataset: xr.Dataset
    layout: Layout


@dataclass(frozen=True)
class Written:
    """A realization that a worker wrote, complete, to a temporary file in the output directory.

    The completion loop checks its layout, then commits the file under its final name (or
    discards it), so that a realization file exists only once the run has accepted it.
    """

    temporary_name: str
    layout: Layout


Outcome: TypeAlias = "Computed | Written"


def compute(
    config: RunConfig,
    per_thread: PerThreadState | None,
    cancel: CancelFlag,
    index: int,
    like: Layout | None = None,
) -> Computed:
    """Compute realization ``index`` in a worker thread, with its layout; for the calling thread.

    ``like`` is a layout this worker found before (`layout_of` takes previews from it).  With
    an output_dir, the dataset is made ready for netCDF here (`UnstorableOutputError` stops
    the run); the calling thread writes it.  Takes no lock.
    """
    ds = realize(config, per_thread, cancel, index)
    if config.output_dir is not None:  # before a file is opened: names what netCDF4 cannot store
        ds = netcdf_ready(ds)
    return Computed(ds, layout_of(ds, config.ragged, like))


def realize_and_write(
    config: RunConfig,
    per_thread: PerThreadState | None,
    cancel: CancelFlag,
    index: int,
    like: Layout | None = None,
) -> Outcome:
    """Compute realization ``index`` in a worker process; with an output_dir, write it there.

    For the backends whose workers are other processes (``_processes``, ``_distributed``):
    the file is written completely under a temporary name and a `Written` returned, which
    the calling process's completion loop commits or discards.  The routes that were active
    when the run started (`route_rng`) are applied around the realization, as in the calling
    process.  ``like``: as for `compute`.
    """
    with applied_routes(config.routes):
        computed = compute(config, per_thread, cancel, index, like)
    if config.output_dir is None:
        return computed
    if cancel.is_set():
        raise CancelledError  # the run has stopped: nobody would commit the file
    path = realization_path(config.output_dir, index)
    return Written(write_temporary(computed.dataset, path).name, computed.layout)


FutureT = TypeVar("FutureT")


class Backend(Protocol[FutureT]):
    """Where realizations run; `_Run.execute`, in the calling thread, drives any backend.

    The futures of ``submit`` need only be hashable and given back to ``wait`` and ``result``.
    """

    def describe(self) -> str:
        """Say who computes, for the progress bar (``4 workers, GIL off``)."""
        ...

    def capacity(self) -> int:
        """Return how many worker threads (or processes) compute now."""
        ...

    def per_task(self) -> int:
        """Return how many realizations one task holds now (the loop keeps two tasks a worker)."""
        ...

    def worker_cpu_seconds(self) -> float | None:
        """Return the CPU time of worker processes so far, for the run's report.

        0.0 when the workers are threads of this process (their time is its own); None when
        it is not known (dask).
        """
        ...

    def submit(self, index: int) -> FutureT:
        """Start computing realization ``index``."""
        ...

    def wait(self, futures: Collection[FutureT], timeout: float) -> Collection[FutureT]:
        """Return the finished ``futures``, waiting for one at most ``timeout`` seconds."""
        ...

    def result(self, future: FutureT) -> Outcome:
        """Return a finished realization, or raise its exception (WorkerInitError: stop)."""
        ...

    def shutdown(self, running: Collection[FutureT], cancel: bool) -> None:
        """Release the workers; with ``cancel``, cancel ``running`` and tell the realizations."""
        ...
