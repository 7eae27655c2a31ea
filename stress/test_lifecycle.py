"""Starting and stopping engines over and over leaves no threads and no open files behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import threadensemble as te
from conftest import size
from models import Scratch, small_walk

N_RUNS = size(30, 100)


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_repeated_runs_leave_nothing_behind(tmp_path: Path, record: Callable[[str], None]) -> None:
    te.simulate_ensemble(  # first run: imports and lazily created module state
        small_walk, 4, args=(0.1,), state=Scratch(), inject="scratch", progress=False,
        output_dir=tmp_path / "warm", n_workers=2,
    )  # fmt: skip
    threads, files = threading.active_count(), open_files()
    for run in range(N_RUNS):
        te.simulate_ensemble(
            small_walk, 20, args=(0.1,), state=Scratch(), inject="scratch", seed=run,
            n_workers=8, output_dir=tmp_path / f"run{run % 3}", overwrite=True, progress=False,
        )  # fmt: skip
    assert threading.active_count() == threads
    assert open_files() == files
    record(f"lifecycle: {N_RUNS} engines of 8 threads started and stopped: 0 threads, 0 files left")
