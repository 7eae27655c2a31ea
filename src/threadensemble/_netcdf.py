"""NetCDF I/O: the process-wide lock, atomic per-realization files, and `open_ensemble`.

netCDF-C and HDF5 are not thread-safe, not even for two different files, and netCDF4-python
releases the GIL inside them; xarray's own locks do not cover every call of ``to_netcdf``.  So
every netCDF call this library makes holds `netcdf_lock`, and ``simulate`` code that reads or
writes netCDF files itself must hold it too.  Simulation never needs it, so workers keep
computing while the calling thread writes.  The lock is per process: on a dask cluster each
worker process writes its realizations under its own (netCDF-C state is per process too).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from ._errors import write_error

__all__ = [
    "TEMP_NAME",
    "TEMP_SUFFIX",
    "commit_temporary",
    "netcdf_lock",
    "read_attrs",
    "read_realization",
    "realization_files",
    "realization_path",
    "write_atomic",
    "write_temporary",
]

netcdf_lock = threading.RLock()
"""Serializes every netCDF/HDF5 call of the process (netCDF-C is not thread-safe, even per file).

Hold it (``with threadensemble.netcdf_lock: ...``) around any netCDF reading or writing done
inside ``simulate``.  Reentrant, so library calls made while holding it do not deadlock.
"""

TEMP_SUFFIX = ".tmp"
_FILE_RE = re.compile(r"real_(\d+)\.nc")
TEMP_NAME = re.compile(r"\.real_\d+\.nc\.\d+\.\d+" + re.escape(TEMP_SUFFIX))
"""The names of `write_temporary`'s files: the only hidden files a run may remove as stale."""


def realization_path(output_dir: Path, index: int) -> Path:
    """Return the file of realization ``index``: ``real_00042.nc``, ``real_123456.nc``.

    The name depends on the index only, so it stays the same when the ensemble is extended.
    """
    return output_dir / f"real_{index:05d}.nc"


def realization_files(output_dir: Path, legacy_size: int | None = None) -> dict[int, Path]:
    """Return realization index -> file for every finished file under its canonical name.

    Realization ``k``'s file is ``realization_path(output_dir, k)`` only; in a directory of
    the old manifest format (``legacy_size``: its ``n_realizations``) the index was padded to
    the width of the largest one instead.  Any other ``real_<digits>.nc`` (a user's
    ``real_000001.nc`` copy next to ``real_00001.nc``, say) is nobody's realization: it is
    neither opened, nor resumed, nor removed.  Temporary files are never listed.
    """
    width = 5 if legacy_size is None else max(5, len(str(legacy_size - 1)))
    files = {}
    for path in output_dir.iterdir():
        match = _FILE_RE.fullmatch(path.name)
        if match and path.name == f"real_{int(match.group(1)):0{width}d}.nc":
            files[int(match.group(1))] = path
    return dict(sorted(files.items()))


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and not hasattr(os, "O_DIRECTORY"):
        return  # Windows: a directory cannot be opened to flush it (the rename is durable there)
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(ds: xr.Dataset, path: Path) -> None:
    """Write ``ds`` to ``path`` so that ``path`` is either absent or complete, never partial.

    The data go to a hidden temporary name in the same directory (`write_temporary`), and the
    file is then renamed into place (`commit_temporary`).  On any error or interruption the
    temporary file is removed and ``path`` is left as it was.
    """
    commit_temporary(write_temporary(ds, path), path)


def write_temporary(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` completely, flushed to disk, under a hidden temporary name next to ``path``.

    ``ds`` is what `threadensemble._encoding.netcdf_ready` returned (checked and converted for
    netCDF4 once, by the caller that first holds the realization).  Returns the temporary file,
    for `commit_temporary`.  The name (`TEMP_NAME`) ends in `TEMP_SUFFIX` and names this process
    and thread, so concurrent writers never share one.

    Raises
    ------
    OutputWriteError
        Writing failed (a full disk, say); the temporary file is removed.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        with netcdf_lock:
            ds.to_netcdf(tmp, engine="netcdf4")
        _fsync(tmp)
    except Exception as exc:
        error = write_error(path, exc, ds.nbytes)  # free space, with the partial file there
        tmp.unlink(missing_ok=True)
        raise error from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit_temporary(tmp: Path, path: Path) -> None:
    """Rename a complete temporary file to ``path`` atomically (``os.replace``), durably.

    The directory is flushed after the rename where the OS can open one (POSIX).
    """
    try:
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_realization(path: Path) -> xr.Dataset:
    """Load one realization file fully into memory and close it."""
    with netcdf_lock:
        return xr.load_dataset(path, engine="netcdf4")


def read_attrs(path: Path) -> Mapping[str, Any]:
    """Return the global attributes of a netCDF file, reading nothing else."""
    import netCDF4  # imported late: on a free-threaded build this import re-enables the GIL

    with netcdf_lock, netCDF4.Dataset(path) as nc:
        return {name: nc.getncattr(name) for name in nc.ncattrs()}
