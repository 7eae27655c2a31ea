"""Many realizations written to NetCDF by many threads: every file complete and correct."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from conftest import size
from models import Scratch, small_walk
from threadensemble._netcdf import read_attrs

N_REALIZATIONS = size(150, 1000)


@pytest.mark.timeout(900)
def test_many_threads_write_many_files(tmp_path: Path, record: Callable[[str], None]) -> None:
    options = {
        "args": (0.1,), "state": Scratch(), "inject": "scratch", "seed": 7, "progress": False
    }  # fmt: skip
    start = time.perf_counter()
    te.simulate_ensemble(small_walk, N_REALIZATIONS, n_workers=64, output_dir=tmp_path, **options)
    elapsed = time.perf_counter() - start
    expected = te.simulate_ensemble(small_walk, N_REALIZATIONS, n_workers=1, **options)
    files = sorted(tmp_path.glob("real_*.nc"))
    assert len(files) == N_REALIZATIONS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for k, path in enumerate(files):
        assert read_attrs(path)["threadensemble_realization"] == k
        with te.netcdf_lock, xr.open_dataset(path, engine="netcdf4") as ds:
            np.testing.assert_array_equal(ds["path"].values, expected["path"].values[k])
    record(
        f"netcdf: {N_REALIZATIONS} files written by 64 threads in {elapsed:.2f} s; "
        f"{len(files)} files opened and compared value by value: all complete and correct"
    )
