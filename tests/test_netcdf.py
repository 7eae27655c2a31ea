import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from threadensemble._netcdf import read_attrs, read_realization, realization_files, write_atomic


def sample(value: float, n: int = 1000) -> xr.Dataset:
    return xr.Dataset({"v": ("x", np.full(n, value))}, attrs={"tag": f"v{value}"})


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "real_00000.nc"
    write_atomic(sample(1.5), path)
    xr.testing.assert_identical(read_realization(path), sample(1.5))
    assert read_attrs(path) == {"tag": "v1.5"}


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "real_00000.nc"
    unwritable = xr.Dataset({"v": ("x", np.array([{"a": 1}], dtype=object))})
    with pytest.raises(Exception):  # noqa: B017, PT011 (netCDF4/xarray raise various types)
        write_atomic(unwritable, path)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_existing_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "real_00000.nc"
    write_atomic(sample(2.0), path)
    unwritable = xr.Dataset({"v": ("x", np.array([{"a": 1}], dtype=object))})
    with pytest.raises(Exception):  # noqa: B017, PT011
        write_atomic(unwritable, path)
    xr.testing.assert_identical(read_realization(path), sample(2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["real_00000.nc"]


def test_concurrent_writers_are_serialized_and_every_file_is_complete(tmp_path: Path) -> None:
    n = 16
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        barrier.wait()
        try:
            write_atomic(sample(float(k), n=20_000), tmp_path / f"real_{k:05d}.nc")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = realization_files(tmp_path)
    assert list(files) == list(range(n))
    for k, path in files.items():
        np.testing.assert_array_equal(read_realization(path)["v"].values, np.full(20_000, float(k)))


def test_lock_is_reentrant(tmp_path: Path) -> None:
    with te.netcdf_lock:
        write_atomic(sample(1.0), tmp_path / "real_00000.nc")
        assert read_realization(tmp_path / "real_00000.nc")["v"].size == 1000


def test_temporary_names_are_not_realization_files(tmp_path: Path) -> None:
    (tmp_path / ".real_00001.nc.1.2.tmp").write_bytes(b"")
    (tmp_path / "real_00002.nc").write_bytes(b"")
    (tmp_path / "real_x.nc").write_bytes(b"")
    assert list(realization_files(tmp_path)) == [2]
