"""Injected failures with retries: the final ensemble is complete and correct."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

import threadensemble as te
from conftest import size
from models import Scratch, small_walk

N_REALIZATIONS = size(300, 2000)
FAILURE_RATE = 0.10


class Faults:
    """Fails 10% of attempts at random (independently per attempt), and counts them."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()  # guards the counters and the shared random.Random
        self.injected = 0
        self.attempts = 0

    def maybe_fail(self) -> None:
        with self.lock:
            self.attempts += 1
            fail = self.random.random() < FAILURE_RATE
            self.injected += fail
        if fail:
            raise OSError("injected fault")


@pytest.mark.timeout(600)
def test_random_failures_are_retried_to_a_complete_correct_ensemble(
    tmp_path: Path, record: Callable[[str], None]
) -> None:
    faults = Faults(seed=99)

    def flaky(drift: float, *, scratch: Scratch) -> dict[str, Any]:
        faults.maybe_fail()
        return small_walk(drift, scratch=scratch)

    flaky.__qualname__ = "flaky"
    options = {
        "args": (0.1,),
        "state": Scratch(),
        "inject": "scratch",
        "seed": 5,
        "progress": False,
    }
    ens = te.simulate_ensemble(
        flaky, N_REALIZATIONS, n_workers=32, retries=6, output_dir=tmp_path, **options
    )
    clean = te.simulate_ensemble(small_walk, N_REALIZATIONS, n_workers=1, **options)
    xr.testing.assert_equal(ens, clean)
    assert faults.injected > N_REALIZATIONS * FAILURE_RATE / 2
    record(
        f"faults: {faults.injected} faults injected in {faults.attempts} attempts "
        f"({N_REALIZATIONS} realizations, 32 threads, retries=6): all survived, "
        "ensemble bitwise equal to a clean run"
    )


def test_failures_without_retries_lose_nothing(tmp_path: Path) -> None:
    def fails_on_multiples_of_7(drift: float, *, scratch: Scratch) -> dict[str, Any]:
        if (te.current_realization() or 0) % 7 == 0:
            raise ValueError("bad")
        return small_walk(drift, scratch=scratch)

    with pytest.raises(te.EnsembleError) as info:
        te.simulate_ensemble(
            fails_on_multiples_of_7, 100, args=(0.1,), state=Scratch(), inject="scratch",
            n_workers=16, output_dir=tmp_path, progress=False,
        )  # fmt: skip
    assert list(info.value.failures) == list(range(0, 100, 7))
    assert len(list(tmp_path.glob("real_*.nc"))) == 100 - len(range(0, 100, 7))
