"""What every suite needs: the child processes' environment, what an interpreter is, the machine.

- `THREAD_ENV`: BLAS and OpenMP pools limited to one thread, so that the workers measured are
  the only parallelism;
- `child_env`: the environment of a measured child process (`THREAD_ENV`, and
  ``PYTHON_GIL=0`` for a free-threaded interpreter);
- `is_free_threaded`: asks an interpreter whether it is a free-threaded build (before setting
  ``PYTHON_GIL``, which standard builds refuse);
- `loadavg`, `cpu_model`, `cores`: the machine, for the reports.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = [
    "ROOT",
    "THREAD_ENV",
    "child_env",
    "cores",
    "cpu_model",
    "is_free_threaded",
    "loadavg",
    "peak_rss_bytes",
]

ROOT = Path(__file__).resolve().parents[1]
"""The repository: child processes run there, so that ``-m benchmarks...`` imports."""

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def child_env(extra: dict[str, str], free_threaded: bool = False) -> dict[str, str]:
    """Return this process's environment with ``extra``, and ``PYTHON_GIL=0`` if asked."""
    env = {**os.environ, **extra}
    if free_threaded:
        env["PYTHON_GIL"] = "0"
    return env


def is_free_threaded(python: str) -> bool:
    """Return True when ``python`` is a free-threaded build (3.13t)."""
    probe = "import sysconfig; print(int(bool(sysconfig.get_config_var('Py_GIL_DISABLED'))))"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "1"


def loadavg() -> str:
    """Return the 1, 5 and 15 minute load averages, or ``n/a``."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_model() -> str:
    """Return the CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    """Return the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def peak_rss_bytes() -> int | None:
    """Return the peak resident set size of this process so far (None where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
