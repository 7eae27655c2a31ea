import os
import sys

import pytest

import threadensemble as te


def test_runtime_info_describes_this_interpreter() -> None:
    info = te.runtime_info()
    assert info.python == ".".join(map(str, sys.version_info[:3]))
    assert info.threadensemble == te.__version__
    assert info.cpu_count >= 1
    assert ("free-threaded" in info.describe()) == info.free_threaded
    assert info.gil_enabled == te.gil_enabled()


def test_standard_build_always_has_the_gil() -> None:
    if te.is_free_threaded_build():
        pytest.skip("free-threaded interpreter")
    assert te.gil_enabled()


@pytest.mark.skipif(not te.is_free_threaded_build(), reason="needs a free-threaded interpreter")
def test_gil_stays_off_after_importing_netcdf4_when_asked() -> None:
    """The test runs on 3.13t set PYTHON_GIL=0; an import that re-enabled the GIL must show."""
    import netCDF4  # noqa: F401  (the import that would re-enable the GIL)

    if os.environ.get("PYTHON_GIL") != "0":
        pytest.skip("PYTHON_GIL=0 is not set")
    assert not te.gil_enabled()
    assert "GIL off" in te.runtime_info().describe()
