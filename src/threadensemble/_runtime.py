"""Facts about the running interpreter: free-threaded build or not, GIL actually enabled or not.

A free-threaded build (``python3.13t``) can still run with the GIL: importing an extension module
that has not declared free-threading support (netCDF4, cftime) silently re-enables it unless the
interpreter was started with ``PYTHON_GIL=0`` or ``-X gil=0``.  Whether threads really run in
parallel is therefore a run-time fact, read here, not a build-time one.
"""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from importlib import metadata

__all__ = ["RuntimeInfo", "gil_enabled", "is_free_threaded_build", "runtime_info"]


def is_free_threaded_build() -> bool:
    """Return True when this interpreter was built with ``--disable-gil`` (e.g. 3.13t)."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """Return True when the GIL is enabled right now.

    Always True on a standard build.  On a free-threaded build it is False only while no import
    has re-enabled it; check it after all imports are done.
    """
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class RuntimeInfo:
    """What an ensemble ran on; recorded in every output file.

    Attributes
    ----------
    python : str
        Interpreter version, e.g. ``"3.13.5"``.
    implementation : str
        ``platform.python_implementation()``, e.g. ``"CPython"``.
    free_threaded : bool
        The interpreter is a free-threaded build.
    gil_enabled : bool
        The GIL was enabled when this was read.
    threadensemble : str
        Version of this library.
    numpy : str
        Version of numpy.
    cpu_count : int
        Logical CPUs this process may run on.
    """

    python: str
    implementation: str
    free_threaded: bool
    gil_enabled: bool
    threadensemble: str
    numpy: str
    cpu_count: int

    def describe(self) -> str:
        """Return a one-line summary, e.g. ``CPython 3.13.5 free-threaded, GIL off``."""
        build = "free-threaded" if self.free_threaded else "standard"
        gil = "on" if self.gil_enabled else "off"
        return f"{self.implementation} {self.python} {build}, GIL {gil}"


def available_cpus() -> int:
    """Return the number of logical CPUs this process may run on (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def runtime_info() -> RuntimeInfo:
    """Return the facts of the running interpreter as a `RuntimeInfo`."""
    return RuntimeInfo(
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        free_threaded=is_free_threaded_build(),
        gil_enabled=gil_enabled(),
        threadensemble=_package_version("threadensemble"),
        numpy=_package_version("numpy"),
        cpu_count=available_cpus(),
    )


_warned_gil = False


def warn_if_gil_reenabled() -> None:
    """Warn once per process when a free-threaded build is running with the GIL enabled."""
    global _warned_gil
    if _warned_gil or not is_free_threaded_build() or not gil_enabled():
        return
    _warned_gil = True
    warnings.warn(
        "free-threaded interpreter is running with the GIL enabled (an extension module such "
        "as netCDF4 or cftime re-enabled it on import), so realizations will not run in "
        "parallel; start Python with PYTHON_GIL=0 or -X gil=0",
        RuntimeWarning,
        stacklevel=3,
    )
