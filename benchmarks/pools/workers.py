"""What runs in the workers of `benchmarks.pools`: getting the model, computing.

A process cannot share the parent's model: it gets a *payload* and loads the model from it.

- `Pickled`: the model itself, pickled by the executor (once per worker when passed to an
  initializer, once per task when passed with each task).
- `Rebuilt`: the example's name and factory parameters; the worker builds the model itself,
  once per process (for models that cannot be pickled).
- `Shared`: the model pickled with its large arrays moved into `multiprocessing.shared_memory`
  blocks; the worker maps them (zero copies, like threads, but only for plain arrays).

- `Inherited`: the model itself, inherited by forked workers (nothing pickled).

Threads share the model as it is and keep a deep copy of the state each (`thread_state`), as
threadensemble's threads do.  Realization ``k`` is seeded exactly as
`threadensemble.simulate_ensemble` seeds it (`threadensemble.realization_seed`), so every
runner computes bit-identical realizations.
"""

from __future__ import annotations

import copy
import functools
import io
import pickle
import threading
from dataclasses import dataclass
from importlib import import_module
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import xarray as xr

import threadensemble as te

__all__ = [
    "Inherited",
    "Payload",
    "Pickled",
    "Rebuilt",
    "Shared",
    "initialize",
    "mpire_init",
    "mpire_realization",
    "realization",
    "realization_from",
    "realization_in_thread",
    "realization_in_worker",
    "share_arrays",
    "thread_state",
]


def realization(spec: te.ModelSpec, state: Any, seed: int, k: int) -> xr.Dataset:
    """Compute realization ``k`` of ``spec`` with ``state``, seeded as threadensemble does.

    The examples return Datasets, as every runner must (each assembles them the same way).
    """
    kwargs = dict(spec.kwargs)
    if spec.inject is not None:
        kwargs[spec.inject] = state
    te.reseed(te.realization_seed(seed, k))
    ds: xr.Dataset = spec.simulate(*spec.args, **kwargs)
    return ds


_local = threading.local()  # a thread's own copy of the state (threads runners)


def thread_state(spec: te.ModelSpec) -> Any:
    """Return the calling thread's deep copy of ``spec.state``, made on its first call."""
    if not hasattr(_local, "state"):
        _local.state = copy.deepcopy(spec.state)
    return _local.state


def realization_in_thread(spec: te.ModelSpec, seed: int, k: int) -> xr.Dataset:
    """Compute realization ``k`` in a worker thread, with that thread's state copy."""
    return realization(spec, thread_state(spec), seed, k)


@dataclass(frozen=True)
class Pickled:
    """The model itself: whatever pickles the payload pickles the model."""

    spec: te.ModelSpec

    def load(self) -> te.ModelSpec:
        """Return the model."""
        return self.spec


@dataclass(frozen=True)
class Rebuilt:
    """How to build the model: the worker calls the example's factory."""

    example: str
    params: tuple[tuple[str, Any], ...]

    def load(self) -> te.ModelSpec:
        """Return the model, built on the first call in this process."""
        return _build(self.example, self.params)


@functools.cache
def _build(example: str, params: tuple[tuple[str, Any], ...]) -> te.ModelSpec:
    factory = import_module(f"threadensemble.examples.{example}").build
    spec: te.ModelSpec = factory(**dict(params))
    return spec


_ATTACHED: list[SharedMemory] = []  # mapped blocks must outlive the arrays viewing them


@dataclass(frozen=True)
class Shared:
    """The model pickled with its large arrays replaced by references to shared memory."""

    data: bytes

    def load(self) -> te.ModelSpec:
        """Return the model, its large arrays mapped from shared memory (read-only)."""
        spec: te.ModelSpec = _SharedUnpickler(io.BytesIO(self.data)).load()
        return spec


class Inherited:
    """The model itself, for forked workers: they inherit it, nothing is pickled."""

    def __init__(self, spec: te.ModelSpec) -> None:
        self.spec = spec

    def __reduce__(self) -> Any:
        raise TypeError("an Inherited model reaches only forked workers (nothing is pickled)")

    def load(self) -> te.ModelSpec:
        """Return the model."""
        return self.spec


Payload = Pickled | Rebuilt | Shared | Inherited


class _SharingPickler(pickle.Pickler):
    """Pickles numpy arrays of ``min_bytes`` or more as references to shared-memory copies."""

    def __init__(self, file: io.BytesIO, min_bytes: int) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.min_bytes = min_bytes
        self.blocks: list[SharedMemory] = []
        self._ids: dict[int, tuple[str, str, tuple[int, ...], str]] = {}

    def persistent_id(self, obj: Any) -> tuple[str, str, tuple[int, ...], str] | None:
        if not isinstance(obj, np.ndarray) or obj.nbytes < self.min_bytes or obj.dtype.hasobject:
            return None
        if id(obj) not in self._ids:
            block = SharedMemory(create=True, size=obj.nbytes)
            np.ndarray(obj.shape, obj.dtype, buffer=block.buf)[...] = obj
            self.blocks.append(block)
            self._ids[id(obj)] = ("shm", block.name, obj.shape, obj.dtype.str)
        return self._ids[id(obj)]


class _SharedUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> np.ndarray:
        _, name, shape, dtype = pid
        # track=False (Python >= 3.13): the parent owns the block and unlinks it; a worker
        # that registered it too would have the resource tracker unlink it again at exit.
        block = SharedMemory(name=name, track=False)  # type: ignore[call-arg,unused-ignore]
        _ATTACHED.append(block)
        array = np.ndarray(shape, np.dtype(dtype), buffer=block.buf)
        array.flags.writeable = False
        return array


def share_arrays(spec: te.ModelSpec, min_bytes: int) -> tuple[Shared, list[SharedMemory]]:
    """Return ``spec`` as a `Shared` payload, and the blocks the caller must unlink after use."""
    buffer = io.BytesIO()
    pickler = _SharingPickler(buffer, min_bytes)
    pickler.dump(spec)
    return Shared(buffer.getvalue()), pickler.blocks


_WORKER: tuple[te.ModelSpec, Any] | None = None  # this process's model and state copy


def initialize(payload: Payload) -> None:
    """Pool initializer: load the model once for this worker process, copy its state."""
    global _WORKER
    spec = payload.load()
    _WORKER = (spec, copy.deepcopy(spec.state))


def realization_in_worker(seed: int, k: int) -> xr.Dataset:
    """Compute realization ``k`` with the model `initialize` loaded in this process."""
    assert _WORKER is not None, "the pool's initializer did not run"
    spec, state = _WORKER
    return realization(spec, state, seed, k)


def realization_from(payload: Payload, seed: int, k: int) -> xr.Dataset:
    """Compute realization ``k`` with the model of ``payload``, sent along with the task."""
    spec = payload.load()
    return realization(spec, copy.deepcopy(spec.state), seed, k)


def mpire_init(shared: tuple[te.ModelSpec, int], worker_state: dict[str, Any]) -> None:
    """mpire worker initializer: this worker's deep copy of the state, in its worker state."""
    worker_state["state"] = copy.deepcopy(shared[0].state)


def mpire_realization(
    shared: tuple[te.ModelSpec, int], worker_state: dict[str, Any], k: int
) -> xr.Dataset:
    """Compute realization ``k`` in an mpire worker (shared: the model and the seed)."""
    spec, seed = shared
    return realization(spec, worker_state["state"], seed, k)
