"""Far more threads than cores: no deadlock, and bitwise the same results as one worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import xarray as xr

import threadensemble as te
from conftest import size
from models import Scratch, small_walk

N_REALIZATIONS = size(300, 2000)


@pytest.fixture(scope="module")
def reference() -> xr.Dataset:
    return te.simulate_ensemble(
        small_walk, N_REALIZATIONS, args=(0.1,), state=Scratch(), inject="scratch",
        n_workers=1, seed=2024, progress=False,
    )  # fmt: skip


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("n_workers", [64, 128, 256])
def test_many_threads_on_two_cores(
    reference: xr.Dataset, n_workers: int, record: Callable[[str], None]
) -> None:
    start = time.perf_counter()
    ens = te.simulate_ensemble(
        small_walk, N_REALIZATIONS, args=(0.1,), state=Scratch(), inject="scratch",
        n_workers=n_workers, seed=2024, progress=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    xr.testing.assert_identical(reference, ens)
    record(
        f"oversubscription: {n_workers} threads on {te.runtime_info().cpu_count} CPUs, "
        f"{N_REALIZATIONS} realizations in {elapsed:.2f} s, bitwise equal to 1 worker"
    )
