"""Shared test helpers: a small reference model, and thread bookkeeping."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import xarray as xr

import threadensemble as te


class Buffers:
    """Mutable model state that a realization overwrites completely (as a correct model does)."""

    def __init__(self, n: int) -> None:
        self.values = np.zeros(n)
        self.history: list[int] = []


def noisy_walk(scale: float, *, state: Buffers) -> xr.Dataset:
    """A random walk that works in its thread's buffers: correct only if they are not shared."""
    rng = te.get_rng()
    state.values[:] = 0.0
    for i in range(1, state.values.size):
        state.values[i] = state.values[i - 1] + scale * rng.standard_normal()
    state.history.append(te.current_realization() or 0)
    return xr.Dataset({"walk": ("step", state.values.copy())})


@pytest.fixture
def walk_kwargs() -> dict[str, object]:
    """simulate_ensemble arguments for `noisy_walk`."""
    return {"args": (0.5,), "state": Buffers(50), "inject": "state", "seed": 7, "progress": False}


def worker_threads() -> list[threading.Thread]:
    """Return the live threads the engine started."""
    return [t for t in threading.enumerate() if t.name.startswith("threadensemble")]


@pytest.fixture
def no_leftover_threads() -> Iterator[None]:
    """Check that a test leaves no engine thread running."""
    yield
    for thread in worker_threads():
        thread.join(timeout=5)
    assert worker_threads() == []
